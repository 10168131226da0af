//! Parser tests on NARs built by a tiny writer below. Real nix output is
//! covered by the fixture tests in `tests/fixtures.rs`.

use super::*;
use crate::hash::Sha256Hash;

use super::writer::{write_string as put, Node};

fn file(data: &[u8]) -> Node {
    Node::file(data)
}

fn dir(entries: Vec<(&[u8], Node)>) -> Node {
    Node::directory(entries)
}

fn nar(node: &Node) -> Vec<u8> {
    node.to_nar()
}

/// A NAR from raw tokens, for structures the writer cannot express.
fn tokens(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        put(&mut out, p);
    }
    out
}

fn parse(bytes: &[u8]) -> Result<NarSummary, NarError> {
    let mut p = NarParser::new();
    p.feed(bytes)?;
    p.finish()
}

fn parse_bytewise(bytes: &[u8]) -> Result<NarSummary, NarError> {
    let mut p = NarParser::new();
    for b in bytes {
        p.feed(std::slice::from_ref(b))?;
    }
    p.finish()
}

fn listing(bytes: &[u8]) -> String {
    String::from_utf8(parse(bytes).unwrap().listing.unwrap()).unwrap()
}

fn sample() -> Node {
    dir(vec![
        (b"bin", dir(vec![(b"hello", Node::File { executable: true, data: b"#!/bin/sh\necho hello\n".to_vec() })])),
        (b"empty", file(b"")),
        (b"link", Node::Symlink(b"bin/hello".to_vec())),
        (b"one", file(b"x")),
        (b"sub", dir(vec![])),
    ])
}

#[test]
fn hello_world_matches_the_doc() {
    let bytes = nar(&file(b"hello world\n"));
    assert_eq!(bytes.len(), 128);
    let s = parse(&bytes).unwrap();
    assert_eq!(s.nar_size, 128);
    assert_eq!(s.nar_hash.to_typed_nix32(), "sha256:00zns3gj9hwz2a4b0i07y7nmxybq59lh24bl3xsxblcl6333mjil");
    assert_eq!(String::from_utf8(s.listing.unwrap()).unwrap(), r#"{"version":1,"root":{"type":"regular","size":12,"narOffset":96}}"#);
}

#[test]
fn listing_of_a_tree() {
    let bytes = nar(&sample());
    let text = listing(&bytes);
    assert_eq!(
        text,
        r#"{"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{"hello":{"type":"regular","size":21,"executable":true,"narOffset":400}}},"empty":{"type":"regular","size":0,"narOffset":640},"link":{"type":"symlink","target":"bin/hello"},"one":{"type":"regular","size":1,"narOffset":1024},"sub":{"type":"directory","entries":{}}}}}"#
    );
    // narOffset really points at the contents.
    assert_eq!(&bytes[400..421], b"#!/bin/sh\necho hello\n");
    assert_eq!(bytes[1024], b'x');
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["root"]["entries"]["bin"]["entries"]["hello"]["size"], 21);
}

#[test]
fn any_chunking_gives_the_same_result() {
    let bytes = nar(&sample());
    let whole = parse(&bytes).unwrap();
    assert_eq!(whole.nar_hash, Sha256Hash::digest(&bytes));
    assert_eq!(whole.nar_size, bytes.len() as u64);
    assert_eq!(parse_bytewise(&bytes).unwrap(), whole);
    for chunk in [2, 3, 7, 8, 9, 13, 64, 1000] {
        let mut p = NarParser::new();
        for c in bytes.chunks(chunk) {
            p.feed(c).unwrap();
            p.feed(&[]).unwrap();
        }
        assert_eq!(p.finish().unwrap(), whole, "chunk {chunk}");
    }
}

#[test]
fn executable_after_contents_is_accepted() {
    let bytes = tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents", b"abc", b"executable", b"", b")"]);
    assert_eq!(listing(&bytes), r#"{"version":1,"root":{"type":"regular","size":3,"executable":true,"narOffset":96}}"#);
}

#[test]
fn io_write_adapter() {
    let bytes = nar(&sample());
    let mut p = NarParser::new();
    std::io::copy(&mut bytes.as_slice(), &mut p).unwrap();
    assert_eq!(p.finish().unwrap().nar_size, bytes.len() as u64);
    let mut p = NarParser::new();
    let e = std::io::Write::write_all(&mut p, b"garbage!").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}

fn rejects(bytes: &[u8]) -> NarError {
    let whole = parse(bytes).unwrap_err();
    let bytewise = parse_bytewise(bytes).unwrap_err();
    assert_eq!(whole, bytewise, "chunking changed the error");
    whole
}

