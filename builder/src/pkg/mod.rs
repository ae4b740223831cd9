//! `berth pkg build DIR`: a system image made without Docker, from Debian
//! packages (unpacked as distroless images are: the package and its
//! dependency closure, `dpkg-deb`, no maintainer scripts), static binaries
//! built in this workspace, and files from `DIR`; and `@pkg:DIR` references
//! in definitions, which build the package on the way.
//!
//! `DIR/build.yml` ([`schema`]) says what goes in; the image is tagged with
//! a hash of every input that changes its bytes (the file itself, each
//! package's version and checksum, each binary's and file's bytes, the
//! build's time from `SOURCE_DATE_EPOCH`), so the same inputs give the same
//! tag, and the image's bytes are the same too: entries sorted, times fixed,
//! owners from the packages or root.
//!
//! This module resolves the inputs and puts the image together; Debian
//! (closure, downloads, unpacking) is [`debian`]'s, the layer and the image
//! documents [`layer`]'s, a kernel's layout [`crate::kernel::debian`]'s, and
//! running programs [`crate::tools`]'.

pub mod debian;
pub mod layer;
pub mod schema;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use archive::Clock;
use archive::entry::{self, Entry};
use oci::layout::Layout;
use oci::reference::Reference;
use sha2::{Digest as _, Sha256};

use crate::kernel::{self, debian::KernelError};
use crate::spec;
use crate::tools::{self, ToolError};
use debian::{Apt, Closure, DebianError, NEVER_TAKEN};
use layer::{Data, RunConfig, Tree};
pub use schema::{Binary, BuildFile, PkgFile, read_build_file};

