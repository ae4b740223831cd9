//! Debian packages as a package image takes them, distroless-style: the
//! dependency closure of the packages `build.yml` names (asked of the
//! machine's apt, and kept in the berth cache, keyed by apt's package lists),
//! their `.deb`s (downloaded with `apt-get download` into the cache, checked
//! against apt's SHA256) and their files (streamed out of `dpkg-deb
//! --fsys-tarfile` into the image's [`Tree`], without maintainer scripts,
//! documentation or what `prune` names).
//!
//! What the image does with the files (layout, layer, manifest) is left to
//! [`super::layer`], and the kernel's layout to [`crate::kernel::debian`].
//! The programs themselves run through [`crate::tools`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use archive::entry::{self, Kind};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::layer::{Data, Tree};
use crate::tools::{self, ToolError};

/// One package of a closure: the version apt would install, and the SHA256
/// of its `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deb {
    pub version: String,
    pub sha256: String,
}

/// Package name → what is taken of it.
pub type Closure = BTreeMap<String, Deb>;

/// What no image takes from a package: documentation (but for each
/// package's `copyright`), manual pages, translations of messages,
/// lintian's overrides.
pub const NEVER_TAKEN: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/doc-base",
];

/// What went wrong with a Debian package (or with several: a closure is
/// asked for all of a `build.yml`'s packages at once).
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("Debian package {package}")]
    Tool {
        package: String,
        #[source]
        source: ToolError,
    },
    #[error("Debian package {package}: {message}")]
    Refused { package: String, message: String },
    #[error("Debian package {package}")]
    Io {
        package: String,
        #[source]
        source: io::Error,
    },
    #[error("apt's package lists in {dir}")]
    Lists {
        dir: String,
        #[source]
        source: io::Error,
    },
}

/// Bumped when what a cached closure holds, or how it is computed, changes.
const CLOSURE_FORMAT: &str = "berth apt closure 1";

/// The machine's apt as pkg uses it, with what it answered kept in the
/// berth cache: `.deb`s under `debs/`, closures under `apt-closures/`.
#[derive(Debug)]
pub struct Apt {
    debs: PathBuf,
    closures: PathBuf,
    offline: bool,
    /// The names, sizes and times of apt's package lists, read once.
    lists: OnceLock<String>,
}

impl Apt {
    /// apt, with its answers kept in the berth cache directory `cache`;
    /// `offline` never downloads.
    pub fn new(cache: &Path, offline: bool) -> Apt {
        Apt {
            debs: cache.join("debs"),
            closures: cache.join("apt-closures"),
            offline,
            lists: OnceLock::new(),
        }
    }

    /// The packages and everything they depend on (Depends and
    /// Pre-Depends, not Recommends), each with the version apt would
    /// install and its checksum; see [`walk`]. Asked of apt once for the
    /// same packages and package lists, then read from the cache.
    pub fn closure(
        &self,
        packages: &[String],
        exclude: &[String],
        kernel_only: bool,
    ) -> Result<Closure, DebianError> {
        if packages.is_empty() {
            return Ok(Closure::new());
        }
        let all = packages.join(" ");
        let mut key = Sha256::new();
        key.update(CLOSURE_FORMAT);
        key.update(format!("\0lists {}", self.lists(&all)?));
        key.update(format!("\0packages {all}"));
        key.update(format!("\0exclude {}", exclude.join(" ")));
        key.update(format!("\0kernel {kernel_only}"));
        let path = self.closures.join(format!("{:x}.json", key.finalize()));
        // A closure that cannot be read is asked for again.
        if let Some(closure) = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        {
            return Ok(closure);
        }
        let closure = ask_closure(packages, exclude, kernel_only)?;
        self.keep(&path, &closure)
            .map_err(|source| DebianError::Io {
                package: all,
                source,
            })?;
        Ok(closure)
    }

    fn keep(&self, path: &Path, closure: &Closure) -> io::Result<()> {
        fs::create_dir_all(&self.closures)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&self.closures)?;
        serde_json::to_writer(&mut temp, closure)?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The [`fingerprint`] of apt's package lists: what `apt-get update`
    /// changes. Where they are is asked of `apt-config` (once).
    fn lists(&self, packages: &str) -> Result<String, DebianError> {
        if let Some(lists) = self.lists.get() {
            return Ok(lists.clone());
        }
        let shell =
            tools::text(Command::new("apt-config").args(["shell", "LISTS", "Dir::State::lists/d"]))
                .map_err(|source| DebianError::Tool {
                    package: packages.into(),
                    source,
                })?;
        let dir = shell
            .trim()
            .strip_prefix("LISTS='")
            .and_then(|rest| rest.strip_suffix('\''))
            .ok_or_else(|| DebianError::Refused {
                package: packages.into(),
                message: format!("apt-config gives no directory for the package lists: {shell:?}"),
            })?;
        let lists = fingerprint(Path::new(dir)).map_err(|source| DebianError::Lists {
            dir: dir.into(),
            source,
        })?;
        let _ = self.lists.set(lists.clone());
        Ok(lists)
    }

