//! Assembly: the whole filesystem of the image as one entry stream, in
//! LinuxKit's order: kernel, init images, onboot, onshutdown and services
//! bundles, then `files`.
//!
//! Images must already be resolved ([`crate::plan`]); this module reads
//! their blobs through the [`ImageSource`] and writes to a [`Sink`]. It never
//! touches the host filesystem except to read `files:` sources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use archive::Clock;
use archive::entry::{self, Entry, Kind, Sink, copy_entry};
use contract::depmod;
use oci::{ImageSource, ResolvedImage};

use crate::bundle::{Bundle, BundleError, IdMap};
use crate::flatten::{FlattenError, flatten};
use crate::modules;
use crate::plan::Plan;
use crate::spec::{self, Definition, File, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("kernel image {image}: {message}")]
    Kernel { image: String, message: String },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("{position}: volumes are not supported by this version of berth")]
    Volumes { position: String },
    #[error("{position}: file {path:?}: {message}")]
    File {
        position: String,
        path: String,
        message: String,
    },
    #[error("writing the image")]
    Write(#[source] io::Error),
}

impl From<io::Error> for AssembleError {
    fn from(e: io::Error) -> Self {
        AssembleError::Write(e)
    }
}

/// The sink wrapper that knows which directories exist, so that parents are
/// made exactly once, that applies the time policy, and that keeps each
/// source (an image, a bundle, the modules tarball) from writing through a
/// symbolic link or file it wrote itself.
struct Tree<'a> {
    sink: &'a mut dyn Sink,
    directories: HashSet<String>,
    clock: Clock,
    /// What the current source wrote that is not a directory.
    scope: Option<HashSet<String>>,
}

impl Tree<'_> {
    fn mtime(&self) -> u64 {
        self.clock.made()
    }

    /// Starts a new source: its entries may not pass through what it wrote
    /// as a non-directory. `None` for `files:`, which may name any path.
    fn scope(&mut self, checked: bool) {
        self.scope = checked.then(HashSet::new);
    }

    fn write(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
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
    fn parents(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
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

    fn directory(&mut self, path: &str) -> io::Result<()> {
        if !self.directories.contains(path) {
            let dir = Entry::directory(path, 0o755, self.mtime());
            self.write(&dir, &mut io::empty())?;
        }
        Ok(())
    }

    fn bytes(&mut self, path: &str, mode: u32, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry::file(path, mode, bytes.len() as u64, self.mtime());
        self.write(&entry, &mut &bytes[..])
    }
}

/// How an image's root is adjusted, as LinuxKit does for the roots of init
/// images and containers: files a container runtime must control are
/// dropped or replaced, and mount points it needs are made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    Init,
    Container,
}

const DROPPED: &[&str] = &[
    ".dockerenv",
    "Dockerfile",
    "dev/console",
    "dev/pts",
    "dev/shm",
    "etc/hostname",
];
const HOSTS: &str = "127.0.0.1       localhost\n::1     localhost ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";
const NO_RESOLV_CONF: &str = "\n# no resolv.conf configured\n";