#[derive(Debug, thiserror::Error)]
pub enum PkgError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error("building {binary}")]
    Binary {
        binary: String,
        #[source]
        source: ToolError,
    },
    #[error("{path}")]
    Kernel {
        path: String,
        #[source]
        source: KernelError,
    },
    #[error("{position}: image {image}")]
    Template {
        position: String,
        image: String,
        #[source]
        source: Box<PkgError>,
    },
    #[error(transparent)]
    Cache(#[from] oci::LayoutError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A package directory, read and with its inputs resolved.
#[derive(Debug)]
pub struct Package {
    pub dir: PathBuf,
    pub build: BuildFile,
    /// The whole closure of the Debian packages.
    pub debs: Closure,
    /// path in the image → built binary.
    pub binaries: BTreeMap<String, PathBuf>,
    /// The time of the entries the build makes, and the latest time of any.
    pub clock: Clock,
}

/// The cargo workspace that holds `dir` (for `binaries:`): the nearest
/// ancestor whose Cargo.toml has a `[workspace]`, else the current directory.
pub fn workspace_of(dir: &Path) -> PathBuf {
    let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    start
        .ancestors()
        .find(|a| {
            std::fs::read_to_string(a.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Package {
    /// Reads `dir/build.yml` and resolves its inputs: the Debian packages'
    /// versions (from `apt`) and the binaries (built), for a build at
    /// `clock`'s time.
    pub fn resolve(
        dir: &Path,
        workspace: &Path,
        apt: &Apt,
        clock: Clock,
    ) -> Result<Package, PkgError> {
        let build = read_build_file(dir)?;
        let debs = apt.closure(&build.packages, &build.exclude, build.kernel)?;
        let mut binaries = BTreeMap::new();
        for binary in &build.binaries {
            binaries.insert(clean(&binary.path)?, build_binary(workspace, binary)?);
        }
        Ok(Package {
            dir: dir.to_path_buf(),
            build,
            debs,
            binaries,
            clock,
        })
    }

    /// The tag: a hash of every input.
    pub fn tag(&self) -> Result<String, PkgError> {
        let mut hash = Sha256::new();
        let build = serde_json::to_vec(&self.build).map_err(io::Error::other)?;
        hash.update(&build);
        // What is never taken from packages is an input too.
        hash.update(format!("\0never {}", NEVER_TAKEN.join(" ")).as_bytes());
        // So is the time of every entry made (and the cap of every other).
        hash.update(format!("\0time {}", self.clock.made()).as_bytes());
        for (name, deb) in &self.debs {
            hash.update(format!("\0deb {name} {} {}", deb.version, deb.sha256).as_bytes());
        }
        for (path, binary) in &self.binaries {
            hash.update(format!("\0bin {path} ").as_bytes());
            io::copy(&mut std::fs::File::open(binary)?, &mut hash)?;
        }
        for file in &self.build.files {
            if let Some(source) = &file.source {
                for (rel, path) in walk(&self.dir.join(source))? {
                    hash.update(format!("\0file {} {rel} ", file.path).as_bytes());
                    let meta = std::fs::symlink_metadata(&path)?;
                    if meta.is_file() {
                        io::copy(&mut std::fs::File::open(&path)?, &mut hash)?;
                    } else if meta.file_type().is_symlink() {
                        hash.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
                    }
                    hash.update(format!(" {:o}", git_mode(&meta)).as_bytes());
                }
            }
        }
        Ok(format!("{:x}", hash.finalize())[..20].to_string())
    }

    /// The full reference the image is tagged with.
    pub fn reference(&self) -> Result<String, PkgError> {
        let tag = self.tag()?;
        let parsed = Reference::parse(&format!("{}:{tag}", self.build.image)).map_err(|e| {
            PkgError::Input {
                path: self.dir.display().to_string(),
                message: e.to_string(),
            }
        })?;
        Ok(parsed.to_string())
    }

    /// Builds the image into `cache`, with the `.deb`s of `apt`; returns
    /// its reference and manifest digest.
    pub fn build(&self, cache: &Layout, apt: &Apt) -> Result<(String, String), PkgError> {
        let reference = self.reference()?;
        let made = self.clock.made();
        // Temporary files go beside the cache, not in a memory-backed /tmp.
        let mut tree = Tree::new_in(cache.root())?;
        // Packages first, in name order; then binaries; then files: later
        // ones replace earlier ones at the same path.
        for (name, deb) in &self.debs {
            let path = apt.download(name, deb)?;
            debian::unpack(name, &path, &mut tree, &self.build.prune)?;
        }
        for (path, binary) in &self.binaries {
            let size = std::fs::metadata(binary)?.len();
            let entry = Entry::file(path, 0o755, size, made);
            tree.entries
                .insert(path.clone(), (entry, Data::Host(binary.clone())));
        }
        for file in &self.build.files {
            self.add_file(file, &mut tree)?;
        }
        if self.build.kernel {
            tree =
                kernel::debian::repackage(tree, self.clock).map_err(|source| PkgError::Kernel {
                    path: self.dir.join("build.yml").display().to_string(),
                    source,
                })?;
        }
        let layer = layer::write(&mut tree, self.clock, cache.root())?;
        drop(tree);
        let digest = layer::commit(cache, layer, &self.run_config()?, &reference)?;
        Ok((reference, digest))
    }

    /// The image configuration's `config`: what `build.yml` says, the
    /// label, and the Debian packages with their versions.
    fn run_config(&self) -> Result<RunConfig, PkgError> {
        let b = &self.build;
        let mut labels = BTreeMap::new();
        if let Some(config) = &b.config {
            let label = serde_json::to_string(config).map_err(io::Error::other)?;
            labels.insert(crate::plan::LABEL.to_string(), label);
        }
        if !self.debs.is_empty() {
            let packages: Vec<String> = self
                .debs
                .iter()
                .map(|(name, deb)| format!("{name}={}", deb.version))
                .collect();
            labels.insert("org.berth.debian.packages".into(), packages.join(" "));
        }
        Ok(RunConfig {
            cmd: b.cmd.clone(),
            entrypoint: b.entrypoint.clone(),
            env: b.env.clone().unwrap_or_else(|| {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
            }),
            labels,
            working_dir: b.workdir.clone(),
        })
    }

    fn add_file(&self, file: &PkgFile, tree: &mut Tree) -> Result<(), PkgError> {
        let made = self.clock.made();
        let path = clean(&file.path)?;
        let mode = file
            .mode
            .as_deref()
            .map(spec::mode)
            .transpose()
            .map_err(|e| PkgError::Input {
                path: file.path.clone(),
                message: e,
            })?;
        let entries = &mut tree.entries;
        if let Some(contents) = &file.contents {
            let entry = Entry::file(&path, mode.unwrap_or(0o644), contents.len() as u64, made);
            let data = Data::Bytes(contents.clone().into_bytes());
            entries.insert(path, (entry, data));
        } else if let Some(target) = &file.symlink {
            let entry = Entry::symlink(path.clone(), target, made);
            entries.insert(path, (entry, Data::None));
        } else if file.directory {
            let entry = Entry::directory(&path, mode.unwrap_or(0o755), made);
            entries.insert(path, (entry, Data::None));
        } else if let Some(source) = &file.source {
            let root = self.dir.join(source);
            for (rel, host) in walk(&root)? {
                let at = match (path.is_empty(), rel.is_empty()) {
                    (_, true) => path.clone(),
                    (true, false) => rel.clone(),
                    (false, false) => format!("{path}/{rel}"),
                };
                // The image's root itself is no entry.
                if at.is_empty() {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&host)?;
                let own = git_mode(&meta);
                let entry = if meta.is_dir() {
                    Entry::directory(&at, mode.filter(|_| rel.is_empty()).unwrap_or(own), made)
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&host)?.to_string_lossy().into_owned();
                    Entry::symlink(at.clone(), &target, made)
                } else {
                    Entry::file(&at, mode.unwrap_or(own), meta.len(), made)
                };
                let data = if meta.is_file() {
                    Data::Host(host)
                } else {
                    Data::None
                };
                entries.insert(at, (entry, data));
            }
        }
        Ok(())
    }
}

/// `path` relative to the image root, checked.
fn clean(path: &str) -> Result<String, PkgError> {
    entry::clean_path(path).map_err(|reason| PkgError::Input {
        path: path.to_string(),
        message: reason.to_string(),
    })
}

/// Every entry under `root` (itself as ""), sorted, not following links.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>, PkgError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| PkgError::Input {
        path: root.display().to_string(),
        message: e.to_string(),
    })?;
    let mut out = vec![(String::new(), root.to_path_buf())];
    if !meta.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                stack.push((rel.clone(), entry.path()));
            }
            out.push((rel, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A source file's mode as git keeps it: 0755 when executable (and for
/// directories), else 0644. The checkout's umask and the rest of the mode
/// bits do not reach the image, so every clone gives the same tag.
fn git_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// Builds `binary` statically from `workspace`, with the recipe of init's
/// own static build; returns its path.
fn build_binary(workspace: &Path, binary: &Binary) -> Result<PathBuf, PkgError> {
    let name = binary.binary.as_deref().unwrap_or(&binary.package);
    let mut build = static_build::cargo_build(workspace, &binary.package, name);
    tools::output(&mut build.command).map_err(|source| PkgError::Binary {
        binary: name.to_string(),
        source,
    })?;
    Ok(build.binary)
}

/// Replaces every `@pkg:PATH` reference of `definition` (PATH relative to
/// the YAML file that names it) with the package's image reference,
/// building the package into `cache` first when the cache lacks it.
/// Returns the references built.
///
/// The packages are resolved (and built when missing) in parallel, one
/// thread per core at most; each directory once, however often it is named.
pub fn resolve_templates(
    definition: &mut spec::Definition,
    cache: &Layout,
    apt: &Apt,
    clock: Clock,
) -> Result<Vec<String>, PkgError> {
    let mut references = definition.image_references_mut();
    references.retain(|reference| reference.value.starts_with("@pkg:"));
    // The package directory of each reference, and the distinct ones in the
    // order they are first named.
    let mut dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut job_of = Vec::new();
    for reference in &references {
        let path = reference.value.trim_start_matches("@pkg:");
        let base = reference
            .origin
            .as_deref()
            .and_then(|o| Path::new(o).parent())
            .unwrap_or(Path::new("."));
        let dir = base.join(path);
        let same = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let job = match dirs.iter().position(|(known, _)| *known == same) {
            Some(job) => job,
            None => {
                dirs.push((same, dir));
                dirs.len() - 1
            }
        };
        job_of.push(job);
    }
    // Resolved, and built when the cache lacks it: the reference, and
    // whether it was built.
    let resolve_one = |dir: &Path| -> Result<(String, bool), PkgError> {
        let package = Package::resolve(dir, &workspace_of(dir), apt, clock)?;
        let name = package.reference()?;
        if cache.named(&name).is_ok() {
            return Ok((name, false));
        }
        package.build(cache, apt)?;
        Ok((name, true))
    };
    type Outcome = Result<(String, bool), PkgError>;
    let slots: Vec<Mutex<Option<Outcome>>> = dirs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(dirs.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, dir)) = dirs.get(job) else { break };
                    let outcome = resolve_one(dir);
                    *slots[job].lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
                }
            });
        }
    });
    let mut outcomes: Vec<Outcome> = slots
        .into_iter()
        .map(|slot| {
            let outcome = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            outcome.expect("every package directory was taken by a thread")
        })
        .collect();
    // A failure is told at the first reference (in the definition's order)
    // naming the package.
    let failed = references
        .iter()
        .zip(&job_of)
        .find(|(_, job)| outcomes[**job].is_err());
    if let Some((reference, &job)) = failed {
        let source = std::mem::replace(&mut outcomes[job], Ok(Default::default())).unwrap_err();
        return Err(PkgError::Template {
            position: reference.position(),
            image: reference.value.clone(),
            source: Box::new(source),
        });
    }
    let outcomes: Vec<(String, bool)> = outcomes.into_iter().flatten().collect();
    for (reference, &job) in references.iter_mut().zip(&job_of) {
        reference.value = outcomes[job].0.clone();
    }
    Ok(outcomes
        .into_iter()
        .filter(|(_, built)| *built)
        .map(|(name, _)| name)
        .collect())
}
