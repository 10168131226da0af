//! Realisations of content-addressed derivation outputs: the `realisations/<id>.doi` files
//! (JSON) that say which store path a derivation output was built as, for nix's
//! experimental `ca-derivations` (2.4 to 2.34; 2.35 renamed them `build-trace-v2/`).
//!
//! ```json
//! {"dependentRealisations":{"sha256:<hex>!out":"<hash>-dep"},"id":"sha256:<hex>!out",
//!  "outPath":"<hash>-name","signatures":["key-1:<base64>"]}
//! ```
//!
//! Store paths are base names (no `/nix/store/`). A signature covers the
//! [`Realisation::fingerprint`]: the same JSON without `signatures`, keys sorted, no
//! whitespace, which is what nix's JSON library writes and re-computes when it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::excerpt;
use crate::hash::Sha256Hash;
use crate::signing::{PublicKey, SecretKey, Signature};
use crate::store_path::{StorePath, MAX_NAME_LEN};

/// The largest realisation accepted, in bytes: one is about 200 bytes plus about 130 per
/// dependency, and a derivation has at most a few hundred inputs.
pub const MAX_REALISATION_SIZE: usize = 1 << 20;

/// The most dependent realisations one may list.
pub const MAX_DEPENDENCIES: usize = 5_000;

/// The most signatures one may carry (nix adds one per signing key).
pub const MAX_SIGNATURES: usize = 64;

/// Which output of which derivation: `sha256:<hex of the derivation's hash>!<output>`, the
/// realisation's `id` and (with `.doi`) its file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DrvOutputId {
    drv_hash: Sha256Hash,
    output: String,
}

/// Why a realisation or its id was refused. Messages are short enough for a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealisationError {
    #[error("invalid derivation output id '{input}': {reason}")]
    Id { input: String, reason: String },
    #[error("not JSON: {0}")]
    Json(String),
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("realisation is {0} bytes: at most {MAX_REALISATION_SIZE} are accepted")]
    TooLarge(usize),
    #[error("more than {MAX_DEPENDENCIES} dependent realisations")]
    TooManyDependencies,
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
}

impl DrvOutputId {
    /// Parses `<hash>!<output>`. The hash may be in any form nix reads (`sha256:` with
    /// hex, nix32 or base64, or SRI); it is always written back as hex, as nix does.
    pub fn parse(s: &str) -> Result<Self, RealisationError> {
        let err = |reason: String| RealisationError::Id { input: excerpt(s), reason };
        let (hash, output) = s.split_once('!').ok_or_else(|| err("expected '<hash>!<output>'".into()))?;
        let drv_hash = Sha256Hash::parse_typed(hash).map_err(|e| err(e.to_string()))?;
        check_output_name(output).map_err(err)?;
        Ok(Self { drv_hash, output: output.to_owned() })
    }

    pub fn drv_hash(&self) -> &Sha256Hash {
        &self.drv_hash
    }

    pub fn output_name(&self) -> &str {
        &self.output
    }
}

/// `sha256:<hex>!<output>`, the one form nix writes (in ids, file names and fingerprints).
impl fmt::Display for DrvOutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}!{}", self.drv_hash.to_hex(), self.output)
    }
}

impl fmt::Debug for DrvOutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DrvOutputId({self})")
    }
}

/// Output names follow the store path name rules (they become part of output paths' names).
fn check_output_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("output name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("output name is {} characters long, more than {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '='))) {
        return Err(format!("output name contains illegal character '{}'", c.escape_default()));
    }
    Ok(())
}

/// One realisation: derivation output `id` was built as `out_path`, from inputs that were
/// themselves realised as `dependencies` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Realisation {
    pub id: DrvOutputId,
    pub out_path: StorePath,
    /// In nix's order (sorted, as the JSON object's keys are).
    pub dependencies: BTreeMap<DrvOutputId, StorePath>,
    pub signatures: Vec<Signature>,
}

