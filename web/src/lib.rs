//! The dashboard's views: one askama template and one page struct per page, the setup
//! snippets a cache page offers, and the static assets (embedded in the binary).
//!
//! Page structs hold what is shown, already in words and numbers: the server's dashboard
//! routes build them from domain values. Nothing here knows a database, a service or a
//! request. Askama escapes every value for HTML; nothing is marked safe.

mod format;
mod pages;
mod snippets;

pub use askama::Template;
pub use format::{bytes, timestamp};
pub use pages::*;
pub use snippets::{netrc_line, push_command, SetupSnippets, SnippetInput};

/// A static file the dashboard links to, embedded at compile time.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The asset at `/static/{name}`, if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    match name {
        "larder.css" => Some(Asset { content_type: "text/css; charset=utf-8", body: include_str!("../static/larder.css") }),
        "copy.js" => Some(Asset { content_type: "text/javascript; charset=utf-8", body: include_str!("../static/copy.js") }),
        _ => None,
    }
}
