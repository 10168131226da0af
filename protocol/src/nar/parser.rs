//! The push-based NAR state machine.
//!
//! Two layers: a lexer that turns bytes into length-prefixed, padded pieces
//! (strings, or file contents that are only counted and hashed), and a
//! grammar that checks each string against what may come next. Push-based so
//! the server can feed it whatever chunks its decompressor yields.

use std::cmp::min;
use std::mem;

use super::listing::Listing;
use super::{NarError, DEFAULT_MAX_LISTING_SIZE, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};
use crate::error::excerpt_bytes;
use crate::hash::{Sha256Hash, Sha256Hasher};

const MAGIC: &[u8] = b"nix-archive-1";
/// Longer than any keyword, so a huge length in a keyword position is
/// rejected before anything is allocated.
const MAX_KEYWORD_LEN: u64 = 16;

/// What one NAR turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarSummary {
    /// sha256 of every byte of the NAR: the narinfo `NarHash`.
    pub nar_hash: Sha256Hash,
    /// The narinfo `NarSize`.
    pub nar_size: u64,
    /// The `.ls` JSON, byte-identical to what nix 2.8 uploads with
    /// `write-nar-listing=true`. Not necessarily UTF-8: names are copied
    /// through as nix does. `None` when it would exceed the parser's
    /// listing limit (the NAR itself is still valid).
    pub listing: Option<Vec<u8>>,
}

/// Where the lexer is inside the current piece.
enum Lex {
    /// Reading the 8-byte length of the next piece.
    Len { buf: [u8; 8], have: usize },
    /// Reading a string's bytes.
    Str { buf: Vec<u8>, want: usize },
    /// Skipping file contents (they are hashed, never stored).
    Contents { remaining: u64 },
    /// Checking zero padding; `string` is the finished string, or `None`
    /// after file contents.
    Pad { remaining: u64, string: Option<Vec<u8>> },
    /// The root node is closed: any further byte is an error.
    End,
}

impl Lex {
    fn len() -> Self {
        Self::Len { buf: [0; 8], have: 0 }
    }
}

/// What the grammar accepts next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Magic,
    Open,
    Type,
    TypeName,
    RegularField,
    ExecutableValue,
    ContentsData,
    AfterContents,
    Target,
    TargetValue,
    Close,
    DirField,
    EntryOpen,
    EntryName,
    EntryNameValue,
    EntryNode,
    EntryClose,
    Done,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Self::Magic => "the 'nix-archive-1' magic",
            Self::Open | Self::EntryOpen => "'('",
            Self::Type => "'type'",
            Self::TypeName => "'regular', 'symlink' or 'directory'",
            Self::RegularField => "'executable' or 'contents'",
            Self::ExecutableValue => "the empty executable marker value",
            Self::ContentsData => "file contents",
            Self::AfterContents => "')' or 'executable'",
            Self::Target => "'target'",
            Self::TargetValue => "a symlink target",
            Self::Close | Self::EntryClose => "')'",
            Self::DirField => "'entry' or ')'",
            Self::EntryName => "'name'",
            Self::EntryNameValue => "an entry name",
            Self::EntryNode => "'node'",
            Self::Done => "the end of the archive",
        }
    }
}

/// One open directory.
struct Dir {
    /// The previous entry's name, to enforce strictly increasing order.
    last_name: Option<Vec<u8>>,
}

/// The regular file being read.
#[derive(Default)]
struct File {
    executable: bool,
    has_contents: bool,
    size: u64,
    nar_offset: u64,
}

/// Streaming NAR validator. Feed it the uncompressed NAR in chunks of any
/// size, then call [`NarParser::finish`].
///
/// Memory is bounded by the listing limit plus one string of at most
/// [`MAX_TARGET_LEN`] bytes and [`MAX_DEPTH`] directory frames; file contents
/// are never buffered. After an error, the parser refuses further input.
pub struct NarParser {
    hasher: Sha256Hasher,
    pos: u64,
    lex: Lex,
    expect: Expect,
    dirs: Vec<Dir>,
    file: File,
    listing: Listing,
    failed: bool,
}

impl Default for NarParser {
    fn default() -> Self {
        Self::new()
    }
}

impl NarParser {
    /// A parser whose listing may grow to [`DEFAULT_MAX_LISTING_SIZE`].
    pub fn new() -> Self {
        Self::with_listing_limit(DEFAULT_MAX_LISTING_SIZE)
    }

    /// A parser that drops the listing once it would exceed `max_listing_size` bytes.
    pub fn with_listing_limit(max_listing_size: usize) -> Self {
        Self {
            hasher: Sha256Hasher::new(),
            pos: 0,
            lex: Lex::len(),
            expect: Expect::Magic,
            dirs: Vec::new(),
            file: File::default(),
            listing: Listing::new(max_listing_size),
            failed: false,
        }
    }