impl Realisation {
    /// Parses a realisation as nix writes it; unknown fields are ignored, as nix does.
    /// `signatures` and `dependentRealisations` may be absent (nix reads them as empty).
    pub fn parse(text: &str) -> Result<Self, RealisationError> {
        if text.len() > MAX_REALISATION_SIZE {
            return Err(RealisationError::TooLarge(text.len()));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| RealisationError::Json(e.to_string()))?;
        let serde_json::Value::Object(object) = value else {
            return Err(RealisationError::Json("a realisation is a JSON object".into()));
        };
        let field = |field: &'static str, reason: String| RealisationError::Field { field, reason };
        let string = |name: &'static str| -> Result<&str, RealisationError> {
            match object.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s),
                Some(_) => Err(field(name, "must be a string".into())),
                None => Err(RealisationError::Missing(name)),
            }
        };
        let id = DrvOutputId::parse(string("id")?)?;
        let out_path = StorePath::from_base_name(string("outPath")?).map_err(|e| field("outPath", e.to_string()))?;
        let mut signatures = Vec::new();
        match object.get("signatures") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                if items.len() > MAX_SIGNATURES {
                    return Err(RealisationError::TooManySignatures);
                }
                for item in items {
                    let serde_json::Value::String(s) = item else {
                        return Err(field("signatures", "must be an array of strings".into()));
                    };
                    let signature = Signature::parse(s).map_err(|e| field("signatures", e.to_string()))?;
                    if !signatures.contains(&signature) {
                        signatures.push(signature);
                    }
                }
            }
            Some(_) => return Err(field("signatures", "must be an array of strings".into())),
        }
        let mut dependencies = BTreeMap::new();
        match object.get("dependentRealisations") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(entries)) => {
                if entries.len() > MAX_DEPENDENCIES {
                    return Err(RealisationError::TooManyDependencies);
                }
                for (dep_id, dep_path) in entries {
                    let dep_id = DrvOutputId::parse(dep_id)?;
                    let serde_json::Value::String(dep_path) = dep_path else {
                        return Err(field("dependentRealisations", "values must be store path base names".into()));
                    };
                    let dep_path = StorePath::from_base_name(dep_path).map_err(|e| field("dependentRealisations", e.to_string()))?;
                    dependencies.insert(dep_id, dep_path);
                }
            }
            Some(_) => return Err(field("dependentRealisations", "must be an object".into())),
        }
        Ok(Self { id, out_path, dependencies, signatures })
    }

    /// What a signature covers: the JSON without `signatures`, keys sorted, no whitespace.
    pub fn fingerprint(&self) -> String {
        self.json(false)
    }

    /// The `.doi` file, signatures sorted (nix keeps them in a sorted set).
    pub fn render(&self) -> String {
        self.json(true)
    }

    fn json(&self, with_signatures: bool) -> String {
        // Every key and value is built from validated ids, store paths and signatures:
        // `quote` only has to add the quotes nix's writer would (it escapes nothing else
        // that may occur in them).
        let dependencies: BTreeMap<String, String> =
            self.dependencies.iter().map(|(id, path)| (id.to_string(), path.base_name())).collect();
        let dependencies: Vec<String> = dependencies.iter().map(|(id, path)| format!("{}:{}", quote(id), quote(path))).collect();
        let mut json = format!(
            "{{\"dependentRealisations\":{{{}}},\"id\":{},\"outPath\":{}",
            dependencies.join(","),
            quote(&self.id.to_string()),
            quote(&self.out_path.base_name())
        );
        if with_signatures {
            let signatures: BTreeSet<String> = self.signatures.iter().map(Signature::to_nix_string).collect();
            let signatures: Vec<String> = signatures.iter().map(|s| quote(s)).collect();
            json.push_str(&format!(",\"signatures\":[{}]", signatures.join(",")));
        }
        json.push('}');
        json
    }

    /// Adds a signature by `key`, replacing an earlier one under the same key name.
    pub fn sign(&mut self, key: &SecretKey) {
        let signature = key.sign(self.fingerprint().as_bytes());
        self.signatures.retain(|old| old.key_name() != key.name());
        self.signatures.push(signature);
    }

    /// The signatures that verify under one of `keys`.
    pub fn signatures_verified_by(&self, keys: &[PublicKey]) -> Vec<Signature> {
        let fingerprint = self.fingerprint();
        self.signatures.iter().filter(|sig| keys.iter().any(|key| key.verify(fingerprint.as_bytes(), sig))).cloned().collect()
    }

    /// Keeps only the signatures by keys named in `key_names`.
    pub fn retain_signatures_by(&mut self, key_names: &[&str]) {
        self.signatures.retain(|sig| key_names.contains(&sig.key_name()));
    }
}