    /// The `.deb` of `name`, from the cache, else downloaded (unless
    /// offline) and checked against its SHA256.
    pub fn download(&self, name: &str, deb: &Deb) -> Result<PathBuf, DebianError> {
        let fail = |message: String| DebianError::Refused {
            package: name.to_string(),
            message,
        };
        let io = |source| DebianError::Io {
            package: name.to_string(),
            source,
        };
        fs::create_dir_all(&self.debs).map_err(io)?;
        if let Some(path) = find(&self.debs, name, &deb.sha256).map_err(io)? {
            return Ok(path);
        }
        if self.offline {
            return Err(fail(format!(
                "{name}={} is not in {} and berth is offline",
                deb.version,
                self.debs.display()
            )));
        }
        // Into a directory of its own, then renamed: builds running side by
        // side never see each other's partial downloads.
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&self.debs)
            .map_err(io)?;
        tools::output(
            Command::new("apt-get")
                .args(["download", "-q", &format!("{name}={}", deb.version)])
                .current_dir(temp.path()),
        )
        .map_err(|source| DebianError::Tool {
            package: name.to_string(),
            source,
        })?;
        let downloaded = find(temp.path(), name, &deb.sha256)
            .map_err(io)?
            .ok_or_else(|| {
                fail(format!(
                    "the downloaded .deb does not have SHA256 {}",
                    deb.sha256
                ))
            })?;
        let path = self
            .debs
            .join(downloaded.file_name().expect("a found .deb has a name"));
        fs::rename(&downloaded, &path).map_err(io)?;
        Ok(path)
    }
}

/// The `*_Packages` lists (compressed or not) in apt's lists directory
/// `dir`, each with its size and modification time, as one line.
fn fingerprint(dir: &Path) -> io::Result<String> {
    let mut lists = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_list = name
            .split_once("_Packages")
            .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with('.'));
        if !is_list {
            continue;
        }
        let meta = entry.metadata()?;
        let modified = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        lists.insert(name, (meta.len(), modified.as_nanos()));
    }
    Ok(format!("{} {lists:?}", dir.display()))
}

