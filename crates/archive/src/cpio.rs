//! The cpio writer, "newc" (SVR4 without CRC), the format the kernel unpacks
//! into its initramfs.
//!
//! newc's fields are 32 bits: a file of 4 GiB or more, or a time past 2106,
//! cannot be written and is an error, never a silent truncation (LinuxKit
//! issue #3926). Hard links keep their meaning: every name of a file shares
//! its inode number and `nlink`, the data travels with the first name, which
//! is the order the kernel's unpacker (init/initramfs.c) expects.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::entry::{Entry, Kind, Sink};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
/// The kernel refuses names longer than PATH_MAX (init/initramfs.c).
const PATH_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("{path}: {size} bytes is more than cpio newc can hold (4 GiB - 1 per file)")]
    TooLarge { path: String, size: u64 },
    #[error("{path}: modification time {mtime} does not fit cpio newc's 32 bits")]
    TimeTooLate { path: String, mtime: u64 },
    #[error("{path}: name longer than the kernel's PATH_MAX ({PATH_MAX})")]
    NameTooLong { path: String },
    #[error("{path}: hard link to {target}, which is not an earlier file in the archive")]
    DanglingLink { path: String, target: String },
}

impl From<CpioError> for io::Error {
    fn from(e: CpioError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

pub struct CpioWriter<W: Write> {
    inner: W,
    written: u64,
    next_inode: u32,
    /// Inode and link count of every multiply-linked file, by path.
    links: HashMap<String, (u32, u32)>,
    /// Paths whose file has other names: writing a new file there must not
    /// write into the shared inode.
    linked: std::collections::HashSet<String>,
    remaining: u64,
}

struct Header<'a> {
    inode: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &'a str,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(inner: W) -> Self {
        CpioWriter {
            inner,
            written: 0,
            next_inode: 1,
            links: HashMap::new(),
            linked: std::collections::HashSet::new(),
            remaining: 0,
        }
    }