/// A JSON string literal, escaped as JSON requires.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by nix 2.26.3 (`nix realisation info --json`) for a CA derivation with one
    /// CA input.
    const FROM_NIX: &str = r#"{"dependentRealisations":{"sha256:37524af3d656f56fcd17d904034623d189a5acfbc62d2ab1c7c938d8d529be81!out":"y761mkjyjv51mbgakpldx5wgw08ddal7-cadep-t1"},"id":"sha256:7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d!out","outPath":"3rh9zb9a9w4lzw7bhql37lcmcd6cf958-catop-t1","signatures":[]}"#;

    #[test]
    fn parses_and_renders_what_nix_writes() {
        let realisation = Realisation::parse(FROM_NIX).unwrap();
        assert_eq!(realisation.id.to_string(), "sha256:7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d!out");
        assert_eq!(realisation.id.output_name(), "out");
        assert_eq!(realisation.out_path.base_name(), "3rh9zb9a9w4lzw7bhql37lcmcd6cf958-catop-t1");
        assert_eq!(realisation.dependencies.len(), 1);
        assert!(realisation.signatures.is_empty());
        assert_eq!(realisation.render(), FROM_NIX);
        assert_eq!(realisation.fingerprint(), FROM_NIX.replace(r#","signatures":[]"#, ""));
    }

    /// Built by nix 2.26.3 with `secret-key-files` holding the secret key of `fixture-1`.
    const SIGNED_BY_NIX: &str = r#"{"dependentRealisations":{"sha256:cc0cbe931d942012427e85315cbaf448058ce19fa1902e6b5f2f628e18135faf!out":"mncw0kxfz9nd722xdy5qyfr2f4mf47nv-cadep-signed"},"id":"sha256:a5be0d7e893e9ae2135d14fb6263ef3b90cd30bc18004e1d05e3308d53fd6659!out","outPath":"jhld56s46cwgy5zhlrwsx1rfhyygxncf-catop-signed","signatures":["fixture-1:A2OJ59EBGT2mvp//ZK4pCCGGJjDDoDYURIIKTNZ6RN9/2kWTp6hn2bDS+PIT8t2b0VB1ONyZHmF062Fs/8w9Bw=="]}"#;
    const FIXTURE_KEY: &str = "fixture-1:3Bm+EnIhHKhs3R56n1XQldyUar6t/X3C7MgsKot9kCQ=";

    #[test]
    fn verifies_a_signature_nix_made() {
        let realisation = Realisation::parse(SIGNED_BY_NIX).unwrap();
        let key = PublicKey::parse(FIXTURE_KEY).unwrap();
        assert_eq!(realisation.signatures_verified_by(&[key]).len(), 1);
        assert_eq!(realisation.render(), SIGNED_BY_NIX);
    }

    #[test]
    fn the_id_is_written_back_in_hex() {
        let hex = "7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d";
        let hash = Sha256Hash::parse_typed(&format!("sha256:{hex}")).unwrap();
        for form in [format!("sha256:{}", hash.to_nix32()), hash.to_sri(), format!("sha256:{hex}")] {
            let id = DrvOutputId::parse(&format!("{form}!dev")).unwrap();
            assert_eq!(id.to_string(), format!("sha256:{hex}!dev"));
        }
    }

    #[test]
    fn refuses_bad_ids() {
        let hex = "7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d";
        for bad in [
            format!("sha256:{hex}"),
            format!("sha256:{hex}!"),
            format!("sha256:{hex}!o/ut"),
            format!("sha256:{hex}!a!b"),
            format!("md5:{hex}!out"),
            format!("{hex}!out"),
            format!("sha256:{}!out", &hex[..60]),
        ] {
            assert!(DrvOutputId::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let text = r#"{"id":"sha256:7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d!out","outPath":"3rh9zb9a9w4lzw7bhql37lcmcd6cf958-catop-t1","extra":1}"#;
        let realisation = Realisation::parse(text).unwrap();
        assert!(realisation.dependencies.is_empty() && realisation.signatures.is_empty());
        assert!(realisation.render().starts_with(r#"{"dependentRealisations":{},"id":"#));
    }

    #[test]
    fn refuses_malformed_realisations() {
        let id = "sha256:7d7982844a082193f8ba55cb4558b548a2887eb991562098dc01159f4821321d!out";
        let path = "3rh9zb9a9w4lzw7bhql37lcmcd6cf958-catop-t1";
        for bad in [
            "".to_owned(),
            "[]".to_owned(),
            "{".to_owned(),
            format!(r#"{{"outPath":"{path}"}}"#),
            format!(r#"{{"id":"{id}"}}"#),
            format!(r#"{{"id":"{id}","outPath":"/nix/store/{path}"}}"#),
            format!(r#"{{"id":"{id}","outPath":7}}"#),
            format!(r#"{{"id":"{id}","outPath":"{path}","signatures":"k:abc"}}"#),
            format!(r#"{{"id":"{id}","outPath":"{path}","signatures":["not a signature"]}}"#),
            format!(r#"{{"id":"{id}","outPath":"{path}","dependentRealisations":[]}}"#),
            format!(r#"{{"id":"{id}","outPath":"{path}","dependentRealisations":{{"x":"{path}"}}}}"#),
            format!(r#"{{"id":"{id}","outPath":"{path}","dependentRealisations":{{"{id}":"bad"}}}}"#),
        ] {
            assert!(Realisation::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(Realisation::parse(&" ".repeat(MAX_REALISATION_SIZE + 1)), Err(RealisationError::TooLarge(MAX_REALISATION_SIZE + 1)));
    }

    #[test]
    fn signs_and_verifies_the_fingerprint() {
        let key = SecretKey::generate("cache-1").unwrap();
        let other = SecretKey::generate("cache-2").unwrap();
        let mut realisation = Realisation::parse(FROM_NIX).unwrap();
        realisation.sign(&key);
        realisation.sign(&key);
        assert_eq!(realisation.signatures.len(), 1);
        let signature = &realisation.signatures[0];
        assert!(key.public_key().verify(realisation.fingerprint().as_bytes(), signature));
        assert_eq!(realisation.signatures_verified_by(&[key.public_key()]).len(), 1);
        assert!(realisation.signatures_verified_by(&[other.public_key()]).is_empty());
        // A signature survives the round trip through the rendered file.
        let again = Realisation::parse(&realisation.render()).unwrap();
        assert_eq!(again.signatures_verified_by(&[key.public_key()]).len(), 1);
        // Another output path: the signature no longer holds.
        let moved = Realisation { out_path: StorePath::from_base_name("y761mkjyjv51mbgakpldx5wgw08ddal7-cadep-t1").unwrap(), ..again };
        assert!(moved.signatures_verified_by(&[key.public_key()]).is_empty());
    }
}
