//! The all-or-nothing commit of a build's artifacts.
//!
//! Every artifact is written under a temporary name (`.berth-XXXXXX`) in the
//! output directory and renamed into place only when all of them are
//! complete, so a failed build leaves nothing behind and never replaces a
//! good artifact with half of a new one. What goes into each file is the
//! format writers' business.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Artifacts being written, renamed into place by [`Pending::commit`] and
/// deleted if dropped before.
pub struct Pending {
    directory: PathBuf,
    files: Vec<(NamedTempFile, Option<PathBuf>)>,
}

impl Pending {
    pub fn new(directory: &Path) -> Pending {
        Pending {
            directory: directory.to_path_buf(),
            files: Vec::new(),
        }
    }

    /// A new temporary file; `name` is what it becomes on commit, `None` for
    /// scratch files that are only deleted.
    pub(super) fn create(&mut self, name: Option<&str>) -> io::Result<(usize, File)> {
        let temp = tempfile::Builder::new()
            .prefix(".berth-")
            .tempfile_in(&self.directory)?;
        let file = temp.as_file().try_clone()?;
        self.files
            .push((temp, name.map(|n| self.directory.join(n))));
        Ok((self.files.len() - 1, file))
    }

    /// A small artifact whose bytes are known: `name` in the output
    /// directory, committed with the others.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let (_, mut file) = self.create(Some(name))?;
        file.write_all(bytes)
    }

    /// The name (in the output directory) and sha256 digest of every
    /// artifact written so far, sorted by name; when two share a name, the
    /// one committed last.
    pub fn digests(&self) -> io::Result<Vec<(String, String)>> {
        let mut named = std::collections::BTreeMap::new();
        for (temp, destination) in &self.files {
            let Some(destination) = destination else {
                continue;
            };
            let name = destination
                .strip_prefix(&self.directory)
                .unwrap_or(destination);
            named.insert(name.to_string_lossy().into_owned(), temp.path());
        }
        named
            .into_iter()
            .map(|(name, path)| Ok((name, super::media::file_digest(path)?)))
            .collect()
    }

    pub(super) fn path(&self, index: usize) -> &Path {
        self.files[index].0.path()
    }

    pub(super) fn rename(&mut self, index: usize, name: &str) {
        self.files[index].1 = Some(self.directory.join(name));
    }

    /// Renames every artifact into place; returns their paths.
    pub fn commit(self) -> io::Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for (temp, destination) in self.files {
            match destination {
                Some(destination) => {
                    temp.as_file().sync_all()?;
                    // Artifacts are ordinary files: 0644, not tempfile's 0600.
                    use std::os::unix::fs::PermissionsExt;
                    temp.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
                    temp.persist(&destination).map_err(|e| e.error)?;
                    done.push(destination);
                }
                None => drop(temp),
            }
        }
        Ok(done)
    }
}