/// Writes an image's filesystem under `prefix` (`""` for `/`).
fn write_root(
    tree: &mut Tree,
    source: &dyn ImageSource,
    image: &ResolvedImage,
    prefix: &str,
    root: Root,
) -> Result<(), AssembleError> {
    let join = |path: &str| {
        if prefix.is_empty() {
            path.to_string()
        } else {
            format!("{prefix}/{path}")
        }
    };
    let refused = |e: io::Error| AssembleError::Image {
        image: image.reference.clone(),
        message: e.to_string(),
    };
    if !prefix.is_empty() {
        tree.directory(prefix)?;
    }
    tree.scope(true);
    let mut seen: HashSet<&'static str> = HashSet::new();
    // Replaced files are hidden from the image like dropped ones, so hard
    // links to them keep the image's bytes.
    let hidden: Vec<&str> = DROPPED
        .iter()
        .copied()
        .chain(["etc/hosts", "etc/resolv.conf"])
        .collect();
    let mut failure = None;
    let clock = tree.clock;
    let flattened = flatten(source, image, &hidden, clock, &mut |entry, data| {
        let mut out = entry.clone();
        out.path = join(&entry.path);
        if let Kind::HardLink { target } = &mut out.kind {
            *target = join(target);
        }
        if let Some((path, _)) = MUST_EXIST.iter().find(|(p, _)| *p == entry.path) {
            seen.insert(path);
        }
        tree.write(&out, data).map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            FlattenError::Emit(message)
        })
    });
    match (flattened, failure) {
        (Ok(()), _) => {}
        (Err(_), Some(e)) => return Err(refused(e)),
        (Err(e), None) => return Err(e.into()),
    }
    for (path, kind) in MUST_EXIST {
        let full = join(path);
        let written = match kind {
            Must::Directory if !seen.contains(path) => tree.directory(&full),
            Must::Mtab if !seen.contains(path) => {
                let link = Entry::symlink(full, "/proc/mounts", tree.mtime());
                tree.write(&link, &mut io::empty())
            }
            Must::Hosts => tree.bytes(&full, 0o644, HOSTS.as_bytes()),
            Must::ResolvConf => match root {
                Root::Init => {
                    let link = Entry::symlink(full, "/run/resolvconf/resolv.conf", tree.mtime());
                    tree.write(&link, &mut io::empty())
                }
                Root::Container => tree.bytes(&full, 0o644, NO_RESOLV_CONF.as_bytes()),
            },
            _ => Ok(()),
        };
        written.map_err(refused)?;
    }
    Ok(())
}

enum Must {
    Directory,
    Hosts,
    Mtab,
    ResolvConf,
}

/// What every container root has, in LinuxKit's order.
const MUST_EXIST: &[(&str, Must)] = &[
    ("dev", Must::Directory),
    ("dev/pts", Must::Directory),
    ("dev/shm", Must::Directory),
    ("etc", Must::Directory),
    ("etc/hosts", Must::Hosts),
    ("etc/mtab", Must::Mtab),
    ("etc/resolv.conf", Must::ResolvConf),
    ("proc", Must::Directory),
    ("sys", Must::Directory),
];