    /// The kernel's unpacker opens an existing regular file and truncates
    /// it, which would change every other name of a hard-linked file. A
    /// symbolic link written first at the same path makes it unlink the old
    /// name, so a later file replaces that name only, as tar extraction does.
    fn unlink_first(&mut self, path: &str, mtime: u32) -> io::Result<()> {
        if !self.linked.remove(path) {
            return Ok(());
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.header(&Header {
            inode,
            mode: S_IFLNK | 0o777,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime,
            size: 1,
            rdev: (0, 0),
            name: path,
        })?;
        self.write_padded(b".")
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.align(4)
    }

    fn align(&mut self, to: u64) -> io::Result<()> {
        let pad = ((to - self.written % to) % to) as usize;
        self.inner.write_all(&[0; 512][..pad])?;
        self.written += pad as u64;
        Ok(())
    }

    fn header(&mut self, h: &Header) -> io::Result<()> {
        let text = format!(
            "{MAGIC}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            h.inode,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.size,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            h.name.len() + 1,
            0
        );
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(h.name.as_bytes())?;
        self.inner.write_all(&[0])?;
        self.written += (text.len() + h.name.len() + 1) as u64;
        self.align(4)
    }
}

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl<W: Write> Sink for CpioWriter<W> {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        let path = entry.path.as_str();
        if path.len() >= PATH_MAX {
            return Err(CpioError::NameTooLong { path: path.into() }.into());
        }
        let size = u32::try_from(entry.size).map_err(|_| CpioError::TooLarge {
            path: path.into(),
            size: entry.size,
        })?;
        let mtime = u32::try_from(entry.mtime).map_err(|_| CpioError::TimeTooLate {
            path: path.into(),
            mtime: entry.mtime,
        })?;
        if entry.kind == Kind::File {
            self.unlink_first(path, mtime)?;
        }
        let mut inode = self.next_inode;
        self.next_inode += 1;
        let mut nlink = 1;
        let mut rdev = (0, 0);
        let mut symlink_target = None;
        let kind_bits = match &entry.kind {
            Kind::File => {
                if entry.links > 1 {
                    self.links.insert(path.to_string(), (inode, entry.links));
                    self.linked.insert(path.to_string());
                    nlink = entry.links;
                }
                S_IFREG
            }
            Kind::HardLink { target } => {
                let &(target_inode, links) =
                    self.links
                        .get(target)
                        .ok_or_else(|| CpioError::DanglingLink {
                            path: path.into(),
                            target: target.clone(),
                        })?;
                inode = target_inode;
                nlink = links;
                self.linked.insert(path.to_string());
                S_IFREG
            }
            Kind::Directory => {
                nlink = 2;
                S_IFDIR
            }
            Kind::Symlink { target } => {
                symlink_target = Some(target.as_str());
                S_IFLNK
            }
            Kind::CharDevice { major, minor } => {
                rdev = (*major, *minor);
                S_IFCHR
            }
            Kind::BlockDevice { major, minor } => {
                rdev = (*major, *minor);
                S_IFBLK
            }
            Kind::Fifo => S_IFIFO,
        };
        let size = symlink_target.map_or(size, |t| t.len() as u32);
        self.header(&Header {
            inode,
            mode: kind_bits | (entry.mode & 0o7777),
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime,
            size,
            rdev,
            name: path,
        })?;
        match symlink_target {
            Some(target) => self.write_padded(target.as_bytes()),
            None => {
                self.remaining = entry.size;
                Ok(())
            }
        }
    }

    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() as u64 > self.remaining {
            return Err(io::Error::other("cpio: more data than the entry's size"));
        }
        self.inner.write_all(chunk)?;
        self.written += chunk.len() as u64;
        self.remaining -= chunk.len() as u64;
        if self.remaining == 0 {
            self.align(4)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other("cpio: stream ended inside an entry"));
        }
        let inode = self.next_inode;
        self.header(&Header {
            inode,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
            name: TRAILER,
        })?;
        self.align(512)?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::write_bytes;

    #[test]
    fn a_file_of_4_gib_is_refused_before_anything_is_written() {
        let mut out = Vec::new();
        let mut cpio = CpioWriter::new(&mut out);
        let error = cpio
            .entry(&Entry::file("big", 0o644, 1 << 32, 0))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "big: 4294967296 bytes is more than cpio newc can hold (4 GiB - 1 per file)"
        );
        drop(cpio);
        assert!(out.is_empty());
    }

    #[test]
    fn layout_is_newc() {
        let mut out = Vec::new();
        let mut cpio = CpioWriter::new(&mut out);
        write_bytes(&mut cpio, &Entry::file("a", 0o644, 3, 5), b"abc").unwrap();
        cpio.finish().unwrap();
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(
            header,
            concat!(
                "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000005",
                "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000"
            )
        );
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..115], b"abc");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn hard_links_share_the_inode() {
        let mut out = Vec::new();
        let mut cpio = CpioWriter::new(&mut out);
        let mut file = Entry::file("bin/a", 0o755, 1, 0);
        file.links = 2;
        write_bytes(&mut cpio, &file, b"x").unwrap();
        let mut link = Entry::file("bin/b", 0o755, 0, 0);
        link.kind = Kind::HardLink {
            target: "bin/a".into(),
        };
        cpio.entry(&link).unwrap();
        let error = cpio
            .entry(&Entry {
                kind: Kind::HardLink {
                    target: "nope".into(),
                },
                ..link.clone()
            })
            .unwrap_err();
        assert!(error.to_string().contains("not an earlier file"));
        // Inode and nlink fields of both headers; the second header starts
        // after 110 + "bin/a\0" + 1 byte of data, padded to 120.
        let field = |at: usize, index: usize| {
            let start = at + 6 + 8 * index;
            std::str::from_utf8(&out[start..start + 8])
                .unwrap()
                .to_string()
        };
        assert_eq!(
            (field(0, 0), field(0, 4)),
            ("00000001".into(), "00000002".into())
        );
        assert_eq!(
            (field(120, 0), field(120, 4)),
            ("00000001".into(), "00000002".into())
        );
    }

    #[test]
    fn a_file_written_over_a_hard_link_replaces_only_that_name() {
        let mut out = Vec::new();
        let mut cpio = CpioWriter::new(&mut out);
        let mut file = Entry::file("a", 0o644, 1, 0);
        file.links = 2;
        write_bytes(&mut cpio, &file, b"1").unwrap();
        let mut link = Entry::file("b", 0o644, 0, 0);
        link.kind = Kind::HardLink { target: "a".into() };
        cpio.entry(&link).unwrap();
        write_bytes(&mut cpio, &Entry::file("a", 0o644, 1, 0), b"2").unwrap();
        cpio.finish().unwrap();
        // a, b, then a symbolic link "a" that unlinks the shared name, then
        // the new "a".
        let names: Vec<(String, String)> = String::from_utf8_lossy(&out)
            .match_indices("070701")
            .map(|(at, _)| {
                let mode = String::from_utf8_lossy(&out[at + 14..at + 22]).into_owned();
                let size =
                    usize::from_str_radix(&String::from_utf8_lossy(&out[at + 94..at + 102]), 16)
                        .unwrap();
                let name =
                    String::from_utf8_lossy(&out[at + 110..at + 110 + size - 1]).into_owned();
                (name, mode)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_string(), "000081a4".to_string()),
                ("b".to_string(), "000081a4".to_string()),
                ("a".to_string(), "0000a1ff".to_string()),
                ("a".to_string(), "000081a4".to_string()),
                ("TRAILER!!!".to_string(), "00000000".to_string()),
            ]
        );
    }
}