#[test]
fn rejects_bad_magic() {
    assert_eq!(rejects(&tokens(&[b"nix-archive-2"])), NarError::BadMagic);
    assert_eq!(rejects(&tokens(&[b"nix-archive"])), NarError::BadMagic);
    assert_eq!(rejects(b"\xff\xff\xff\xff\xff\xff\xff\xff"), NarError::BadMagic);
    assert_eq!(rejects(&tokens(&[b"tar"])).to_string(), "not a NAR (bad magic)");
}

#[test]
fn rejects_unsorted_and_duplicate_entries() {
    let e = rejects(&nar(&dir(vec![(b"c", file(b"")), (b"b", file(b""))])));
    assert_eq!(e.to_string(), "directory entries not sorted: 'b' after 'c'");
    let e = rejects(&nar(&dir(vec![(b"a", file(b"")), (b"a", file(b"x"))])));
    assert_eq!(e.to_string(), "duplicate directory entry 'a'");
    // Byte-wise order: 'B' (0x42) sorts before 'a' (0x61), "a" before "a-".
    assert!(parse(&nar(&dir(vec![(b"B", file(b"")), (b"a", file(b"")), (b"a-", file(b""))]))).is_ok());
    let e = rejects(&nar(&dir(vec![(b"a", file(b"")), (b"B", file(b""))])));
    assert!(matches!(e, NarError::Unsorted { .. }));
    // Order is per directory: a nested directory starts afresh.
    let nested = dir(vec![(b"m", dir(vec![(b"z", file(b""))])), (b"n", dir(vec![(b"a", file(b""))]))]);
    assert!(parse(&nar(&nested)).is_ok());
}

#[test]
fn rejects_bad_names() {
    for (name, reason) in [
        (&b"."[..], "'.' and '..' are not allowed"),
        (b"..", "'.' and '..' are not allowed"),
        (b"a/b", "contains '/'"),
        (b"/", "contains '/'"),
        (b"a\0b", "contains a NUL byte"),
        (b"", "empty"),
    ] {
        match rejects(&nar(&dir(vec![(name, file(b""))]))) {
            NarError::InvalidName { reason: r, .. } => assert_eq!(r, reason, "{name:?}"),
            other => panic!("{name:?}: {other}"),
        }
    }
    let long = vec![b'a'; MAX_NAME_LEN + 1];
    let e = rejects(&nar(&dir(vec![(&long, file(b""))])));
    assert_eq!(e, NarError::NameTooLong { len: 256 });
    assert!(e.to_string().starts_with("name too long"));
    let ok = vec![b'a'; MAX_NAME_LEN];
    assert!(parse(&nar(&dir(vec![(&ok, file(b""))]))).is_ok());
    assert!(parse(&nar(&dir(vec![(b"...", file(b"")), (b".a", file(b""))]))).is_ok());
}

#[test]
fn rejects_bad_symlinks() {
    assert_eq!(rejects(&nar(&Node::Symlink(vec![]))), NarError::EmptyTarget);
    assert_eq!(rejects(&nar(&Node::Symlink(vec![b'a'; MAX_TARGET_LEN + 1]))), NarError::TargetTooLong { len: 4096 });
    assert_eq!(rejects(&nar(&Node::Symlink(b"a\0b".to_vec()))), NarError::TargetHasNul);
    assert!(parse(&nar(&Node::Symlink(vec![b'a'; MAX_TARGET_LEN]))).is_ok());
}

#[test]
fn rejects_non_zero_padding() {
    let mut bytes = nar(&file(b"hello world\n"));
    // Contents "hello world\n" occupy 96..108; 108..112 is padding.
    bytes[109] = 1;
    let e = rejects(&bytes);
    assert_eq!(e, NarError::NonZeroPadding { offset: 109 });
    assert_eq!(e.to_string(), "non-zero padding at byte 109");
    // Padding of a string ("(" at 24..40, padded from 33).
    let mut bytes = nar(&file(b"x"));
    bytes[39] = 0x80;
    assert_eq!(rejects(&bytes), NarError::NonZeroPadding { offset: 39 });
}

