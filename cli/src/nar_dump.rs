//! NARs of store paths, serialised here rather than by a `nix-store --dump` per path:
//! starting a nix process costs about 20 ms of CPU, which dominates pushing a closure of
//! many small paths. The bytes must be exactly nix's: the server checks them against the
//! NarHash nix recorded.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes the NAR of the file, symlink or directory tree at `path`.
pub fn dump(path: &Path, out: &mut impl Write) -> io::Result<()> {
    write_string(out, b"nix-archive-1")?;
    dump_node(path, out)
}

fn dump_node(path: &Path, out: &mut impl Write) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    write_string(out, b"(")?;
    write_string(out, b"type")?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        write_string(out, b"symlink")?;
        write_string(out, b"target")?;
        write_string(out, std::fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if kind.is_file() {
        write_string(out, b"regular")?;
        // As nix: executable when the owner may execute it.
        if meta.permissions().mode() & 0o100 != 0 {
            write_string(out, b"executable")?;
            write_string(out, b"")?;
        }
        write_string(out, b"contents")?;
        let length = meta.len();
        out.write_all(&length.to_le_bytes())?;
        let copied = io::copy(&mut File::open(path)?.take(length), out)?;
        if copied != length {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} changed while it was read", path.display())));
        }
        pad(out, length)?;
    } else if kind.is_dir() {
        write_string(out, b"directory")?;
        let mut names: Vec<OsString> = std::fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        // Byte order, as nix sorts them.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            write_string(out, b"entry")?;
            write_string(out, b"(")?;
            write_string(out, b"name")?;
            write_string(out, name.as_bytes())?;
            write_string(out, b"node")?;
            dump_node(&path.join(&name), out)?;
            write_string(out, b")")?;
        }
    } else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is neither a file, a directory nor a symlink", path.display())));
    }
    write_string(out, b")")
}

/// One NAR string: its length (u64, little-endian), its bytes, zero padding to 8.
fn write_string(out: &mut impl Write, s: &[u8]) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s)?;
    pad(out, s.len() as u64)
}

fn pad(out: &mut impl Write, length: u64) -> io::Result<()> {
    let padding = (8 - length % 8) % 8;
    out.write_all(&[0; 8][..padding as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_protocol::nar::writer::Node;

    #[test]
    fn dumps_what_the_protocol_writer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("bin/run"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(root.join("bin/run"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::write(root.join("data"), b"1234567").unwrap();
        std::fs::write(root.join("Zero"), b"").unwrap();
        std::os::unix::fs::symlink("../data", root.join("link")).unwrap();
        let expected = Node::directory([
            ("Zero", Node::file(b"")),
            ("bin", Node::directory([("run", Node::File { executable: true, data: b"#!/bin/sh\necho hi\n".to_vec() })])),
            ("data", Node::file(b"1234567")),
            ("empty", Node::directory(Vec::<(&str, Node)>::new())),
            ("link", Node::Symlink(b"../data".to_vec())),
        ]);
        let mut dumped = Vec::new();
        dump(&root, &mut dumped).unwrap();
        assert_eq!(dumped, expected.to_nar());

        let mut single = Vec::new();
        dump(&root.join("data"), &mut single).unwrap();
        assert_eq!(single, Node::file(b"1234567").to_nar());
    }
}
