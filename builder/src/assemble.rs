//! Assembly: the whole filesystem of the image as one entry stream, in
//! LinuxKit's order: kernel, init images, onboot, onshutdown and services
//! bundles, then `files`, then the build's SBOM ([`crate::sbom`]) at
//! [`sbom::IMAGE_PATH`].
//!
//! Images must already be resolved ([`crate::plan`]); this module reads
//! their blobs through the [`ImageSource`] and writes to a [`Sink`]. It never
//! touches the host filesystem except to read `files:` sources.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use archive::Clock;
use archive::entry::{self, Entry, Kind, Sink};
use oci::{ImageSource, ResolvedImage};

use crate::bundle::{Bundle, BundleError, IdMap};
use crate::flatten::{FlattenError, flatten};
use crate::kernel::{KernelError, write_kernel};
use crate::plan::Plan;
use crate::sbom::{self, AssembledFile, SbomError};
use crate::spec::{self, Definition, File, SpecError};
use crate::tree::Tree;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
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
    #[error(transparent)]
    Sbom(#[from] SbomError),
    #[error("writing the image")]
    Write(#[source] io::Error),
}

impl From<io::Error> for AssembleError {
    fn from(e: io::Error) -> Self {
        AssembleError::Write(e)
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

/// Writes the whole image of the build named `name` to `sink`; returns its
/// SBOM, which is also in the image.
pub fn assemble(
    plan: &Plan,
    source: &dyn ImageSource,
    clock: Clock,
    name: &str,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, AssembleError> {
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
    let mut assembled = sbom::Assembled::default();
    if let Some(kernel) = &plan.kernel {
        write_kernel(&mut tree, source, &kernel.image.image, kernel.spec)?;
        // The release is the name of the modules' directory.
        assembled.kernel_release = tree
            .directories
            .iter()
            .filter_map(|d| d.strip_prefix("lib/modules/"))
            .filter(|release| !release.contains('/'))
            .min()
            .map(str::to_string);
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
        // The last entry at a path is what the image holds (files: lists of
        // several YAML files append), and what the SBOM lists.
        match write_file(&mut tree, definition, &plan.ids, file)? {
            Wrote::Nothing => {}
            Wrote::Other(path) => assembled.files.retain(|f| f.path != path),
            Wrote::File(written) => {
                assembled.files.retain(|f| f.path != written.path);
                assembled.files.push(written);
            }
        }
    }
    for image in plan.images() {
        if assembled.attested.contains_key(&image.image.reference) {
            continue;
        }
        let documents = source
            .spdx_documents(&image.image)
            .map_err(|e| AssembleError::Image {
                image: image.image.reference.clone(),
                message: e.to_string(),
            })?;
        assembled
            .attested
            .insert(image.image.reference.clone(), documents);
    }
    let document = sbom::document(name, plan, &assembled, clock)?;
    tree.bytes(sbom::IMAGE_PATH, 0o644, &document)?;
    tree.sink.finish()?;
    Ok(document)
}

/// A `files:` entry. Sources are read relative to the directory of the YAML
/// file that names them (LinuxKit: the working directory, which is usually
/// the same); `~/` is the home directory. A regular file is returned with
/// its checksums, for the SBOM.
fn write_file(
    tree: &mut Tree,
    definition: &Definition,
    ids: &IdMap,
    file: &File,
) -> Result<Wrote, AssembleError> {
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
                return Ok(Wrote::Nothing);
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
    let at = path.clone();
    let mut entry = match (&file.symlink, is_dir) {
        (_, true) => Entry::directory(path, mode, tree.mtime()),
        (Some(target), false) => {
            let mut link = Entry::symlink(path, target.clone(), tree.mtime());
            link.mode = mode;
            link
        }
        (None, false) => {
            let bytes = bytes.unwrap_or_default();
            let written = AssembledFile::new(&path, &bytes);
            let mut entry = Entry::file(path, mode, bytes.len() as u64, tree.mtime());
            entry.uid = uid;
            entry.gid = gid;
            tree.write(&entry, &mut &bytes[..])?;
            return Ok(Wrote::File(written));
        }
    };
    entry.uid = uid;
    entry.gid = gid;
    tree.write(&entry, &mut io::empty())?;
    Ok(Wrote::Other(at))
}

/// What one `files:` entry put into the tree.
enum Wrote {
    /// Nothing: an optional source that is not there.
    Nothing,
    /// A directory or a symbolic link at this path.
    Other(String),
    /// A regular file, with its checksums.
    File(AssembledFile),
}

/// `source` relative to the directory of the YAML file `origin` names (the
/// working directory for standard input); `~/` is the home directory.
pub(crate) fn resolve_source(source: &str, origin: Option<&str>) -> PathBuf {
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
