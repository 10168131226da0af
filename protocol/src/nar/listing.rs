//! The `.ls` listing, written while parsing, byte-identical to nix 2.8's
//! `write-nar-listing` output (`listNar` in nar-accessor.cc): no whitespace,
//! keys in nix's order, entries in NAR (sorted) order, nix's own string
//! escaping.

/// Builds `{"version":1,"root":<node>}` incrementally, up to `limit` bytes: past
/// that the listing is dropped (names of control bytes escape to six bytes each, so a
/// small NAR can describe a huge listing) and [`Listing::finish`] gives `None`.
pub(crate) struct Listing {
    out: Option<Vec<u8>>,
    limit: usize,
}

impl Listing {
    pub(crate) fn new(limit: usize) -> Self {
        Self { out: Some(br#"{"version":1,"root":"#.to_vec()), limit }
    }

    /// `narOffset` is the position of the first content byte. Nix leaves it
    /// out when it is 0, which cannot happen in a well-formed NAR.
    pub(crate) fn regular(&mut self, size: u64, executable: bool, nar_offset: u64) {
        self.raw(r#"{"type":"regular","size":"#);
        self.raw(&size.to_string());
        if executable {
            self.raw(r#","executable":true"#);
        }
        if nar_offset != 0 {
            self.raw(r#","narOffset":"#);
            self.raw(&nar_offset.to_string());
        }
        self.raw("}");
    }

    pub(crate) fn symlink(&mut self, target: &[u8]) {
        self.raw(r#"{"type":"symlink","target":"#);
        self.string(target);
        self.raw("}");
    }

    pub(crate) fn open_directory(&mut self) {
        self.raw(r#"{"type":"directory","entries":{"#);
    }

    /// Starts an entry; its node follows.
    pub(crate) fn entry(&mut self, name: &[u8], first: bool) {
        if !first {
            self.raw(",");
        }
        self.string(name);
        self.raw(":");
    }

    pub(crate) fn close_directory(&mut self) {
        self.raw("}}");
    }

    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        self.raw("}");
        self.out
    }

    fn raw(&mut self, s: &str) {
        if let Some(out) = &mut self.out {
            out.extend_from_slice(s.as_bytes());
        }
        self.enforce_limit();
    }

    /// Each write adds at most one escaped name or target (about 25 KB), so memory stays
    /// within `limit` plus that.
    fn enforce_limit(&mut self) {
        if self.out.as_ref().is_some_and(|out| out.len() > self.limit) {
            self.out = None;
        }
    }

    /// Nix's JSON escaping: `"` and `\` backslashed, `\n \r \t` by name,
    /// other bytes below 0x20 as `\u00xx`, and everything else (DEL, UTF-8,
    /// even invalid UTF-8) copied through unchanged.
    fn string(&mut self, s: &[u8]) {
        let Some(out) = &mut self.out else { return };
        out.push(b'"');
        for &b in s {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => out.push(b),
            }
        }
        out.push(b'"');
        self.enforce_limit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_nix() {
        let mut l = Listing::new(usize::MAX);
        l.symlink(b"a\"b\\c\nd\re\tf\x01\x1f\x7f\xc3\xa9\xff/");
        assert_eq!(
            l.finish().unwrap(),
            b"{\"version\":1,\"root\":{\"type\":\"symlink\",\"target\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001\\u001f\x7f\xc3\xa9\xff/\"}}"
        );
    }

    #[test]
    fn nested_shape() {
        let mut l = Listing::new(usize::MAX);
        l.open_directory();
        l.entry(b"a", true);
        l.regular(3, true, 200);
        l.entry(b"b", false);
        l.open_directory();
        l.close_directory();
        l.close_directory();
        assert_eq!(
            String::from_utf8(l.finish().unwrap()).unwrap(),
            r#"{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":3,"executable":true,"narOffset":200},"b":{"type":"directory","entries":{}}}}}"#
        );
    }

    #[test]
    fn dropped_past_its_limit() {
        let prefix = br#"{"version":1,"root":"#.len();
        let exactly = prefix + br#"{"type":"symlink","target":"\u0001"}}"#.len();
        let mut fits = Listing::new(exactly);
        fits.symlink(b"\x01");
        assert_eq!(fits.finish().map(|l| l.len()), Some(exactly));
        let mut over = Listing::new(exactly - 1);
        over.symlink(b"\x01");
        assert_eq!(over.finish(), None);
    }
}
