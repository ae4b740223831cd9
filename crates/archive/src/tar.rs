//! The `tar` writer: POSIX ustar headers, with PAX extended headers for what
//! ustar cannot hold (long names and link targets, sizes from 8 GiB, large
//! ids), so nothing is ever truncated.

use std::io::{self, Write};

use crate::entry::{Entry, Kind, Sink};

const BLOCK: usize = 512;

pub struct TarWriter<W: Write> {
    inner: W,
    /// Data still owed for the current entry, and the padding after it.
    remaining: u64,
    padding: usize,
}

impl<W: Write> TarWriter<W> {
    pub fn new(inner: W) -> Self {
        TarWriter {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn write_header(&mut self, entry: &Entry) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut header = tar::Header::new_ustar();
        let (kind, link) = match &entry.kind {
            Kind::File => (tar::EntryType::Regular, None),
            Kind::Directory => (tar::EntryType::Directory, None),
            Kind::Symlink { target } => (tar::EntryType::Symlink, Some(target.as_str())),
            Kind::HardLink { target } => (tar::EntryType::Link, Some(target.as_str())),
            Kind::CharDevice { .. } => (tar::EntryType::Char, None),
            Kind::BlockDevice { .. } => (tar::EntryType::Block, None),
            Kind::Fifo => (tar::EntryType::Fifo, None),
        };
        header.set_entry_type(kind);
        // Directories carry a trailing slash in tar, as GNU tar writes them.
        let name = if entry.is_dir() {
            format!("{}/", entry.path)
        } else {
            entry.path.clone()
        };
        if name.len() > 100 || header.set_path(&name).is_err() || !name.is_ascii() {
            pax_record(&mut pax, "path", &name);
            header.set_path(truncate_name(&name))?;
        }
        if let Some(link) = link {
            // Written byte for byte: the tar crate's setter would normalise
            // `/` and `a/./b`, and the cpio keeps them as they are.
            if link.len() > 100 {
                pax_record(&mut pax, "linkpath", link);
                header.set_link_name(truncate_name(link))?;
            } else {
                let field = &mut header.as_old_mut().linkname;
                field.fill(0);
                field[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;
        if entry.size > USTAR_MAX_SIZE {
            pax_record(&mut pax, "size", &entry.size.to_string());
            header.set_size(0);
        } else {
            header.set_size(entry.size);
        }
        const USTAR_MAX_ID: u32 = 0o7_777_777;
        for (key, id) in [("uid", entry.uid), ("gid", entry.gid)] {
            if id > USTAR_MAX_ID {
                pax_record(&mut pax, key, &id.to_string());
            }
        }
        header.set_uid(u64::from(entry.uid.min(USTAR_MAX_ID)));
        header.set_gid(u64::from(entry.gid.min(USTAR_MAX_ID)));
        header.set_mode(entry.mode & 0o7777);
        header.set_mtime(entry.mtime.min(0o77_777_777_777));
        if let Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } = entry.kind {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        header.set_cksum();
        if !pax.is_empty() {
            let mut extended = tar::Header::new_ustar();
            extended.set_entry_type(tar::EntryType::XHeader);
            extended.set_path(truncate_name(&format!(
                "PaxHeaders/{}",
                basename(&entry.path)
            )))?;
            extended.set_size(pax.len() as u64);
            extended.set_mode(0o644);
            extended.set_mtime(entry.mtime.min(0o77_777_777_777));
            extended.set_cksum();
            self.inner.write_all(extended.as_bytes())?;
            self.inner.write_all(&pax)?;
            self.inner.write_all(&[0; BLOCK][..pad(pax.len() as u64)])?;
        }
        self.inner.write_all(header.as_bytes())
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The ustar field keeps a readable prefix; the PAX record has the real name.
fn truncate_name(name: &str) -> String {
    name.chars().filter(char::is_ascii).take(99).collect()
}

fn pad(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

impl<W: Write> Sink for TarWriter<W> {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other(format!(
                "tar: entry {} started before the previous one's data ended",
                entry.path
            )));
        }
        self.write_header(entry)?;
        self.remaining = entry.size;
        self.padding = pad(entry.size);
        self.finish_data()
    }

    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() as u64 > self.remaining {
            return Err(io::Error::other("tar: more data than the entry's size"));
        }
        self.inner.write_all(chunk)?;
        self.remaining -= chunk.len() as u64;
        self.finish_data()
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other("tar: stream ended inside an entry"));
        }
        self.inner.write_all(&[0; 2 * BLOCK])?;
        self.inner.flush()
    }
}

impl<W: Write> TarWriter<W> {
    fn finish_data(&mut self) -> io::Result<()> {
        if self.remaining == 0 && self.padding > 0 {
            self.inner.write_all(&[0; BLOCK][..self.padding])?;
            self.padding = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::write_bytes;

    #[test]
    fn long_names_and_links_survive_a_round_trip() {
        let long = format!("{}/file", "d".repeat(150));
        let mut out = Vec::new();
        let mut tar = TarWriter::new(&mut out);
        tar.entry(&Entry::directory("etc", 0o755, 7)).unwrap();
        write_bytes(&mut tar, &Entry::file(long.clone(), 0o644, 5, 7), b"hello").unwrap();
        tar.entry(&Entry::symlink("l", "x".repeat(200), 7)).unwrap();
        tar.finish().unwrap();

        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            seen.push((
                entry.path().unwrap().display().to_string(),
                link,
                entry.size(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("etc/".to_string(), None, 0),
                (long, None, 5),
                ("l".to_string(), Some("x".repeat(200)), 0)
            ]
        );
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", &"a".repeat(93));
        // 4 + 93 + 3 bytes of body, plus "103" itself.
        assert_eq!(out.len(), 103);
        assert!(out.starts_with(b"103 path="));
    }

    #[test]
    fn link_targets_are_kept_byte_for_byte() {
        let mut out = Vec::new();
        let mut tar = TarWriter::new(&mut out);
        for (path, target) in [("root", "/"), ("dots", "a/./b"), ("double", "a//b")] {
            tar.entry(&Entry::symlink(path, target, 0)).unwrap();
        }
        tar.finish().unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let targets: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().link_name_bytes().unwrap().into_owned())
            .collect();
        assert_eq!(
            targets,
            [b"/".to_vec(), b"a/./b".to_vec(), b"a//b".to_vec()]
        );
    }
}
