//! The tree being written: a sink wrapper for everything assembly emits.
//!
//! It knows which directories exist, so parents are made exactly once; it
//! applies the build's time policy ([`Clock`]); and it keeps each source (an
//! image, a bundle, the modules tarball) from writing through a symbolic
//! link or file that source wrote itself. What goes into the tree is the
//! callers' business (`assemble`, `kernel`).

use std::collections::HashSet;
use std::io::{self, Read};

use archive::Clock;
use archive::entry::{self, Entry, Sink, copy_entry};

/// The sink wrapper that knows which directories exist, so that parents are
/// made exactly once, that applies the time policy, and that keeps each
/// source (an image, a bundle, the modules tarball) from writing through a
/// symbolic link or file it wrote itself.
pub(crate) struct Tree<'a> {
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) directories: HashSet<String>,
    pub(crate) clock: Clock,
    /// What the current source wrote that is not a directory.
    pub(crate) scope: Option<HashSet<String>>,
}

impl Tree<'_> {
    pub(crate) fn mtime(&self) -> u64 {
        self.clock.made()
    }

    /// Starts a new source: its entries may not pass through what it wrote
    /// as a non-directory. `None` for `files:`, which may name any path.
    pub(crate) fn scope(&mut self, checked: bool) {
        self.scope = checked.then(HashSet::new);
    }

    pub(crate) fn write(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut entry = entry.clone();
        entry.mtime = self.clock.cap(entry.mtime);
        if let Some(scope) = &mut self.scope {
            if let Some(ancestor) = entry::ancestors(&entry.path).find(|a| scope.contains(*a)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "entry {:?} refused: it passes through {ancestor:?}, which is not a directory",
                        entry.path
                    ),
                ));
            }
            if entry.is_dir() {
                scope.remove(&entry.path);
            } else {
                scope.insert(entry.path.clone());
            }
        }
        self.parents(&entry.path, 0o755, 0, 0)?;
        if entry.is_dir() {
            self.directories.insert(entry.path.clone());
        }
        copy_entry(self.sink, &entry, data)
    }

    /// Makes the missing ancestors of `path` with the given metadata.
    pub(crate) fn parents(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        for ancestor in entry::ancestors(path) {
            if self.directories.insert(ancestor.to_string()) {
                let mut dir = Entry::directory(ancestor, mode, self.mtime());
                dir.uid = uid;
                dir.gid = gid;
                self.sink.entry(&dir)?;
            }
        }
        Ok(())
    }

    pub(crate) fn directory(&mut self, path: &str) -> io::Result<()> {
        if !self.directories.contains(path) {
            let dir = Entry::directory(path, 0o755, self.mtime());
            self.write(&dir, &mut io::empty())?;
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, path: &str, mode: u32, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry::file(path, mode, bytes.len() as u64, self.mtime());
        self.write(&entry, &mut &bytes[..])
    }
}
