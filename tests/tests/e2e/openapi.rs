//! openapi.yaml documents exactly the routes the server has: every (method, path) under
//! /api/v1 in the spec is in `API_V1_ROUTES` and the other way round, and the health
//! endpoints are there too. No server needed. (scripts/schemathesis.sh checks the server's
//! answers against the spec.)
//!
//! The spec is read with a small line-based reader rather than a YAML parser (the test
//! crate has none): under the top-level `paths:` key, a path is a key indented by exactly
//! two spaces and an operation is an HTTP method key indented by exactly four. Comments,
//! blank lines, quoted keys and path-level keys such as `parameters:` are handled.

use std::collections::BTreeSet;
use std::path::Path;

use larder_api::routes::API_V1_ROUTES;

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

type Operation = (String, String);

/// The (method, path) pairs under `paths:` of an OpenAPI document in block-style YAML.
fn documented_operations(yaml: &str) -> Vec<Operation> {
    let mut operations = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for (number, raw) in yaml.lines().enumerate() {
        let line = strip_comment(raw).trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        assert!(!line[..indent + 1].contains('\t'), "openapi.yaml:{}: tab in indentation", number + 1);
        if indent == 0 {
            in_paths = key_of(line).as_deref() == Some("paths");
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        match indent {
            2 => {
                let key = key_of(line).unwrap_or_else(|| panic!("openapi.yaml:{}: expected a path key: {raw}", number + 1));
                assert!(key.starts_with('/'), "openapi.yaml:{}: path keys start with '/': {raw}", number + 1);
                path = Some(key);
            }
            4 => {
                if let Some(key) = key_of(line).filter(|k| METHODS.contains(&k.as_str())) {
                    let path = path.clone().unwrap_or_else(|| panic!("openapi.yaml:{}: operation outside a path", number + 1));
                    operations.push((key, path));
                }
            }
            _ => {}
        }
    }
    operations
}

/// The line without a trailing `# comment` (a '#' starting the line or after a space,
/// outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous == ' ' => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The key of a `key:` or `key: value` line, unquoted; None for list items and the like.
fn key_of(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('-') {
        return None;
    }
    let (key, rest) = if let Some(quote @ ('\'' | '"')) = line.chars().next() {
        let end = line[1..].find(quote)? + 1;
        (&line[1..end], &line[end + 1..])
    } else {
        let colon = line.find(": ").or_else(|| line.strip_suffix(':').map(|l| l.len()))?;
        (&line[..colon], &line[colon..])
    };
    (rest == ":" || rest.starts_with(": ")).then(|| key.to_owned())
}

fn spec_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn describe(operations: &BTreeSet<Operation>) -> String {
    operations.iter().map(|(method, path)| format!("\n    {} {path}", method.to_uppercase())).collect()
}

#[test]
fn openapi_yaml_documents_every_api_route_and_no_other() {
    let documented = documented_operations(&spec_text());
    let mut seen = BTreeSet::new();
    for operation in &documented {
        assert!(seen.insert(operation.clone()), "openapi.yaml documents {} {} twice", operation.0.to_uppercase(), operation.1);
    }

    let in_spec: BTreeSet<Operation> = documented.iter().filter(|(_, path)| path.starts_with("/api/v1/")).cloned().collect();
    let in_server: BTreeSet<Operation> = API_V1_ROUTES.iter().map(|(method, path)| (method.to_string(), path.to_string())).collect();
    assert!(!in_server.is_empty(), "API_V1_ROUTES is empty");

    let undocumented: BTreeSet<Operation> = in_server.difference(&in_spec).cloned().collect();
    let unserved: BTreeSet<Operation> = in_spec.difference(&in_server).cloned().collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "openapi.yaml and the server's /api/v1 routes (larder_api::routes::API_V1_ROUTES) differ.\n  \
         Served but not documented in openapi.yaml:{}\n  \
         Documented in openapi.yaml but not served:{}",
        if undocumented.is_empty() { " none".to_owned() } else { describe(&undocumented) },
        if unserved.is_empty() { " none".to_owned() } else { describe(&unserved) },
    );

    for health in ["/healthz", "/readyz"] {
        assert!(seen.contains(&("get".to_owned(), health.to_owned())), "openapi.yaml does not document GET {health}");
    }
}

#[test]
fn openapi_reader_finds_paths_and_methods_only() {
    let yaml = r#"openapi: 3.1.0
info:
  title: x   # a comment
  description: |
    paths:
      /not/a/path:
        get: {}
paths:
  # ---- a comment -----
  /api/v1/a/{id}:

    parameters:
      - name: id
    get:   # trailing comment
      description: 'get: not a method'
    delete:
      responses: {}
  '/api/v1/quoted':
    post:
      summary: "x # not a comment"
  /healthz:
    get: {}
components:
  schemas:
    get:
      type: object
"#;
    let found: Vec<(String, String)> = documented_operations(yaml);
    let expected: Vec<(String, String)> =
        [("get", "/api/v1/a/{id}"), ("delete", "/api/v1/a/{id}"), ("post", "/api/v1/quoted"), ("get", "/healthz")]
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
    assert_eq!(found, expected);
}