#[test]
fn rejects_every_truncation() {
    let bytes = nar(&sample());
    for cut in 0..bytes.len() {
        let mut p = NarParser::new();
        p.feed(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        match p.finish() {
            Err(NarError::Truncated { offset, .. }) => assert_eq!(offset, cut as u64),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let mut p = NarParser::new();
    p.feed(&bytes[..100]).unwrap();
    assert!(p.finish().unwrap_err().to_string().starts_with("NAR is incomplete"));
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = nar(&sample());
    let len = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(rejects(&bytes), NarError::TrailingBytes { offset: len });
    assert!(rejects(&bytes).to_string().starts_with("trailing bytes after the archive"));
    // Trailing bytes in a later call are rejected too.
    let mut p = NarParser::new();
    p.feed(&nar(&sample())).unwrap();
    assert!(p.feed(b"\0").is_err());
    assert_eq!(p.feed(b"\0"), Err(NarError::AlreadyFailed));
}

#[test]
fn rejects_structural_errors() {
    let cases: Vec<Vec<u8>> = vec![
        // unknown type
        tokens(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]),
        // missing "type"
        tokens(&[b"nix-archive-1", b"(", b"regular"]),
        // regular without contents
        tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b")"]),
        // executable twice
        tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"executable", b"", b"executable", b"", b"contents", b"", b")"]),
        // contents twice
        tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents", b"", b"contents", b"", b")"]),
        // a field of another type
        tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"target", b"x", b")"]),
        tokens(&[b"nix-archive-1", b"(", b"type", b"symlink", b"contents", b"x", b")"]),
        tokens(&[b"nix-archive-1", b"(", b"type", b"directory", b"contents", b"x", b")"]),
        // entry without "node"
        tokens(&[b"nix-archive-1", b"(", b"type", b"directory", b"entry", b"(", b"name", b"a", b"(", b"type"]),
        // two root nodes
        [nar(&file(b"")), tokens(&[b"(", b"type", b"regular", b"contents", b"", b")"])].concat(),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let e = rejects(bytes);
        assert!(matches!(e, NarError::Unexpected { .. } | NarError::TrailingBytes { .. }), "case {i}: {e}");
    }
    let e = rejects(&tokens(&[b"nix-archive-1", b"(", b"type", b"fifo"]));
    assert_eq!(e.to_string(), "at byte 56: expected 'regular', 'symlink' or 'directory', found 'fifo'");
    let e = rejects(&tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"executable", b"x"]));
    assert_eq!(e, NarError::ExecutableNotEmpty);
}

#[test]
fn huge_lengths_are_rejected_without_allocating() {
    let mut bytes = tokens(&[b"nix-archive-1", b"(", b"type", b"directory", b"entry", b"(", b"name"]);
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(rejects(&bytes), NarError::NameTooLong { len: u64::MAX });
    let mut bytes = tokens(&[b"nix-archive-1", b"("]);
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let e = rejects(&bytes);
    assert_eq!(e.to_string(), "at byte 40: expected 'type', found a 1099511627776-byte string");
    // A file claiming u64::MAX bytes is fine until the stream ends.
    let mut bytes = tokens(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 100]);
    let mut p = NarParser::new();
    p.feed(&bytes).unwrap();
    assert!(matches!(p.finish(), Err(NarError::Truncated { .. })));
}

#[test]
fn nesting_depth_is_capped() {
    fn nested(depth: usize) -> Node {
        let mut node = dir(vec![]);
        for _ in 1..depth {
            node = Node::Directory(vec![(b"d".to_vec(), node)]);
        }
        node
    }
    assert!(parse(&nar(&nested(MAX_DEPTH))).is_ok());
    assert_eq!(rejects(&nar(&nested(MAX_DEPTH + 1))), NarError::TooDeep);
}

#[test]
fn large_files_are_streamed() {
    // 8 MiB of contents fed in 64 KiB chunks: the parser never buffers them.
    let data = vec![0xabu8; 8 << 20];
    let bytes = nar(&file(&data));
    let mut p = NarParser::new();
    for c in bytes.chunks(64 << 10) {
        p.feed(c).unwrap();
    }
    let s = p.finish().unwrap();
    assert_eq!(s.nar_size, bytes.len() as u64);
    assert_eq!(s.nar_hash, Sha256Hash::digest(&bytes));
}

#[test]
fn a_listing_past_its_limit_is_dropped_but_the_nar_still_verifies() {
    // Names of control bytes escape to six bytes each in the listing.
    let names: Vec<Vec<u8>> = (1u8..=31).map(|b| vec![b; 200]).collect();
    let bytes = nar(&Node::directory(names.iter().map(|n| (n, file(b"")))));
    let full = parse(&bytes).unwrap();
    let full_listing = full.listing.clone().unwrap();
    // (\t, \n and \r escape to two bytes, the 28 others to six.)
    assert!(full_listing.len() > 28 * 200 * 6);

    let mut limited = NarParser::with_listing_limit(full_listing.len() - 1);
    limited.feed(&bytes).unwrap();
    let limited = limited.finish().unwrap();
    assert_eq!(limited.listing, None);
    assert_eq!((limited.nar_hash, limited.nar_size), (full.nar_hash, full.nar_size));

    let mut exact = NarParser::with_listing_limit(full_listing.len());
    exact.feed(&bytes).unwrap();
    assert_eq!(exact.finish().unwrap().listing, Some(full_listing));
}
