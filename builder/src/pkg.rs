//! `berth pkg build DIR`: a system image made without Docker, from Debian
//! packages (unpacked as distroless images are: the package and its
//! dependency closure, `dpkg-deb`, no maintainer scripts), static binaries
//! built in this workspace, and files from `DIR`.
//!
//! `DIR/build.yml` says what goes in; the image is tagged with a hash of
//! every input (the file itself, each package's version and checksum, each
//! binary's and file's bytes), so the same inputs give the same tag, and
//! the image's bytes are the same too: entries sorted, times fixed, owners
//! from the packages or root.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use archive::entry::Sink as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::spec::{self, Origin};
use archive::entry::{self, Entry, Kind};
use archive::tar::TarWriter;
use oci::layout::{Layout, Named};
use oci::reference::Reference;

/// `build.yml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    /// The repository, as in LinuxKit's `build.yml` (`berth/getty`).
    pub image: String,
    /// Debian packages; their dependencies come along.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages left out of the dependencies, and what only they need
    /// (`adduser`, `debconf`: needed by maintainer scripts, which never
    /// run here).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Paths (files or whole directories) left out of the packages'
    /// contents, besides the documentation, which is never taken
    /// ([`NEVER_TAKEN`]). `usr/lib/x86_64-linux-gnu/gconv` saves 8 MB.
    #[serde(default)]
    pub prune: Vec<String>,
    /// Static binaries built from this workspace.
    #[serde(default)]
    pub binaries: Vec<Binary>,
    /// Files and directories from the package directory.
    #[serde(default)]
    pub files: Vec<PkgFile>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// The `org.mobyproject.config` label, in LinuxKit's format.
    #[serde(default)]
    pub config: Option<Value>,
    /// Repackage a Debian kernel in LinuxKit's kernel-image layout:
    /// `/kernel`, `/kernel.tar` (the modules), `/System.map`, `/config`.
    /// Only the packages and the `linux-image-*` packages they depend on
    /// are taken, not the rest of their dependencies.
    #[serde(default)]
    pub kernel: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// The workspace package and binary (`init`).
    pub package: String,
    #[serde(default)]
    pub binary: Option<String>,
    /// Where it goes in the image (`/sbin/init`).
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PkgFile {
    /// Where it goes in the image.
    pub path: String,
    /// A file or directory under the package directory.
    #[serde(default)]
    pub source: Option<String>,
    /// Inline contents.
    #[serde(default)]
    pub contents: Option<String>,
    /// A symbolic link to this target.
    #[serde(default)]
    pub symlink: Option<String>,
    /// An empty directory.
    #[serde(default)]
    pub directory: bool,
    /// Octal; default 0644 for files (or the source's), 0755 for directories.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkgError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("Debian package {package}: {message}")]
    Debian { package: String, message: String },
    #[error("building {binary}: {message}")]
    Binary { binary: String, message: String },
    #[error(transparent)]
    Cache(#[from] oci::LayoutError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A package directory, read and with its inputs resolved.
pub struct Package {
    pub dir: PathBuf,
    pub build: BuildFile,
    /// name → (version, SHA256 of the .deb), the whole closure.
    pub debs: BTreeMap<String, (String, String)>,
    /// path in the image → built binary.
    pub binaries: BTreeMap<String, PathBuf>,
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

pub fn read_build_file(dir: &Path) -> Result<BuildFile, PkgError> {
    let path = dir.join("build.yml");
    let text = std::fs::read_to_string(&path).map_err(|e| PkgError::Input {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let origin = Origin::from(path.display().to_string().as_str());
    let build: BuildFile = spec::parse_as(&text, &origin)?;
    let bad = |message: String| PkgError::Input {
        path: path.display().to_string(),
        message,
    };
    Reference::parse(&build.image).map_err(|e| bad(format!("image: {e}")))?;
    if build.image.contains(':') || build.image.contains('@') {
        return Err(bad(format!(
            "image: {:?} names a repository only; the tag is the hash of the inputs",
            build.image
        )));
    }
    for (i, file) in build.files.iter().enumerate() {
        let kinds = [
            file.source.is_some(),
            file.contents.is_some(),
            file.symlink.is_some(),
            file.directory,
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(bad(format!(
                "files[{i}] ({}): give exactly one of source, contents, symlink, directory",
                file.path
            )));
        }
        if let Some(mode) = &file.mode {
            spec::mode(mode).map_err(|e| bad(format!("files[{i}].mode: {e}")))?;
        }
    }
    if let Some(config) = &build.config {
        let label = serde_json::to_string(config).map_err(|e| bad(e.to_string()))?;
        let image = spec::parse_label(&label, &build.image)?;
        spec::check_label(&image, &build.image)?;
    }
    Ok(build)
}

impl Package {
    /// Reads `dir/build.yml` and resolves its inputs: the Debian packages'
    /// versions (from the apt sources of this machine) and the binaries
    /// (built).
    pub fn resolve(dir: &Path, workspace: &Path) -> Result<Package, PkgError> {
        let build = read_build_file(dir)?;
        let debs = debian_closure(&build.packages, &build.exclude, build.kernel)?;
        let mut binaries = BTreeMap::new();
        for binary in &build.binaries {
            binaries.insert(clean(&binary.path)?, build_binary(workspace, binary)?);
        }
        Ok(Package {
            dir: dir.to_path_buf(),
            build,
            debs,
            binaries,
        })
    }

    /// The tag: a hash of every input.
    pub fn tag(&self) -> Result<String, PkgError> {
        let mut hash = Sha256::new();
        let build = serde_json::to_vec(&self.build).map_err(io::Error::other)?;
        hash.update(&build);
        // What is never taken from packages is an input too.
        hash.update(format!("\0never {}", NEVER_TAKEN.join(" ")).as_bytes());
        for (name, (version, sha)) in &self.debs {
            hash.update(format!("\0deb {name} {version} {sha}").as_bytes());
        }
        for (path, binary) in &self.binaries {
            hash.update(format!("\0bin {path} ").as_bytes());
            hash.update(std::fs::read(binary)?);
        }
        for file in &self.build.files {
            if let Some(source) = &file.source {
                for (rel, path) in walk(&self.dir.join(source))? {
                    hash.update(format!("\0file {} {rel} ", file.path).as_bytes());
                    let meta = std::fs::symlink_metadata(&path)?;
                    if meta.is_file() {
                        hash.update(std::fs::read(&path)?);
                    } else if meta.file_type().is_symlink() {
                        hash.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
                    }
                    hash.update(format!(" {:o}", git_mode(&meta)).as_bytes());
                }
            }
        }
        Ok(hex(&hash.finalize())[..20].to_string())
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

    /// Builds the image into `cache`; returns its reference and manifest
    /// digest.
    pub fn build(
        &self,
        cache: &Layout,
        debs_dir: &Path,
        epoch: u64,
        offline: bool,
    ) -> Result<(String, String), PkgError> {
        let reference = self.reference()?;
        let mut tree: BTreeMap<String, (Entry, Data)> = BTreeMap::new();
        // Packages first, in name order; then binaries; then files: later
        // ones replace earlier ones at the same path.
        for (name, (version, sha)) in &self.debs {
            let deb = download(name, version, sha, debs_dir, offline)?;
            unpack(&deb, &mut tree, &self.build.prune).map_err(|e| PkgError::Debian {
                package: name.clone(),
                message: e.to_string(),
            })?;
        }
        for (path, binary) in &self.binaries {
            let size = std::fs::metadata(binary)?.len();
            let entry = Entry::file(path, 0o755, size, epoch);
            tree.insert(path.clone(), (entry, Data::Host(binary.clone())));
        }
        for file in &self.build.files {
            self.add_file(file, &mut tree, epoch)?;
        }
        if self.build.kernel {
            tree = kernel_layout(tree, epoch).map_err(|message| PkgError::Input {
                path: self.dir.join("build.yml").display().to_string(),
                message,
            })?;
        }
        let packages: Vec<String> = self
            .debs
            .iter()
            .map(|(n, (v, _))| format!("{n}={v}"))
            .collect();
        let layer = layer(&mut tree, epoch)?;
        let (digest, size) = self.store(cache, &layer, &packages)?;
        cache.tag(&Named {
            name: reference.clone(),
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size,
        })?;
        Ok((reference, digest))
    }

    fn add_file(
        &self,
        file: &PkgFile,
        tree: &mut BTreeMap<String, (Entry, Data)>,
        epoch: u64,
    ) -> Result<(), PkgError> {
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
        if let Some(contents) = &file.contents {
            let entry = Entry::file(&path, mode.unwrap_or(0o644), contents.len() as u64, epoch);
            tree.insert(path, (entry, Data::Bytes(contents.clone().into_bytes())));
        } else if let Some(target) = &file.symlink {
            tree.insert(
                path.clone(),
                (Entry::symlink(path, target, epoch), Data::None),
            );
        } else if file.directory {
            tree.insert(
                path.clone(),
                (
                    Entry::directory(&path, mode.unwrap_or(0o755), epoch),
                    Data::None,
                ),
            );
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
                    Entry::directory(&at, mode.filter(|_| rel.is_empty()).unwrap_or(own), epoch)
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&host)?.to_string_lossy().into_owned();
                    Entry::symlink(at.clone(), &target, epoch)
                } else {
                    Entry::file(&at, mode.unwrap_or(own), meta.len(), epoch)
                };
                let data = if meta.is_file() {
                    Data::Host(host)
                } else {
                    Data::None
                };
                tree.insert(at, (entry, data));
            }
        }
        Ok(())
    }

    /// Writes the layer, config and manifest blobs; returns the manifest's
    /// digest and size.
    fn store(
        &self,
        cache: &Layout,
        layer: &Layer,
        packages: &[String],
    ) -> Result<(String, u64), PkgError> {
        let mut labels = serde_json::Map::new();
        if let Some(config) = &self.build.config {
            labels.insert(
                crate::plan::LABEL.into(),
                json!(serde_json::to_string(config).map_err(io::Error::other)?),
            );
        }
        if !packages.is_empty() {
            labels.insert(
                "org.berth.debian.packages".into(),
                json!(packages.join(" ")),
            );
        }
        let b = &self.build;
        let mut config = serde_json::Map::new();
        if let Some(v) = &b.entrypoint {
            config.insert("Entrypoint".into(), json!(v));
        }
        if let Some(v) = &b.cmd {
            config.insert("Cmd".into(), json!(v));
        }
        config.insert(
            "Env".into(),
            json!(b.env.clone().unwrap_or_else(|| vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            ])),
        );
        if let Some(v) = &b.workdir {
            config.insert("WorkingDir".into(), json!(v));
        }
        if !labels.is_empty() {
            config.insert("Labels".into(), Value::Object(labels));
        }
        let image_config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        });
        let config_bytes = serde_json::to_vec(&image_config).map_err(io::Error::other)?;
        let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config_bytes)));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer.digest,
                "size": layer.bytes.len(),
            }],
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let manifest_digest = format!("sha256:{}", hex(&Sha256::digest(&manifest_bytes)));
        cache.write_blob(&layer.digest, &layer.bytes)?;
        cache.write_blob(&config_digest, &config_bytes)?;
        cache.write_blob(&manifest_digest, &manifest_bytes)?;
        Ok((manifest_digest, manifest_bytes.len() as u64))
    }
}

