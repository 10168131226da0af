//! Writing NARs from an in-memory tree: for tests and tools that need a NAR without a
//! store (the server itself only ever reads them).

/// A file system tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File {
        executable: bool,
        data: Vec<u8>,
    },
    Symlink(Vec<u8>),
    /// Entries as given: a valid NAR needs them sorted by name, without duplicates.
    Directory(Vec<(Vec<u8>, Node)>),
}

impl Node {
    pub fn file(data: &[u8]) -> Self {
        Node::File { executable: false, data: data.to_vec() }
    }

    pub fn directory<N: AsRef<[u8]>>(entries: impl IntoIterator<Item = (N, Node)>) -> Self {
        Node::Directory(entries.into_iter().map(|(name, node)| (name.as_ref().to_vec(), node)).collect())
    }

    /// The NAR serialisation of this tree.
    pub fn to_nar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, b"nix-archive-1");
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_string(out, b"(");
        write_string(out, b"type");
        match self {
            Node::File { executable, data } => {
                write_string(out, b"regular");
                if *executable {
                    write_string(out, b"executable");
                    write_string(out, b"");
                }
                write_string(out, b"contents");
                write_string(out, data);
            }
            Node::Symlink(target) => {
                write_string(out, b"symlink");
                write_string(out, b"target");
                write_string(out, target);
            }
            Node::Directory(entries) => {
                write_string(out, b"directory");
                for (name, child) in entries {
                    write_string(out, b"entry");
                    write_string(out, b"(");
                    write_string(out, b"name");
                    write_string(out, name);
                    write_string(out, b"node");
                    child.write(out);
                    write_string(out, b")");
                }
            }
        }
        write_string(out, b")");
    }
}

/// One NAR string: its length (u64, little-endian), its bytes, zero padding to 8.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len().next_multiple_of(8), 0);
}