    /// Consumes the next chunk. Errors are final: the NAR is invalid.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        if self.failed {
            return Err(NarError::AlreadyFailed);
        }
        self.hasher.update(bytes);
        let result = self.consume(bytes);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Ends the stream: the root node must be complete.
    pub fn finish(self) -> Result<NarSummary, NarError> {
        if self.failed {
            return Err(NarError::AlreadyFailed);
        }
        if self.expect != Expect::Done {
            let expected = match self.lex {
                Lex::Contents { .. } => "the end of the file contents",
                Lex::Pad { .. } => "the end of the padding",
                _ => self.expect.describe(),
            };
            return Err(NarError::Truncated { offset: self.pos, expected });
        }
        Ok(NarSummary { nar_hash: self.hasher.finish(), nar_size: self.pos, listing: self.listing.finish() })
    }

    fn consume(&mut self, mut data: &[u8]) -> Result<(), NarError> {
        while !data.is_empty() {
            let taken = match mem::replace(&mut self.lex, Lex::End) {
                Lex::Len { mut buf, have } => {
                    let n = min(8 - have, data.len());
                    buf[have..have + n].copy_from_slice(&data[..n]);
                    self.pos += n as u64;
                    if have + n == 8 {
                        self.start_piece(u64::from_le_bytes(buf))?;
                    } else {
                        self.lex = Lex::Len { buf, have: have + n };
                    }
                    n
                }
                Lex::Str { mut buf, want } => {
                    let n = min(want - buf.len(), data.len());
                    buf.extend_from_slice(&data[..n]);
                    self.pos += n as u64;
                    if buf.len() == want {
                        self.start_padding(want as u64, Some(buf))?;
                    } else {
                        self.lex = Lex::Str { buf, want };
                    }
                    n
                }
                Lex::Contents { remaining } => {
                    // Both fit in u64 and the result is at most data.len().
                    let n = min(remaining, data.len() as u64) as usize;
                    self.pos += n as u64;
                    if remaining == n as u64 {
                        self.start_padding(self.file.size, None)?;
                    } else {
                        self.lex = Lex::Contents { remaining: remaining - n as u64 };
                    }
                    n
                }
                Lex::Pad { remaining, string } => {
                    let n = min(remaining, data.len() as u64) as usize;
                    if let Some(i) = data[..n].iter().position(|&b| b != 0) {
                        return Err(NarError::NonZeroPadding { offset: self.pos + i as u64 });
                    }
                    self.pos += n as u64;
                    if remaining == n as u64 {
                        self.deliver(string)?;
                    } else {
                        self.lex = Lex::Pad { remaining: remaining - n as u64, string };
                    }
                    n
                }
                Lex::End => return Err(NarError::TrailingBytes { offset: self.pos }),
            };
            data = &data[taken..];
        }
        Ok(())
    }

    /// A length field is complete: check it against what may come next
    /// before reading (or allocating for) the piece.
    fn start_piece(&mut self, len: u64) -> Result<(), NarError> {
        if self.expect == Expect::ContentsData {
            self.file.size = len;
            self.file.nar_offset = self.pos;
            self.file.has_contents = true;
            if len == 0 {
                return self.start_padding(0, None);
            }
            self.lex = Lex::Contents { remaining: len };
            return Ok(());
        }
        let max = match self.expect {
            Expect::Magic if len != MAGIC.len() as u64 => return Err(NarError::BadMagic),
            Expect::ExecutableValue if len != 0 => return Err(NarError::ExecutableNotEmpty),
            Expect::TargetValue if len == 0 => return Err(NarError::EmptyTarget),
            Expect::TargetValue if len > MAX_TARGET_LEN as u64 => return Err(NarError::TargetTooLong { len }),
            Expect::TargetValue => MAX_TARGET_LEN as u64,
            Expect::EntryNameValue if len == 0 => return Err(NarError::InvalidName { name: String::new(), reason: "empty" }),
            Expect::EntryNameValue if len > MAX_NAME_LEN as u64 => return Err(NarError::NameTooLong { len }),
            Expect::EntryNameValue => MAX_NAME_LEN as u64,
            _ => MAX_KEYWORD_LEN,
        };
        if len > max {
            return Err(NarError::Unexpected {
                offset: self.pos - 8,
                expected: self.expect.describe(),
                found: format!("a {len}-byte string"),
            });
        }
        let want = len as usize; // len <= MAX_TARGET_LEN here
        if want == 0 {
            return self.deliver(Some(Vec::new()));
        }
        self.lex = Lex::Str { buf: Vec::with_capacity(want), want };
        Ok(())
    }

    fn start_padding(&mut self, len: u64, string: Option<Vec<u8>>) -> Result<(), NarError> {
        let remaining = (8 - len % 8) % 8;
        if remaining == 0 {
            return self.deliver(string);
        }
        self.lex = Lex::Pad { remaining, string };
        Ok(())
    }

    /// A piece is complete, padding included.
    fn deliver(&mut self, string: Option<Vec<u8>>) -> Result<(), NarError> {
        self.lex = Lex::len();
        match string {
            Some(s) => self.on_string(s),
            None => {
                self.expect = Expect::AfterContents;
                Ok(())
            }
        }
    }

    fn on_string(&mut self, s: Vec<u8>) -> Result<(), NarError> {
        // Offset of the string's length field, for error messages.
        let offset = self.pos - 8 - (s.len() as u64).next_multiple_of(8);
        let unexpected = |expect: Expect, s: &[u8]| NarError::Unexpected {
            offset,
            expected: expect.describe(),
            found: format!("'{}'", excerpt_bytes(s)),
        };
        self.expect = match (self.expect, s.as_slice()) {
            (Expect::Magic, MAGIC) => Expect::Open,
            (Expect::Magic, _) => return Err(NarError::BadMagic),
            (Expect::Open, b"(") => Expect::Type,
            (Expect::Type, b"type") => Expect::TypeName,
            (Expect::TypeName, b"regular") => {
                self.file = File::default();
                Expect::RegularField
            }
            (Expect::TypeName, b"symlink") => Expect::Target,
            (Expect::TypeName, b"directory") => {
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(NarError::TooDeep);
                }
                self.dirs.push(Dir { last_name: None });
                self.listing.open_directory();
                Expect::DirField
            }
            (Expect::RegularField | Expect::AfterContents, b"executable") if !self.file.executable => Expect::ExecutableValue,
            (Expect::ExecutableValue, b"") => {
                self.file.executable = true;
                if self.file.has_contents {
                    Expect::AfterContents
                } else {
                    Expect::RegularField
                }
            }
            (Expect::RegularField, b"contents") => Expect::ContentsData,
            (Expect::AfterContents, b")") => {
                let f = &self.file;
                self.listing.regular(f.size, f.executable, f.nar_offset);
                self.node_done()
            }
            (Expect::Target, b"target") => Expect::TargetValue,
            (Expect::TargetValue, target) => {
                if target.contains(&0) {
                    return Err(NarError::TargetHasNul);
                }
                self.listing.symlink(target);
                Expect::Close
            }
            (Expect::Close, b")") => self.node_done(),
            (Expect::DirField, b"entry") => Expect::EntryOpen,
            (Expect::DirField, b")") => {
                self.dirs.pop();
                self.listing.close_directory();
                self.node_done()
            }
            (Expect::EntryOpen, b"(") => Expect::EntryName,
            (Expect::EntryName, b"name") => Expect::EntryNameValue,
            (Expect::EntryNameValue, _) => {
                self.add_entry(s)?;
                Expect::EntryNode
            }
            (Expect::EntryNode, b"node") => Expect::Open,
            (Expect::EntryClose, b")") => Expect::DirField,
            (expect, _) => return Err(unexpected(expect, &s)),
        };
        Ok(())
    }

    /// Checks a directory entry name and its order, and starts its listing.
    fn add_entry(&mut self, name: Vec<u8>) -> Result<(), NarError> {
        let invalid = |reason| NarError::InvalidName { name: excerpt_bytes(&name), reason };
        if name == b"." || name == b".." {
            return Err(invalid("'.' and '..' are not allowed"));
        }
        if name.contains(&b'/') {
            return Err(invalid("contains '/'"));
        }
        if name.contains(&0) {
            return Err(invalid("contains a NUL byte"));
        }
        // EntryNameValue is only ever expected inside a directory.
        let Some(dir) = self.dirs.last_mut() else {
            return Err(invalid("entry outside a directory"));
        };
        let first = match &dir.last_name {
            None => true,
            Some(prev) if name.as_slice() > prev.as_slice() => false,
            Some(prev) if name == *prev => return Err(NarError::DuplicateEntry { name: excerpt_bytes(&name) }),
            Some(prev) => return Err(NarError::Unsorted { previous: excerpt_bytes(prev), name: excerpt_bytes(&name) }),
        };
        self.listing.entry(&name, first);
        dir.last_name = Some(name);
        Ok(())
    }

    /// A node's closing ')' was read: either the archive is complete or the
    /// enclosing entry must close next.
    fn node_done(&mut self) -> Expect {
        if self.dirs.is_empty() {
            self.lex = Lex::End;
            Expect::Done
        } else {
            Expect::EntryClose
        }
    }
}

/// Lets the parser sit at the end of an `std::io::copy` from a decompressor.
/// NAR errors come back as `InvalidData` wrapping the [`NarError`].
impl std::io::Write for NarParser {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
