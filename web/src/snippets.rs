//! The ready-to-paste configuration a cache page offers, each correct for one cache on one
//! server. Rendered here, as text, so that each is tested once and the templates only show
//! them.

/// What the snippets depend on.
pub struct SnippetInput<'a> {
    /// The server's URL, e.g. `https://larder.example.com` (for the `larder` CLI).
    pub server: &'a str,
    pub cache: &'a str,
    /// The substituter URL, e.g. `https://larder.example.com/mycache`.
    pub substituter: &'a str,
    /// The host name nix matches netrc entries against (the port is ignored by nix).
    pub netrc_host: &'a str,
    /// Active public keys in Nix's `name:base64` form.
    pub public_keys: &'a [String],
    pub public: bool,
    /// Client-held keys: pushes must be signed by the pusher.
    pub client_signing: bool,
}

/// The placeholder shown where a token goes, until one is created.
pub const TOKEN_PLACEHOLDER: &str = "YOUR_TOKEN";

pub struct SetupSnippets {
    pub nix_conf: String,
    pub nixos: String,
    pub flake: String,
    /// Only for private caches: public ones need no credentials to substitute.
    pub netrc: Option<String>,
    pub push: String,
    /// The same with the `larder` CLI.
    pub larder_push: String,
    pub offline: String,
}

impl SetupSnippets {
    pub fn new(input: &SnippetInput<'_>) -> Self {
        let keys = input.public_keys.join(" ");
        let quoted_keys = input.public_keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(" ");
        let url = input.substituter;
        let nix_conf = format!("extra-substituters = {url}\nextra-trusted-public-keys = {keys}\n");
        let netrc_setting = if input.public {
            String::new()
        } else {
            "    # The daemon reads the token from this file (see the netrc line).\n    netrc-file = \"/etc/nix/netrc\";\n".to_owned()
        };
        let nixos = format!(
            "{{\n  nix.settings = {{\n    extra-substituters = [ \"{url}\" ];\n    extra-trusted-public-keys = [ {quoted_keys} ];\n{netrc_setting}  }};\n}}\n"
        );
        let flake = format!(
            "{{\n  # Used as is by trusted users (trusted-users in nix.conf); others are asked,\n  # or need accept-flake-config = true.\n  nixConfig = {{\n    extra-substituters = [ \"{url}\" ];\n    extra-trusted-public-keys = [ {quoted_keys} ];\n  }};\n}}\n"
        );
        let netrc = (!input.public).then(|| netrc_line(input.netrc_host, TOKEN_PLACEHOLDER));
        let signing = if input.client_signing { " --signing-key /path/to/your-key.sec" } else { "" };
        let larder_push = format!("larder login --server {}\nlarder push {}{signing} ./result\n", input.server, input.cache);
        Self { nix_conf, nixos, flake, netrc, push: push_command(url, input.client_signing), larder_push, offline: OFFLINE.to_owned() }
    }
}

/// The netrc line that sends `token` to the cache (nix sends it as the Basic-auth
/// password; the login is not checked).
pub fn netrc_line(host: &str, token: &str) -> String {
    format!("machine {host} login larder password {token}\n")
}

/// How to push with the stock client (the write token in netrc). A client-held cache
/// needs each path signed by the pusher: nix signs on upload with `secret-key`.
pub fn push_command(substituter: &str, client_signing: bool) -> String {
    if client_signing {
        format!("nix copy --to '{substituter}?secret-key=/path/to/your-key.sec' ./result\n")
    } else {
        format!("nix copy --to '{substituter}' ./result\n")
    }
}

const OFFLINE: &str = "connect-timeout = 5\nfallback = true\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn input(public: bool) -> SnippetInput<'static> {
        static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let keys = KEYS.get_or_init(|| vec!["team-1:AAAA".to_owned(), "team-2:BBBB".to_owned()]);
        SnippetInput {
            server: "https://larder.example.com",
            cache: "team",
            substituter: "https://larder.example.com/team",
            netrc_host: "larder.example.com",
            public_keys: keys,
            public,
            client_signing: false,
        }
    }

    #[test]
    fn nix_conf_adds_the_cache_and_every_active_key() {
        let snippets = SetupSnippets::new(&input(true));
        assert_eq!(
            snippets.nix_conf,
            "extra-substituters = https://larder.example.com/team\nextra-trusted-public-keys = team-1:AAAA team-2:BBBB\n"
        );
        assert!(snippets.nixos.contains("extra-trusted-public-keys = [ \"team-1:AAAA\" \"team-2:BBBB\" ];"));
        assert!(snippets.flake.contains("nixConfig = {"));
        assert!(snippets.netrc.is_none(), "a public cache needs no credentials");
        assert!(!snippets.nixos.contains("netrc-file"));
    }

    #[test]
    fn private_caches_get_a_netrc_line_for_the_host() {
        let snippets = SetupSnippets::new(&input(false));
        assert_eq!(snippets.netrc.as_deref(), Some("machine larder.example.com login larder password YOUR_TOKEN\n"));
        assert!(snippets.nixos.contains("netrc-file = \"/etc/nix/netrc\";"));
    }

    #[test]
    fn the_cli_logs_in_to_the_server_and_pushes_to_the_cache() {
        let snippets = SetupSnippets::new(&input(false));
        assert_eq!(snippets.larder_push, "larder login --server https://larder.example.com\nlarder push team ./result\n");
        let signed = SetupSnippets::new(&SnippetInput { client_signing: true, ..input(false) });
        assert!(signed.larder_push.contains("larder push team --signing-key "));
    }

    #[test]
    fn client_held_caches_push_signed() {
        assert_eq!(push_command("http://h/c", false), "nix copy --to 'http://h/c' ./result\n");
        assert!(push_command("http://h/c", true).contains("?secret-key="));
    }
}
