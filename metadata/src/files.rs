//! Files on the host as cloud-config writes them: paths taken from a
//! document, joined under the host's root; contents written under a
//! temporary name in the same directory and renamed over the old file, so
//! a reader sees the old file or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a path from a document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} is not an absolute path")]
    Relative(String),
    #[error("{0:?} has a `..` component")]
    Parent(String),
    #[error("{0:?} names no file")]
    NoFile(String),
    #[error(
        "{0:?} is not under /etc, /home, /run, /var or /tmp, the directories the metadata container shares with the host"
    )]
    NotShared(String),
}

/// Checks an absolute path from a document: no `..`, not `/` itself.
pub fn check(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::Relative(path.to_string()));
    }
    let components: Vec<Component<'_>> = Path::new(path).components().collect();
    if components.contains(&Component::ParentDir) {
        return Err(PathError::Parent(path.to_string()));
    }
    if !components.iter().any(|c| matches!(c, Component::Normal(_))) {
        return Err(PathError::NoFile(path.to_string()));
    }
    Ok(())
}

/// [`check`], and under one of [`SHARED`]: a path `write_files` writes or
/// `mounts` mounts on.
pub fn check_shared(path: &str) -> Result<(), PathError> {
    check(path)?;
    if !is_shared(path) {
        return Err(PathError::NotShared(path.to_string()));
    }
    Ok(())
}

/// An absolute path of the host, under `root` (`/` on the host itself, a
/// temporary directory in tests).
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The permission bits of a file, if it exists.
pub fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.mode() & 0o7777)
}

/// The directories the metadata container shares with the host (its own
/// root is a scratch layer, `/root` and the rest of `/` the read-only
/// image): what `write_files` writes and `mounts` mounts must be under
/// one of them to reach the host.
pub const SHARED: [&str; 5] = ["/etc", "/home", "/run", "/var", "/tmp"];

/// Whether a checked absolute path is under one of [`SHARED`] (not one of
/// them itself).
pub fn is_shared(path: &str) -> bool {
    SHARED.iter().any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') && !rest.trim_matches('/').is_empty())
    })
}

/// Refuses `path` when one of its existing components (from `/` to the
/// last, on the host `/` is the root) is a symbolic link: root writes into
/// directories users own, and a link there must not send it elsewhere.
pub fn no_links(path: &Path) -> io::Result<()> {
    let mut at = PathBuf::new();
    for component in path.components() {
        at.push(component);
        if !matches!(component, Component::Normal(_)) {
            continue;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; not followed, nothing written",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open flags that refuse a symbolic link as the last component.
fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    options
}

/// Reads a file that is not a link and has no link among its directories.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    no_links(path)?;
    let mut bytes = Vec::new();
    no_follow().read(true).open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read`] as text; a missing file is empty.
pub fn read_text_or_empty(path: &Path) -> io::Result<String> {
    match read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Opens a file to append to (made with `mode` when missing, its parents
/// 0755), never through a link.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    no_links(path)?;
    if let Some(parent) = path.parent() {
        make_parents(parent)?;
    }
    no_follow().append(true).create(true).mode(mode).open(path)
}

/// Makes `dir` and its missing parents (0755), refusing links on the way.
fn make_parents(dir: &Path) -> io::Result<()> {
    no_links(dir)?;
    let mut at = PathBuf::new();
    for component in dir.components() {
        at.push(component);
        if !matches!(component, Component::Normal(_)) || at.is_dir() {
            continue;
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Made by someone else meanwhile: a directory still, not a link.
        no_links(&at)?;
    }
    Ok(())
}

/// A name nobody can guess ahead: std's randomly keyed hasher.
fn unpredictable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Writes `bytes` to `path` with `mode` (and owner `uid:gid` if given),
/// atomically; the parent directories are made (0755) when missing. The
/// new file is created under an unpredictable name, never through a link,
/// and renamed over `path`; a link anywhere on `path` is refused.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    no_links(path)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    make_parents(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{name}.{:016x}.berth-new", unpredictable()));
    let mut file = no_follow()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    let result = (|| {
        file.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        // After chown, which clears set-id bits.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Makes a directory (and its parents) with `mode`, owned by `owner`
/// when given; an existing one is left as it is. A link on the way, or in
/// its place, is refused.
pub fn make_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    no_links(path)?;
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        make_parents(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(path)?;
    let dir = no_follow()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECTORY).bits() as i32)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))?;
    }
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check("/etc/motd"), Ok(()));
        assert_eq!(
            check("etc/motd"),
            Err(PathError::Relative("etc/motd".into()))
        );
        assert_eq!(
            check("/etc/../root/x"),
            Err(PathError::Parent("/etc/../root/x".into()))
        );
        assert_eq!(check("/"), Err(PathError::NoFile("/".into())));
        assert_eq!(
            under(Path::new("/srv/root"), "/etc/motd"),
            Path::new("/srv/root/etc/motd")
        );
    }

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        write_atomic(&path, b"one", 0o600, None).unwrap();
        write_atomic(&path, b"two", 0o640, None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), Some(0o640));
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
    }

    /// Links planted where root writes: at the temporary name the agent
    /// once used, in place of a directory, in place of the file. Nothing
    /// behind a link is read, truncated, chowned or written.
    #[test]
    fn links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root's\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&secret, home.join(".keys.berth-new")).unwrap();
        write_atomic(&home.join("keys"), b"new", 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's\n");
        assert_eq!(mode_of(&secret), Some(0o644));

        std::os::unix::fs::symlink(dir.path(), home.join("up")).unwrap();
        let refused = write_atomic(&home.join("up/secret"), b"x", 0o600, None).unwrap_err();
        assert!(
            refused.to_string().contains("is a symbolic link"),
            "{refused}"
        );
        assert!(make_dir(&home.join("up/new"), 0o700, None).is_err());
        assert!(!dir.path().join("new").exists());
        assert!(open_append(&home.join("up/secret"), 0o600).is_err());

        std::os::unix::fs::symlink(&secret, home.join("linked")).unwrap();
        assert!(read(&home.join("linked")).is_err());
        assert!(read_text_or_empty(&home.join("linked")).is_err());
        assert!(open_append(&home.join("linked"), 0o600).is_err());
        assert!(write_atomic(&home.join("linked"), b"x", 0o600, None).is_err());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's\n");
        assert_eq!(read_text_or_empty(&home.join("none")).unwrap(), "");
    }

    #[test]
    fn shared_directories() {
        for path in ["/etc/x", "/home/a/b", "/run/x", "/var/lib/x", "/tmp/x"] {
            assert!(is_shared(path), "{path}");
        }
        for path in [
            "/root/x",
            "/usr/bin/x",
            "/mnt/data",
            "/etc",
            "/var/",
            "/etcetera/x",
            "/opt/x",
        ] {
            assert!(!is_shared(path), "{path}");
        }
    }
}
