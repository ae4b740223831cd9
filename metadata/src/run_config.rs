//! `/run/config`: what the data source found, as files other containers
//! bind and read. LinuxKit's names (its pkg/metadata) and, beside them,
//! cloud-init's hyphenated names for the same values, from one table; the
//! user data raw in `userdata` and, when it is a JSON object, expanded into
//! a tree as LinuxKit does; the network configuration in `network/IFNAME`
//! (see `network`). Every file is written under a temporary name and
//! renamed, so a reader never sees half of one; nothing is written through
//! a link, and no name from the data leaves the directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::found::{Found, Metadata};

pub const DIR: &str = "/run/config";

/// Each metadata value: its file names (LinuxKit's, then cloud-init's
/// where it differs) and where it is in `Metadata`.
type Field = fn(&Metadata) -> Option<&String>;
const VALUES: &[(&[&str], Field)] = &[
    (&["hostname"], |m| m.hostname.as_ref()),
    (&["instance_id", "instance-id"], |m| m.instance_id.as_ref()),
    (&["local_hostname", "local-hostname"], |m| {
        m.local_hostname.as_ref()
    }),
    (&["local_ipv4", "local-ipv4"], |m| m.local_ipv4.as_ref()),
    (&["public_ipv4", "public-ipv4"], |m| m.public_ipv4.as_ref()),
    (&["availability_zone", "availability-zone"], |m| {
        m.availability_zone.as_ref()
    }),
    (&["instance_type", "instance-type"], |m| {
        m.instance_type.as_ref()
    }),
];

/// The JSON tree's limits: how deep, how many entries.
const MAX_DEPTH: usize = 16;
const MAX_ENTRIES: usize = 1000;

/// A file or directory to make, its path relative to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: PathBuf,
        mode: u32,
        content: Vec<u8>,
    },
    Dir {
        path: PathBuf,
        mode: u32,
    },
}

impl Entry {
    fn path(&self) -> &Path {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } => path,
        }
    }
}

fn file(path: impl Into<PathBuf>, mode: u32, content: impl Into<Vec<u8>>) -> Entry {
    Entry::File {
        path: path.into(),
        mode,
        content: content.into(),
    }
}

/// What goes into the directory, in order; a refused part of the user
/// data's tree is logged.
pub fn entries(found: &Found) -> Vec<Entry> {
    let mut out = vec![file("provider", 0o644, found.source.provider())];
    for (names, field) in VALUES {
        if let Some(value) = field(&found.metadata) {
            out.extend(
                names
                    .iter()
                    .map(|name| file(*name, 0o644, value.as_bytes())),
            );
        }
    }
    if !found.metadata.public_keys.is_empty() {
        out.push(Entry::Dir {
            path: "ssh".into(),
            mode: 0o700,
        });
        let mut keys = found.metadata.public_keys.join("\n");
        keys.push('\n');
        out.push(file("ssh/authorized_keys", 0o600, keys));
    }
    if let Some(user_data) = &found.user_data {
        out.push(file("userdata", 0o644, user_data.clone()));
        if let Ok(Value::Object(tree)) = serde_json::from_slice::<Value>(user_data) {
            let mut taken: BTreeMap<PathBuf, bool> = out
                .iter()
                .map(|e| (e.path().to_path_buf(), matches!(e, Entry::Dir { .. })))
                .collect();
            let mut count = 0;
            for (name, node) in &tree {
                expand(
                    Path::new(""),
                    name,
                    node,
                    0,
                    &mut count,
                    &mut taken,
                    &mut out,
                );
            }
        }
    }
    out
}

/// LinuxKit's JSON user data: `{"dir": {"perm": "0755", "entries":
/// {"file": {"perm": "0644", "content": "..."}}}}`; also its first form, a
/// directory whose value maps file names straight to files.
fn expand(
    parent: &Path,
    name: &str,
    node: &Value,
    depth: usize,
    count: &mut usize,
    taken: &mut BTreeMap<PathBuf, bool>,
    out: &mut Vec<Entry>,
) {
    let shown = parent.join(name);
    let refuse = |why: &str| println!("userdata: {}: {why}; skipped", shown.display());
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return println!(
            "userdata: {name:?} in {:?}: not a plain name; skipped",
            parent.display().to_string()
        );
    }
    if depth >= MAX_DEPTH || *count >= MAX_ENTRIES {
        return refuse(&format!(
            "more than {MAX_DEPTH} levels or {MAX_ENTRIES} entries"
        ));
    }
    let Value::Object(map) = node else {
        return refuse("not a JSON object");
    };
    let path = parent.join(name);
    *count += 1;
    let mode = match map.get("perm") {
        None => None,
        Some(Value::String(perm)) => match u32::from_str_radix(perm, 8) {
            Ok(mode) if mode <= 0o7777 => Some(mode),
            _ => return refuse(&format!("perm {perm:?} is not an octal mode")),
        },
        Some(_) => return refuse("perm is not a string"),
    };
    let is_file = map.contains_key("content");
    // A directory may be one the metadata made (`ssh`); nothing else twice.
    match taken.insert(path.clone(), !is_file) {
        Some(true) if !is_file => {}
        Some(_) => return refuse("already written"),
        None => {}
    }
    if let Some(content) = map.get("content") {
        let Value::String(content) = content else {
            return refuse("content is not a string");
        };
        out.push(file(path, mode.unwrap_or(0o644), content.as_bytes()));
        return;
    }
    let children = match map.get("entries") {
        Some(Value::Object(children)) => children,
        Some(_) => return refuse("entries is not an object"),
        // LinuxKit's first form: the object's members are the files.
        None => map,
    };
    out.push(Entry::Dir {
        path: path.clone(),
        mode: mode.unwrap_or(0o755),
    });
    for (child, node) in children {
        if child == "perm" && !map.contains_key("entries") {
            continue;
        }
        expand(&path, child, node, depth + 1, count, taken, out);
    }
}

/// Writes what `found` holds into `dir`, and the network configuration
/// into `dir/network`; each failure is one logged line.
pub fn write(dir: &Path, found: &Found) {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
    {
        return println!("{}: {e}; nothing written", dir.display());
    }
    for entry in entries(found) {
        if let Err(e) = write_entry(dir, &entry) {
            println!("{}: {e}", dir.join(entry.path()).display());
        }
    }
    if let Some(network) = &found.network {
        crate::network::write(dir, network);
    }
}

/// Makes one entry under `dir`: parents as plain directories (never
/// through a link), a file under a temporary name renamed over its target.
pub fn write_entry(dir: &Path, entry: &Entry) -> Result<(), String> {
    let relative = entry.path();
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err("not a relative path of plain names".into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut at = dir.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    let (last, parents) = parents.split_last().ok_or("an empty path")?;
    for part in parents {
        at.push(part);
        ensure_dir(&at, 0o755)?;
    }
    at.push(last);
    match entry {
        Entry::Dir { mode, .. } => ensure_dir(&at, *mode),
        Entry::File { mode, content, .. } => write_atomically(&at, *mode, content),
    }
}

/// A directory that exists, or is made with `mode`; a link or a file in
/// its place is an error.
fn ensure_dir(path: &Path, mode: u32) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `content` into `path` through a new file beside it (created, never
/// opened through a link), renamed over it: a reader sees the old file or
/// the new one. The mode is set exactly (no umask).
pub fn write_atomically(path: &Path, mode: u32, content: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err("a directory is in the way".into());
    }
    let name = path.file_name().ok_or("no file name")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut f| {
            f.write_all(content)?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