/// The kernel image gives `boot/kernel`, `boot/cmdline`, `boot/ucode.cpio`
/// and the contents of its modules tarball; nothing else of it is kept.
fn write_kernel(
    tree: &mut Tree,
    source: &dyn ImageSource,
    image: &ResolvedImage,
    kernel: &spec::Kernel,
) -> Result<(), AssembleError> {
    let binary = kernel
        .binary
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or("kernel");
    let modules = match kernel.tar.as_deref() {
        None => Some("kernel.tar"),
        Some("" | "none") => None,
        Some(name) => Some(name),
    };
    let ucode = kernel.ucode.as_deref().filter(|u| !u.is_empty());
    let cmdline = kernel.cmdline.clone().unwrap_or_default();
    let (mut found_kernel, mut found_modules) = (false, false);
    let fail = |message: String| AssembleError::Kernel {
        image: image.reference.clone(),
        message,
    };
    // The modules to keep: a first pass over the tarball reads what each
    // module needs.
    let keep = match (modules, &kernel.modules) {
        (None, _) | (_, Some(spec::ModuleChoice::Word(_))) => None,
        (Some(tarball), choice) => {
            let (names, strict) = match choice {
                Some(spec::ModuleChoice::List(names)) => (names.clone(), true),
                _ => (
                    modules::VM_DEFAULT.iter().map(|n| n.to_string()).collect(),
                    false,
                ),
            };
            let mut catalog = None;
            let mut nested: Option<String> = None;
            flatten(source, image, &[], tree.clock, &mut |entry, data| {
                if entry.path == tarball && entry.kind == Kind::File {
                    match catalog_of(data) {
                        Ok(found) => catalog = Some(found),
                        Err(message) => {
                            nested = Some(message.clone());
                            return Err(FlattenError::Emit(message));
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| match (&nested, e) {
                (Some(message), _) => fail(format!("{tarball}: {message}")),
                (None, e) => AssembleError::Flatten(e),
            })?;
            match catalog {
                Some(catalog) => Some(catalog.select(&names, strict).map_err(fail)?),
                // Reported below, as without a choice.
                None => None,
            }
        }
    };
    let mut nested: Option<String> = None;
    tree.scope(true);
    let clock = tree.clock;
    flatten(source, image, &[], clock, &mut |entry, data| {
        let emit = |e: io::Error| FlattenError::Emit(e.to_string());
        let name = entry.path.as_str();
        if name == binary && entry.kind == Kind::File {
            if found_kernel {
                return Err(FlattenError::Emit(format!(
                    "kernel image {}: more than one kernel",
                    image.reference
                )));
            }
            found_kernel = true;
            tree.directory("boot").map_err(emit)?;
            tree.bytes("boot/cmdline", 0o644, cmdline.as_bytes())
                .map_err(emit)?;
            let mut out = entry.clone();
            out.path = "boot/kernel".into();
            out.mtime = tree.mtime();
            tree.write(&out, data).map_err(emit)?;
        } else if Some(name) == ucode && entry.kind == Kind::File {
            tree.directory("boot").map_err(emit)?;
            let mut out = entry.clone();
            out.path = "boot/ucode.cpio".into();
            out.mtime = tree.mtime();
            tree.write(&out, data).map_err(emit)?;
        } else if Some(name) == modules && entry.kind == Kind::File {
            found_modules = true;
            if let Err(message) = write_modules(tree, data, keep.as_ref()) {
                nested = Some(message.clone());
                return Err(FlattenError::Emit(message));
            }
        }
        Ok(())
    })
    .map_err(|e| match (&nested, e) {
        (Some(message), _) => fail(format!("{}: {message}", modules.unwrap_or_default())),
        (None, e) => AssembleError::Flatten(e),
    })?;
    if !found_kernel {
        return Err(fail(format!("no kernel file {binary:?} in the image")));
    }
    if let (Some(modules), false) = (modules, found_modules) {
        return Err(fail(format!(
            "no modules tarball {modules:?} in the image (set kernel.tar: none if it has none)"
        )));
    }
    Ok(())
}

/// What the modules tarball holds for one kernel version.
#[derive(Default)]
struct ModulesSeen {
    modules: Vec<modules::Module>,
    /// It carries depmod's index itself.
    indexed: bool,
    /// The first module whose `.modinfo` could not be read.
    unreadable: Option<String>,
}

/// Reads a modules tarball for [`modules::Catalog`]: each module's
/// `.modinfo`, depmod's `modules.dep` where there is one, and
/// `modules.builtin`.
fn catalog_of(data: &mut dyn Read) -> Result<modules::Catalog, String> {
    let mut catalog = modules::Catalog::default();
    // Per version: whether it has depmod's index, and the first module
    // that could not be read.
    let mut indexed = std::collections::BTreeSet::new();
    let mut unreadable: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let Some(out) = entry::from_tar(&entry)? else {
            continue;
        };
        let Some((version, rest)) = out
            .path
            .strip_prefix("lib/modules/")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let wanted = rest == "modules.dep"
            || rest == "modules.builtin"
            || rest == "modules.softdep"
            || (out.kind == Kind::File && depmod::module_name(rest).is_some());
        if !wanted || out.kind != Kind::File {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("entry {:?}: {e}", out.path))?;
        let dir = format!("lib/modules/{version}");
        match rest {
            "modules.dep" => {
                indexed.insert(version.to_string());
                catalog.add_dep_file(&dir, &String::from_utf8_lossy(&bytes));
            }
            "modules.builtin" => catalog.add_builtin(&String::from_utf8_lossy(&bytes)),
            "modules.softdep" => catalog.add_softdep_file(&String::from_utf8_lossy(&bytes)),
            // A module whose .modinfo cannot be read (xz) counts through
            // modules.dep, which such a kernel image must then carry.
            _ => match modules::read(rest, &bytes) {
                Ok(module) => catalog.add(&out.path, &module),
                Err(e) => {
                    unreadable.entry(version.to_string()).or_insert(e);
                }
            },
        }
    }
    if let Some((version, e)) = unreadable.into_iter().find(|(v, _)| !indexed.contains(v)) {
        return Err(format!("choosing the modules of {version}: {e}"));
    }
    Ok(catalog)
}

/// Copies the kernel's modules tarball into `/`, only the modules in `keep`
/// when it is given (their index cut down to them). Hard links in it become
/// relative symbolic links, as LinuxKit makes them: the tarball is a stream
/// and the number of names of each file is not known in advance.
fn write_modules(
    tree: &mut Tree,
    data: &mut dyn Read,
    keep: Option<&std::collections::BTreeSet<String>>,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(data);
    // Per `lib/modules/VERSION`: the modules seen, and whether the tarball
    // carries its own index.
    let mut versions: BTreeMap<String, ModulesSeen> = BTreeMap::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let Some(mut out) = entry::from_tar(&entry)? else {
            continue;
        };
        // A stream cannot say how many names a file will have: hard links
        // become relative symbolic links, as LinuxKit makes them.
        if let Kind::HardLink { target } = &out.kind {
            out.kind = Kind::Symlink {
                target: relative(&out.path, target),
            };
        }
        let (path, kind, size) = (out.path.clone(), out.kind.clone(), out.size);
        let in_version = path
            .strip_prefix("lib/modules/")
            .and_then(|rest| rest.split_once('/'));
        let mut module_bytes = None;
        if let Some((version, rest)) = in_version {
            let is_module = depmod::module_name(rest).is_some();
            if let Some(keep) = keep {
                // Left out: the other modules, and depmod's binary indexes,
                // which would name them.
                if (is_module && !keep.contains(&path)) || rest.ends_with(".bin") {
                    continue;
                }
                if kind == Kind::File && (rest == "modules.dep" || rest == "modules.alias") {
                    let mut text = String::new();
                    entry
                        .read_to_string(&mut text)
                        .map_err(|e| format!("entry {path:?}: {e}"))?;
                    let dir = format!("lib/modules/{version}");
                    let cut = cut_index(rest, &text, &dir, keep);
                    versions.entry(version.to_string()).or_default().indexed = true;
                    let mut out = out.clone();
                    out.size = cut.len() as u64;
                    tree.write(&out, &mut cut.as_bytes())
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            }
            let seen = versions.entry(version.to_string()).or_default();
            if rest == "modules.dep" || rest == "modules.alias" {
                seen.indexed = true;
            } else if kind == Kind::File && depmod::module_name(rest).is_some() && !seen.indexed {
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("entry {path:?}: {e}"))?;
                // Only fatal if the index has to be made from the modules.
                match modules::read(rest, &bytes) {
                    Ok(module) => seen.modules.push(module),
                    Err(e) => {
                        seen.unreadable.get_or_insert(e);
                    }
                }
                module_bytes = Some(bytes);
            }
        }
        match &module_bytes {
            Some(bytes) => tree.write(&out, &mut &bytes[..]),
            None => tree.write(&out, &mut entry),
        }
        .map_err(|e| e.to_string())?;
    }
    for (version, seen) in versions {
        if seen.indexed || (seen.modules.is_empty() && seen.unreadable.is_none()) {
            continue;
        }
        if let Some(e) = seen.unreadable {
            return Err(format!("making the modules index of {version}: {e}"));
        }
        let found = seen.modules;
        let dir = format!("lib/modules/{version}");
        tree.bytes(
            &format!("{dir}/modules.dep"),
            0o644,
            depmod::modules_dep(&found).as_bytes(),
        )
        .and_then(|()| {
            let alias = depmod::modules_alias(&found);
            tree.bytes(&format!("{dir}/modules.alias"), 0o644, alias.as_bytes())
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// depmod's `modules.dep` or `modules.alias` of the version directory
/// `dir`, with only the lines of the modules in `keep`.
fn cut_index(
    file: &str,
    text: &str,
    dir: &str,
    keep: &std::collections::BTreeSet<String>,
) -> String {
    let kept_names: std::collections::BTreeSet<String> =
        keep.iter().filter_map(|p| depmod::module_name(p)).collect();
    text.lines()
        .filter(|line| match file {
            "modules.dep" => depmod::parse_dep_line(line)
                .is_some_and(|dep| keep.contains(&format!("{dir}/{}", dep.path))),
            _ => {
                depmod::parse_alias_line(line).is_some_and(|alias| kept_names.contains(&alias.name))
            }
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The path from the directory of `from` to `to`, both relative to `/`.
fn relative(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = entry::parent(from)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from_dir.len() - common];
    parts.extend(&to_parts[common..]);
    parts.join("/")
}

/// Writes the whole image to `sink`.
pub fn assemble(
    plan: &Plan,
    source: &dyn ImageSource,
    clock: Clock,
    sink: &mut dyn Sink,
) -> Result<(), AssembleError> {
    let definition = plan.definition;
    if let Some(volume) = definition.volumes.first() {
        return Err(AssembleError::Volumes {
            position: volume.name.position(),
        });
    }
    let mut tree = Tree {
        sink,
        directories: HashSet::new(),
        clock,
        scope: None,
    };
    if let Some(kernel) = &plan.kernel {
        write_kernel(&mut tree, source, &kernel.image.image, kernel.spec)?;
    }
    for image in &plan.init {
        write_root(&mut tree, source, &image.image, "", Root::Init)?;
    }
    // An image used by several bundles is written once; the others mount it.
    let mut written: HashMap<String, String> = HashMap::new();
    for container in &plan.containers {
        let image = &container.image.image;
        let defaults = container.image.defaults();
        let bundle_dir = container.bundle_path();
        let readonly = Bundle::readonly(container.entry, &defaults);
        let own_root = format!("{bundle_dir}/{}", if readonly { "rootfs" } else { "lower" });
        tree.directory(&bundle_dir)?;
        let root_source = match written.get(&image.digest) {
            Some(shared) => shared.clone(),
            None => {
                write_root(&mut tree, source, image, &own_root, Root::Container)?;
                written.insert(image.digest.clone(), own_root.clone());
                own_root
            }
        };
        let bundle = Bundle::make(
            container.entry,
            &defaults,
            &plan.ids,
            &bundle_dir,
            &root_source,
        )?;
        tree.scope(false);
        tree.bytes(
            &format!("{bundle_dir}/config.json"),
            0o644,
            &bundle.config_json(),
        )?;
        if !readonly {
            tree.directory(&format!("{bundle_dir}/tmp"))?;
        }
        tree.directory(&format!("{bundle_dir}/rootfs"))?;
        tree.bytes(
            &format!("{bundle_dir}/runtime.json"),
            0o644,
            &bundle.runtime_json(),
        )?;
    }
    tree.scope(false);
    for file in &definition.files {
        write_file(&mut tree, definition, &plan.ids, file)?;
    }
    tree.sink.finish()?;
    Ok(())
}

/// A `files:` entry. Sources are read relative to the directory of the YAML
/// file that names them (LinuxKit: the working directory, which is usually
/// the same); `~/` is the home directory.
fn write_file(
    tree: &mut Tree,
    definition: &Definition,
    ids: &IdMap,
    file: &File,
) -> Result<(), AssembleError> {
    let fail = |message: String| AssembleError::File {
        position: file.path.position(),
        path: file.path.value.clone(),
        message,
    };
    let path = entry::clean_path(&file.path).map_err(fail)?;
    let is_dir = file.directory == Some(true);
    let mode = match &file.mode {
        Some(m) => spec::mode(m).map_err(fail)?,
        None if is_dir => 0o700,
        None => 0o600,
    };
    let uid = file
        .uid
        .as_ref()
        .map(|i| ids.resolve(i))
        .transpose()?
        .unwrap_or(0);
    let gid = file
        .gid
        .as_ref()
        .map(|i| ids.resolve(i))
        .transpose()?
        .unwrap_or(0);
    let bytes = if let Some(contents) = &file.contents {
        Some(contents.clone().into_bytes())
    } else if let Some(source) = &file.source {
        let resolved = resolve_source(source, file.path.origin.as_deref());
        match std::fs::read(&resolved) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound && file.optional == Some(true) => {
                return Ok(());
            }
            Err(e) => {
                return Err(fail(format!(
                    "cannot read source {}: {e}",
                    resolved.display()
                )));
            }
        }
    } else if file.metadata.is_some() {
        let yaml = serde_saphyr::to_string(definition)
            .map_err(|e| fail(format!("cannot write the definition as YAML: {e}")))?;
        Some(yaml.into_bytes())
    } else {
        None
    };
    // Parents take the file's read bits as search bits, and its owner.
    let mut parent_mode = mode & 0o777;
    for class in [0o700, 0o070, 0o007] {
        if mode & class != 0 {
            parent_mode |= class & 0o111;
        }
    }
    tree.parents(&path, parent_mode, uid, gid)?;
    let mut entry = match (&file.symlink, is_dir) {
        (_, true) => Entry::directory(path, mode, tree.mtime()),
        (Some(target), false) => {
            let mut link = Entry::symlink(path, target.clone(), tree.mtime());
            link.mode = mode;
            link
        }
        (None, false) => {
            let bytes = bytes.unwrap_or_default();
            let mut entry = Entry::file(path, mode, bytes.len() as u64, tree.mtime());
            entry.uid = uid;
            entry.gid = gid;
            tree.write(&entry, &mut &bytes[..])?;
            return Ok(());
        }
    };
    entry.uid = uid;
    entry.gid = gid;
    tree.write(&entry, &mut io::empty())?;
    Ok(())
}

fn resolve_source(source: &str, origin: Option<&str>) -> PathBuf {
    if let Some(rest) = source.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    let path = Path::new(source);
    match origin.map(Path::new).and_then(Path::parent) {
        Some(dir) if path.is_relative() && !origin.is_some_and(|o| o.starts_with('<')) => {
            dir.join(path)
        }
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            out.append_data(&mut header, path, *data).unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn unreadable_modules_without_an_index_cannot_be_chosen_from() {
        let xz = tarball(&[("lib/modules/6.1/kernel/a.ko.xz", b"\xfd7zXZ")]);
        let error = catalog_of(&mut &xz[..]).unwrap_err();
        assert!(
            error.contains("6.1") && error.contains("run depmod"),
            "{error}"
        );
        // With depmod's index, the index says what each module needs.
        let indexed = tarball(&[
            ("lib/modules/6.1/kernel/a.ko.xz", b"\xfd7zXZ"),
            ("lib/modules/6.1/modules.dep", b"kernel/a.ko.xz:\n"),
        ]);
        let catalog = catalog_of(&mut &indexed[..]).unwrap();
        assert_eq!(
            catalog
                .select(&["a".into()], true)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["lib/modules/6.1/kernel/a.ko.xz"]
        );
    }

    #[test]
    fn relative_links() {
        assert_eq!(relative("usr/bin/a", "usr/bin/b"), "b");
        assert_eq!(
            relative("lib/modules/x/a.ko", "lib/firmware/f"),
            "../../firmware/f"
        );
        assert_eq!(relative("a", "b/c"), "b/c");
    }
}