/// LinuxKit's kernel-image layout from an unpacked Debian kernel package.
fn kernel_layout(
    tree: BTreeMap<String, (Entry, Data)>,
    epoch: u64,
) -> Result<BTreeMap<String, (Entry, Data)>, String> {
    let kernels: Vec<&String> = tree
        .keys()
        .filter(|p| p.starts_with("boot/vmlinuz-"))
        .collect();
    let [kernel] = kernels[..] else {
        return Err(format!(
            "kernel: true needs exactly one boot/vmlinuz-* in the packages, found {kernels:?}"
        ));
    };
    let version = kernel["boot/vmlinuz-".len()..].to_string();
    let mut out = BTreeMap::new();
    let mut modules = TarWriter::new(Vec::new());
    let take = |from: &str, to: &str, out: &mut BTreeMap<String, (Entry, Data)>| {
        if let Some((entry, data)) = tree.get(from) {
            let mut entry = entry.clone();
            entry.path = to.to_string();
            let data = match data {
                Data::Bytes(b) => Data::Bytes(b.clone()),
                Data::Host(p) => Data::Host(p.clone()),
                Data::None => Data::None,
            };
            out.insert(to.to_string(), (entry, data));
        }
    };
    take(kernel, "kernel", &mut out);
    take(
        &format!("boot/System.map-{version}"),
        "System.map",
        &mut out,
    );
    take(&format!("boot/config-{version}"), "config", &mut out);
    // The modules, wherever the package puts them (merged /usr or not),
    // as lib/modules/VERSION in kernel.tar.
    let mut count = 0;
    for prefix in [
        format!("lib/modules/{version}"),
        format!("usr/lib/modules/{version}"),
    ] {
        for (path, (entry, data)) in tree.range(prefix.clone()..) {
            if path != &prefix && !path.starts_with(&format!("{prefix}/")) {
                break;
            }
            let mut entry = entry.clone();
            entry.path = format!("lib/modules/{version}{}", &path[prefix.len()..]);
            entry.mtime = entry.mtime.min(epoch);
            if let Kind::HardLink { target } = &mut entry.kind {
                *target = format!(
                    "lib/modules/{version}{}",
                    target.get(prefix.len()..).unwrap_or("")
                );
            }
            let written = match data {
                Data::Bytes(b) => entry::copy_entry(&mut modules, &entry, &mut &b[..]),
                _ => entry::copy_entry(&mut modules, &entry, &mut io::empty()),
            };
            written.map_err(|e| e.to_string())?;
            count += 1;
        }
    }
    if count == 0 {
        return Err(format!("no modules for {version} in the packages"));
    }
    modules.finish().map_err(|e| e.to_string())?;
    let bytes = modules.into_inner();
    let entry = Entry::file("kernel.tar", 0o644, bytes.len() as u64, epoch);
    out.insert("kernel.tar".into(), (entry, Data::Bytes(bytes)));
    if !out.contains_key("kernel") {
        return Err("no kernel".into());
    }
    Ok(out)
}

