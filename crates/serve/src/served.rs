//! What a server hands out: a set of URL names, each naming one file.
//!
//! A request's path is decoded once and looked up in this set; it is never
//! joined onto a directory. A directory's set is listed again for every
//! request, so a rebuild is seen at once, and each file is opened when it is
//! asked for: one that has vanished is a 404.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

use crate::ServeError;

/// The subdirectory of a served directory that holds per-machine overrides:
/// `machines/MAC/cmdline` and `machines/MAC/build` (docs/pxe.md).
pub const MACHINES: &str = "machines";

/// A set of URL names → files.
#[derive(Debug, Clone)]
pub struct Served {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// A directory (canonical): its regular files at the top level and
    /// under `machines/*/`, hidden files (`.name`) left out, and symbolic
    /// links only when they resolve inside it.
    Directory(PathBuf),
    /// Files named explicitly, e.g. the blobs of an OCI artifact by title.
    Files(BTreeMap<String, PathBuf>),
}

/// A file opened for one response.
pub(crate) struct Opened {
    pub file: File,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl Served {
    /// The regular files of `dir`: `NAME` for each file at its top level and
    /// `machines/MAC/NAME` for the per-machine overrides.
    pub fn from_dir(dir: &Path) -> Result<Served, ServeError> {
        let error = |source| ServeError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(dir).map_err(error)?;
        if !metadata.is_dir() {
            return Err(ServeError::NotADirectory(dir.to_path_buf()));
        }
        let root = dir.canonicalize().map_err(error)?;
        Ok(Served {
            source: Source::Directory(root),
        })
    }

    /// Exactly these files under these names (a name is a URL path without
    /// its leading `/`, e.g. `host-kernel` or `machines/52-54-00-12-34-56/cmdline`).
    pub fn from_files(files: BTreeMap<String, PathBuf>) -> Served {
        Served {
            source: Source::Files(files),
        }
    }

    /// The served names and their files, as they are now.
    pub fn files(&self) -> BTreeMap<String, PathBuf> {
        match &self.source {
            Source::Files(files) => files.clone(),
            Source::Directory(root) => {
                let mut files = BTreeMap::new();
                for (name, path) in entries(root) {
                    if name == MACHINES && path.is_dir() && inside(root, &path) {
                        for (machine, directory) in entries(&path) {
                            for (file, path) in entries(&directory) {
                                if is_file_inside(root, &path) {
                                    files.insert(format!("{MACHINES}/{machine}/{file}"), path);
                                }
                            }
                        }
                    } else if is_file_inside(root, &path) {
                        files.insert(name, path);
                    }
                }
                files
            }
        }
    }

    /// Opens the file served as `name`, if there is one now.
    pub(crate) fn open(&self, name: &str) -> Option<Opened> {
        let path = self.files().remove(name)?;
        let file = match &self.source {
            Source::Files(_) => File::open(&path).ok()?,
            Source::Directory(root) => {
                // Checked again at opening: a link may have changed since
                // the listing. The canonical path has no links left, so
                // NOFOLLOW refuses one swapped in at its last component,
                // and NONBLOCK keeps a FIFO swapped in from blocking.
                let canonical = path.canonicalize().ok()?;
                if !canonical.starts_with(root) {
                    return None;
                }
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                File::from(rustix::fs::open(&canonical, flags, Mode::empty()).ok()?)
            }
        };
        let metadata = file.metadata().ok()?;
        if !metadata.is_file() {
            return None;
        }
        Some(Opened {
            file,
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    /// Reads a small served file (a command line, a build name) as text.
    pub(crate) fn read_text(&self, name: &str) -> Option<String> {
        use std::io::Read;
        let mut text = String::new();
        self.open(name)?
            .file
            .take(64 * 1024)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    }
}

/// The entries of a directory with UTF-8 names that are not hidden.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| (name, entry.path()))
        })
        .collect()
}

fn inside(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|p| p.starts_with(root))
}

fn is_file_inside(root: &Path, path: &Path) -> bool {
    path.is_file() && inside(root, path)
}