/// A `.deb` of `name` in `dir` whose SHA256 is `sha256`.
fn find(dir: &Path, name: &str, sha256: &str) -> io::Result<Option<PathBuf>> {
    let prefix = format!("{name}_");
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".deb") {
            let mut hash = Sha256::new();
            io::copy(&mut fs::File::open(&path)?, &mut hash)?;
            if format!("{:x}", hash.finalize()) == sha256 {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// The closure, asked of apt: one recursive listing (it follows every
/// branch, excluded ones too), the [`walk`] that takes the first allowed
/// alternative, then one `apt-cache show` for all of them.
fn ask_closure(
    packages: &[String],
    exclude: &[String],
    kernel_only: bool,
) -> Result<Closure, DebianError> {
    let asking = |source: ToolError| DebianError::Tool {
        package: packages.join(" "),
        source,
    };
    let listing = tools::text(
        Command::new("apt-cache")
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(packages),
    )
    .map_err(asking)?;
    let names = walk(&dependency_graph(&listing), packages, exclude, kernel_only);
    let names: Vec<String> = names.into_iter().collect();
    let show = tools::text(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(&names),
    )
    .map_err(|source| DebianError::Tool {
        package: names.join(" "),
        source,
    })?;
    let stanzas = stanzas(&show);
    let mut closure = Closure::new();
    for name in names {
        let found = stanzas.get(&name);
        let field = |key: &str| found.and_then(|f| f.get(key)).cloned();
        let (Some(version), Some(sha256)) = (field("Version"), field("SHA256")) else {
            return Err(DebianError::Refused {
                package: name,
                message: "apt-cache show gives no Version or SHA256".into(),
            });
        };
        closure.insert(name, Deb { version, sha256 });
    }
    Ok(closure)
}

/// The names of the closure: of alternatives the first not excluded is
/// taken, and a virtual package is its first provider; an excluded package
/// ends its branch. With `kernel_only`, only the packages themselves and
/// the `linux-image-*` packages they lead to.
fn walk(
    graph: &BTreeMap<String, Vec<Vec<String>>>,
    packages: &[String],
    exclude: &[String],
    kernel_only: bool,
) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = packages.iter().cloned().collect();
    let mut frontier: Vec<String> = packages.to_vec();
    while let Some(package) = frontier.pop() {
        let groups = graph.get(&package).map(Vec::as_slice).unwrap_or_default();
        for group in groups {
            let Some(chosen) = group.iter().find(|name| !exclude.contains(name)) else {
                continue;
            };
            if (!kernel_only || chosen.starts_with("linux-image-")) && names.insert(chosen.clone())
            {
                frontier.push(chosen.clone());
            }
        }
    }
    names
}

/// `apt-cache show` output by package: each stanza's fields (the first
/// stanza of a package wins).
fn stanzas(show: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for stanza in show.split("\n\n") {
        let fields: BTreeMap<String, String> = stanza
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        if let Some(name) = fields.get("Package").cloned() {
            out.entry(name).or_insert(fields);
        }
    }
    out
}

/// `apt-cache depends --recurse` output as package → its dependency
/// groups ([`dependencies`]); virtual packages' own entries are left out.
fn dependency_graph(listing: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut graph = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |block: Option<(String, String)>| {
        if let Some((name, text)) = block {
            graph.entry(name).or_insert_with(|| dependencies(&text));
        }
    };
    for line in listing.lines() {
        if line.starts_with(' ') {
            if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        finish(current.take());
        if !line.starts_with('<') && !line.is_empty() {
            let name = line
                .trim()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            current = Some((name, String::new()));
        }
    }
    finish(current.take());
    graph
}

/// The dependencies in `apt-cache depends` output, as groups of
/// alternatives, each a concrete package (a virtual one stands for its
/// first provider, listed below it).
fn dependencies(listing: &str) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut group: Vec<String> = Vec::new();
    let mut lines = listing.lines().peekable();
    while let Some(line) = lines.next() {
        let (alternative, rest) = match line.strip_prefix(" |") {
            Some(rest) => (true, rest),
            None => match line.strip_prefix("  ") {
                Some(rest) if !rest.starts_with(' ') => (false, rest),
                _ => continue,
            },
        };
        let Some((_, name)) = rest.split_once(": ") else {
            continue;
        };
        let name = name.trim();
        let concrete = match name.strip_prefix('<') {
            // A virtual package: its providers follow, indented deeper.
            Some(_) => lines
                .peek()
                .filter(|next| next.starts_with("    "))
                .map(|next| {
                    next.trim()
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }),
            None => Some(name.split(':').next().unwrap_or(name).to_string()),
        };
        group.extend(concrete);
        if !alternative {
            groups.push(std::mem::take(&mut group));
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The files of the `.deb` of `package`, streamed from `dpkg-deb
/// --fsys-tarfile` into `tree` (their bytes into its spool), without
/// [`NEVER_TAKEN`] and `prune`. A later package's file replaces an earlier
/// one's; a directory seen again (every package has `usr/`) keeps the first.
pub fn unpack(
    package: &str,
    deb: &Path,
    tree: &mut Tree,
    prune: &[String],
) -> Result<(), DebianError> {
    let tool = |source| DebianError::Tool {
        package: package.into(),
        source,
    };
    let io = |source| DebianError::Io {
        package: package.into(),
        source,
    };
    let mut command = Command::new("dpkg-deb");
    command.arg("--fsys-tarfile").arg(deb);
    // dpkg-deb's multi-threaded xz decoder holds whole blocks for each
    // thread: about 64 MB each for a kernel package. One thread keeps a
    // package build's memory the same on every machine, for some 15% more
    // time unpacking a kernel; `@pkg:` images are built side by side
    // anyway. (The variable, unlike --threads-max, is ignored by a dpkg-deb
    // that predates it.)
    command.env("DPKG_DEB_THREADS_MAX", "1");
    let mut stream = tools::stream(command).map_err(tool)?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 16, &mut stream));
    let pruned = |path: &str| {
        // Licences stay with what they license.
        let licence = under(path, "usr/share/doc") && path.ends_with("/copyright");
        (NEVER_TAKEN.iter().any(|p| under(path, p)) && !licence)
            || prune.iter().any(|p| under(path, p))
    };
    for item in archive.entries().map_err(io)? {
        let mut item = item.map_err(io)?;
        let entry = entry::from_tar(&item).map_err(|message| DebianError::Refused {
            package: package.into(),
            message,
        })?;
        let Some(entry) = entry else { continue };
        let link_to_pruned = matches!(&entry.kind, Kind::HardLink { target } if pruned(target));
        if pruned(&entry.path) || link_to_pruned {
            continue;
        }
        if entry.is_dir() && tree.entries.contains_key(&entry.path) {
            continue;
        }
        let data = if entry.kind == Kind::File && entry.size > 0 {
            tree.spool.append(&mut item, entry.size).map_err(io)?
        } else {
            Data::None
        };
        tree.entries.insert(entry.path.clone(), (entry, data));
    }
    drop(archive);
    stream.finish().map_err(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recursive_listing_becomes_a_graph() {
        let listing = "\
chrony
  Depends: adduser
  Depends: libc6
<debconf-2.0>
adduser
  Depends: passwd
libc6
  Depends: libgcc-s1
";
        let graph = dependency_graph(listing);
        assert_eq!(
            graph["chrony"],
            [vec!["adduser".to_string()], vec!["libc6".into()]]
        );
        assert_eq!(graph["adduser"], [vec!["passwd".to_string()]]);
        assert_eq!(graph["libc6"], [vec!["libgcc-s1".to_string()]]);
        assert!(!graph.contains_key("<debconf-2.0>"));
    }

    #[test]
    fn an_excluded_package_ends_its_branch() {
        let listing = "\
chrony
  Depends: adduser
  Depends: libc6
adduser
  Depends: passwd
libc6
  Depends: libgcc-s1
";
        let graph = dependency_graph(listing);
        let names = walk(&graph, &["chrony".into()], &["adduser".into()], false);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["chrony", "libc6", "libgcc-s1"]
        );
    }

    #[test]
    fn the_lists_fingerprint_follows_the_package_lists_only() {
        let dir = tempfile::tempdir().unwrap();
        let list = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        list(
            "deb.example_dists_stable_main_binary-amd64_Packages.lz4",
            "a",
        );
        list("deb.example_dists_stable_InRelease", "signed");
        let before = fingerprint(dir.path()).unwrap();
        assert!(before.contains("_Packages.lz4"), "{before}");
        assert!(!before.contains("InRelease"), "{before}");
        list("deb.example_dists_stable_InRelease", "signed again");
        list("lock", "");
        assert_eq!(fingerprint(dir.path()).unwrap(), before);
        list(
            "deb.example_dists_stable_main_binary-amd64_Packages.lz4",
            "ab",
        );
        assert_ne!(fingerprint(dir.path()).unwrap(), before);
        list("deb.example_dists_updates_main_binary-amd64_Packages", "c");
        assert!(fingerprint(dir.path()).unwrap().contains("updates"));
    }

    #[test]
    fn apt_cache_show_output_is_read_by_package() {
        let show = "Package: libc6\nVersion: 2.36-9\nDescription: GNU C\n library\nSHA256: ab\n\nPackage: zlib1g\nVersion: 1:1.2.13\nSHA256: cd\n\nPackage: libc6\nVersion: 2.31\nSHA256: ef\n";
        let found = stanzas(show);
        assert_eq!(found["libc6"]["Version"], "2.36-9");
        assert_eq!(found["libc6"]["SHA256"], "ab");
        assert_eq!(found["zlib1g"]["Version"], "1:1.2.13");
    }

    #[test]
    fn pruning_takes_whole_path_components() {
        assert!(under("usr/share/doc", "usr/share/doc"));
        assert!(under("usr/share/doc/libc6/copyright", "/usr/share/doc/"));
        assert!(!under("usr/share/doc-base/x", "usr/share/doc"));
        assert!(!under("usr/share", "usr/share/doc"));
    }

    #[test]
    fn dependencies_take_the_first_alternative_and_a_virtual_packages_provider() {
        let listing = "\
openssh-server
  PreDepends: init-system-helpers
  Depends: lsb-base
    sysvinit-utils
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libsystemd0
    libelogind0
  Depends: <no-provider>
  Depends: libc6:amd64
";
        assert_eq!(
            dependencies(listing),
            vec![
                vec!["init-system-helpers".to_string()],
                vec!["lsb-base".into()],
                vec!["debconf".into(), "cdebconf".into()],
                vec!["libsystemd0".into()],
                vec!["libc6".into()],
            ]
        );
    }
}