enum Data {
    None,
    Bytes(Vec<u8>),
    Host(PathBuf),
}

struct Layer {
    bytes: Vec<u8>,
    digest: String,
    diff_id: String,
}

/// The tar of `tree` (missing parents added), gzip-compressed.
fn layer(tree: &mut BTreeMap<String, (Entry, Data)>, epoch: u64) -> Result<Layer, PkgError> {
    let paths: Vec<String> = tree.keys().cloned().collect();
    for path in paths {
        for parent in entry::ancestors(&path)
            .map(str::to_string)
            .collect::<Vec<_>>()
        {
            tree.entry(parent.clone())
                .or_insert_with(|| (Entry::directory(&parent, 0o755, epoch), Data::None));
        }
    }
    tree.remove("");
    let mut tar = TarWriter::new(Vec::new());
    for (entry, data) in tree.values_mut() {
        entry.mtime = entry.mtime.min(epoch);
        match data {
            Data::None => entry::copy_entry(&mut tar, entry, &mut io::empty())?,
            Data::Bytes(bytes) => entry::copy_entry(&mut tar, entry, &mut &bytes[..])?,
            Data::Host(path) => {
                let mut file = std::fs::File::open(&*path)?;
                entry::copy_entry(&mut tar, entry, &mut file)?;
            }
        }
    }
    tar.finish()?;
    let plain = tar.into_inner();
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&plain)));
    let mut bytes = Vec::new();
    {
        use archive::compress::{Compression, encoder};
        let mut gz = encoder(Compression::Gzip, &mut bytes)?;
        gz.write_all(&plain)?;
        gz.finish()?;
    }
    let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    Ok(Layer {
        bytes,
        digest,
        diff_id,
    })
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: {e} (is it installed?)"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The packages and everything they depend on (Depends and Pre-Depends,
/// not Recommends), each with the version apt would install and its
/// checksum. Of alternatives the first not excluded is taken, and a
/// virtual package is its first provider; an excluded package ends its
/// branch.
fn debian_closure(
    packages: &[String],
    exclude: &[String],
    kernel_only: bool,
) -> Result<BTreeMap<String, (String, String)>, PkgError> {
    let mut out = BTreeMap::new();
    if packages.is_empty() {
        return Ok(out);
    }
    // One recursive listing (it follows every branch, excluded ones too),
    // then the walk that takes the first allowed alternative.
    let listing = run(
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
        "apt-cache depends",
    )
    .map_err(|message| PkgError::Debian {
        package: packages.join(" "),
        message,
    })?;
    let graph = dependency_graph(&listing);
    let mut names: std::collections::BTreeSet<String> = packages.iter().cloned().collect();
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
    // One apt-cache call for all of them: one stanza each.
    let names: Vec<String> = names.into_iter().collect();
    let show = run(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(&names),
        "apt-cache show",
    )
    .map_err(|message| PkgError::Debian {
        package: names.join(" "),
        message,
    })?;
    let stanzas = stanzas(&show);
    for name in names {
        let found = stanzas.get(&name);
        let field = |key: &str| found.and_then(|f| f.get(key)).cloned();
        let (Some(version), Some(sha)) = (field("Version"), field("SHA256")) else {
            return Err(PkgError::Debian {
                package: name,
                message: "apt-cache show gives no Version or SHA256".into(),
            });
        };
        out.insert(name, (version, sha));
    }
    Ok(out)
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

/// The .deb of `name` at `version` in `dir`, downloaded if missing and
/// checked against `sha`.
fn download(
    name: &str,
    version: &str,
    sha: &str,
    dir: &Path,
    offline: bool,
) -> Result<PathBuf, PkgError> {
    let fail = |message: String| PkgError::Debian {
        package: name.to_string(),
        message,
    };
    std::fs::create_dir_all(dir)?;
    let find = || -> io::Result<Option<PathBuf>> {
        let prefix = format!("{name}_");
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if file.starts_with(&prefix) && file.ends_with(".deb") {
                let bytes = std::fs::read(&path)?;
                if hex(&Sha256::digest(&bytes)) == sha {
                    return Ok(Some(path));
                }
            }
        }
        Ok(None)
    };
    if let Some(path) = find()? {
        return Ok(path);
    }
    if offline {
        return Err(fail(format!(
            "{name}={version} is not in {} and berth is offline",
            dir.display()
        )));
    }
    run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{name}={version}")])
            .current_dir(dir),
        "apt-get download",
    )
    .map_err(fail)?;
    find()?.ok_or_else(|| fail(format!("the downloaded .deb does not have SHA256 {sha}")))
}

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

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The files of a .deb (`dpkg-deb --fsys-tarfile`), into `tree`, without
/// [`NEVER_TAKEN`] and `prune`.
fn unpack(
    deb: &Path,
    tree: &mut BTreeMap<String, (Entry, Data)>,
    prune: &[String],
) -> io::Result<()> {
    let output = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut archive = tar::Archive::new(&output.stdout[..]);
    for item in archive.entries()? {
        let mut item = item?;
        let Some(entry) = entry::from_tar(&item).map_err(io::Error::other)? else {
            continue;
        };
        let pruned = |path: &str| {
            // Licences stay with what they license.
            let licence = under(path, "usr/share/doc") && path.ends_with("/copyright");
            (NEVER_TAKEN.iter().any(|p| under(path, p)) && !licence)
                || prune.iter().any(|p| under(path, p))
        };
        let link_to_pruned = matches!(&entry.kind, Kind::HardLink { target } if pruned(target));
        if pruned(&entry.path) || link_to_pruned {
            continue;
        }
        let mut bytes = Vec::new();
        if entry.kind == Kind::File {
            item.read_to_end(&mut bytes)?;
        }
        let path = entry.path.clone();
        let data = if entry.size > 0 {
            Data::Bytes(bytes)
        } else {
            Data::None
        };
        // A directory seen again (every package has usr/) keeps the first.
        if entry.is_dir() && tree.contains_key(&path) {
            continue;
        }
        tree.insert(path, (entry, data));
    }
    Ok(())
}

