//! The filesystem entry stream: what assembly produces and every output
//! format consumes.
//!
//! An [`Entry`] is metadata only; a regular file's bytes follow it through
//! [`Sink::data`] in chunks, so no file is ever held whole in memory and one
//! stream can feed several formats at once ([`Tee`]).

use std::io::{self, Read};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink {
        target: String,
    },
    /// Another name for a regular file emitted earlier in the same stream.
    HardLink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the image root: no leading `/`, no trailing `/`, no `.`
    /// or `..` components.
    pub path: String,
    pub kind: Kind,
    /// Permission bits with set-id and sticky bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Bytes of data that follow; zero for everything but regular files.
    pub size: u64,
    /// For a regular file: how many names it has in the stream (itself plus
    /// the [`Kind::HardLink`] entries that follow naming it). cpio needs this
    /// before the links arrive.
    pub links: u32,
}

impl Entry {
    pub fn directory(path: impl Into<String>, mode: u32, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Directory,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            links: 1,
        }
    }

    pub fn file(path: impl Into<String>, mode: u32, size: u64, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size,
            links: 1,
        }
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>, mtime: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Symlink {
                target: target.into(),
            },
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            links: 1,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Directory
    }
}

/// Something that consumes the entry stream: an archive writer, a splitter,
/// a [`Tee`].
///
/// The caller calls [`Sink::entry`], then, for a regular file, [`Sink::data`]
/// until exactly `size` bytes have been given, then the next entry; finally
/// [`Sink::finish`].
pub trait Sink {
    fn entry(&mut self, entry: &Entry) -> io::Result<()>;
    fn data(&mut self, chunk: &[u8]) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
}

/// Writes `entry` and copies its data from `reader`, which must hold exactly
/// `entry.size` bytes.
pub fn copy_entry(sink: &mut dyn Sink, entry: &Entry, reader: &mut dyn Read) -> io::Result<()> {
    sink.entry(entry)?;
    let mut remaining = entry.size;
    let mut buffer = vec![0u8; 256 * 1024];
    while remaining > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = reader.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: data ended {remaining} bytes early", entry.path),
            ));
        }
        sink.data(&buffer[..n])?;
        remaining -= n as u64;
    }
    Ok(())
}

/// Writes a regular file whose bytes are in memory.
pub fn write_bytes(sink: &mut dyn Sink, entry: &Entry, bytes: &[u8]) -> io::Result<()> {
    debug_assert_eq!(entry.size, bytes.len() as u64);
    sink.entry(entry)?;
    if !bytes.is_empty() {
        sink.data(bytes)?;
    }
    Ok(())
}

/// Feeds one stream to several sinks.
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.entry(entry))
    }
    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.data(chunk))
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

/// Collects entries without data, for listings and tests.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub data: Vec<Vec<u8>>,
}

impl Sink for Listing {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.entries.push(entry.clone());
        self.data.push(Vec::new());
        Ok(())
    }
    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if let Some(last) = self.data.last_mut() {
            last.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The entry a tar archive's header describes: path cleaned (`None` for
/// the root itself), hard links kept as [`Kind::HardLink`] to a cleaned
/// path; every problem names the entry.
pub fn from_tar<R: std::io::Read>(item: &tar::Entry<R>) -> Result<Option<Entry>, String> {
    let raw = String::from_utf8_lossy(&item.path_bytes()).to_string();
    let at = |e: std::io::Error| format!("entry {raw:?}: {e}");
    let path = clean_path(&raw).map_err(|reason| format!("entry {raw:?}: {reason}"))?;
    if path.is_empty() {
        return Ok(None);
    }
    let h = item.header();
    let mode = h.mode().map_err(at)? & 0o7777;
    let id = |v: std::io::Result<u64>| -> Result<u32, String> {
        u32::try_from(v.map_err(at)?).map_err(|_| format!("entry {raw:?}: id beyond 32 bits"))
    };
    let (uid, gid) = (id(h.uid())?, id(h.gid())?);
    let mtime = h.mtime().map_err(at)?;
    let link = item
        .link_name()
        .map_err(at)?
        .map(|l| l.to_string_lossy().to_string());
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Directory => Kind::Directory,
        tar::EntryType::Symlink => Kind::Symlink {
            target: link.unwrap_or_default(),
        },
        tar::EntryType::Link => Kind::HardLink {
            target: clean_path(&link.unwrap_or_default())
                .map_err(|reason| format!("entry {raw:?}: hard link target {reason}"))?,
        },
        tar::EntryType::Char | tar::EntryType::Block => {
            let number = |v: std::io::Result<Option<u32>>| v.map(Option::unwrap_or_default);
            let major = number(h.device_major()).map_err(at)?;
            let minor = number(h.device_minor()).map_err(at)?;
            if h.entry_type() == tar::EntryType::Char {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        tar::EntryType::Fifo => Kind::Fifo,
        other => return Err(format!("entry {raw:?}: unsupported type {other:?}")),
    };
    let size = if kind == Kind::File { item.size() } else { 0 };
    Ok(Some(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
        size,
        links: 1,
    }))
}

/// Normalises a path from an archive or the YAML to the [`Entry::path`]
/// form, or says why it would land outside the root.
pub fn clean_path(raw: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{raw:?} climbs out of the root with '..'")),
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The parent of an entry path, `""` for the root's children.
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// Every ancestor directory of `path`, outermost first.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_refuses_dot_dot_and_normalises() {
        assert_eq!(clean_path("./usr//bin/").unwrap(), "usr/bin");
        assert_eq!(clean_path("/etc/passwd").unwrap(), "etc/passwd");
        assert!(clean_path("a/../../etc").is_err());
        assert!(clean_path("..").is_err());
    }

    #[test]
    fn ancestors_outermost_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
        assert_eq!(parent("a/b/c"), "a/b");
    }
}