/// Builds `binary` statically from `workspace`, with the recipe of init's
/// own static build; returns its path.
fn build_binary(workspace: &Path, binary: &Binary) -> Result<PathBuf, PkgError> {
    let name = binary.binary.as_deref().unwrap_or(&binary.package);
    let mut build = static_build::cargo_build(workspace, &binary.package, name);
    run(&mut build.command, "cargo build").map_err(|message| PkgError::Binary {
        binary: name.to_string(),
        message,
    })?;
    Ok(build.binary)
}

/// Replaces every `@pkg:PATH` reference of `definition` (PATH relative to
/// the YAML file that names it) with the package's image reference,
/// building the package into `cache` first when the cache lacks it.
pub fn resolve_templates(
    definition: &mut spec::Definition,
    cache: &Layout,
    debs_dir: &Path,
    epoch: u64,
    offline: bool,
) -> Result<Vec<String>, PkgError> {
    let mut built = Vec::new();
    for reference in definition.image_references_mut() {
        let Some(path) = reference.value.strip_prefix("@pkg:") else {
            continue;
        };
        let base = reference
            .origin
            .as_deref()
            .and_then(|o| Path::new(o).parent())
            .unwrap_or(Path::new("."));
        let dir = base.join(path);
        let at = |e: PkgError| PkgError::Input {
            path: reference.position(),
            message: format!("image {}: {e}", reference.value),
        };
        let package = Package::resolve(&dir, &workspace_of(&dir)).map_err(at)?;
        let name = package.reference().map_err(at)?;
        if cache.named(&name).is_err() {
            package.build(cache, debs_dir, epoch, offline).map_err(at)?;
            built.push(name.clone());
        }
        reference.value = name;
    }
    Ok(built)
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
