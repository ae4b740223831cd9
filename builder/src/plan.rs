//! The plan: every image the definition names, resolved once, at the start,
//! to an image pinned by digest, with its `org.mobyproject.config` label
//! parsed, and every container entry paired with its image, its label and
//! its place on the image.
//!
//! After this nothing looks an image up by name again, so a tag that moves
//! during a build cannot mix two versions of an image; assembly walks the
//! plan, not the YAML.
//!
//! The trust policy ([`crate::trust`]) is checked here, for each image as
//! soon as it is pinned: against the digest the build will use, before its
//! label is parsed or any layer is read.

use std::collections::HashMap;
use std::sync::Arc;

use contract::BundleKind;
use oci::lockfile::{KeyUse, LockFile};
use oci::reference::{Reference, ReferenceError, RegistryRef};
use oci::{ImageSource, ResolvedImage, SourceError};

use crate::bundle::{IdMap, ImageDefaults};
use crate::spec::{self, Container, Definition, Located, SpecError};
use crate::trust::{Policy, TrustError};

pub const LABEL: &str = "org.mobyproject.config";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{position}")]
    Reference {
        position: String,
        #[source]
        source: ReferenceError,
    },
    #[error("{position}")]
    Store {
        position: String,
        #[source]
        source: SourceError,
    },
    #[error(
        "{position}: image {reference}: @pkg: references are resolved by `berth build` before planning"
    )]
    Package { position: String, reference: String },
    #[error(transparent)]
    Label(#[from] SpecError),
    #[error("{position}: image {reference} is not in the lock file")]
    NotLocked { position: String, reference: String },
    #[error("{position}")]
    Untrusted {
        position: String,
        #[source]
        source: TrustError,
    },
}

/// An image with its parsed label, shared by every entry that names it.
#[derive(Debug)]
pub struct PlannedImage {
    pub image: ResolvedImage,
    pub label: Option<Container>,
    /// The keys of the trust policy that verified the image's signature,
    /// or `None` when no rule of the policy asks for one.
    pub verified_by: Option<Vec<KeyUse>>,
}

impl PlannedImage {
    /// What the image itself contributes to a bundle: its configuration's
    /// command, environment and directory, and its label.
    pub fn defaults(&self) -> ImageDefaults<'_> {
        ImageDefaults::of(&self.image.config, self.label.as_ref())
    }
}

/// One `onboot`, `onshutdown` or `services` entry, ready to become a bundle.
#[derive(Debug)]
pub struct PlannedContainer<'d> {
    pub kind: BundleKind,
    /// Its position in its section: onboot and onshutdown bundles carry it.
    pub index: usize,
    pub entry: &'d Container,
    pub image: Arc<PlannedImage>,
}

impl PlannedContainer<'_> {
    /// `containers/onboot/NNN-name`, `containers/services/name`, …
    pub fn bundle_path(&self) -> String {
        self.kind.bundle_path(self.index, self.entry.name())
    }
}

/// The kernel section and its image.
#[derive(Debug)]
pub struct PlannedKernel<'d> {
    pub spec: &'d spec::Kernel,
    pub image: Arc<PlannedImage>,
}

#[derive(Debug)]
pub struct Plan<'d> {
    /// The definition, for what is not an image: `files:` (and
    /// `metadata: yaml`, which is the definition itself) and `volumes:`.
    pub definition: &'d Definition,
    pub kernel: Option<PlannedKernel<'d>>,
    pub init: Vec<Arc<PlannedImage>>,
    /// The boot loaders and stubs (`boot:`), when the definition names them.
    pub boot: Option<Arc<PlannedImage>>,
    /// Onboot, then onshutdown, then services: LinuxKit's order.
    pub containers: Vec<PlannedContainer<'d>>,
    /// The uid/gid each entry's name stands for.
    pub ids: IdMap,
    locked: LockFile,
}

impl<'d> Plan<'d> {
    /// Resolves every reference in `definition` for `arch` through `source`,
    /// each image checked against `policy` once pinned. With a `lock`,
    /// every reference is pinned to the digest it lists, and to the index
    /// it lists, which must list that digest.
    pub fn resolve(
        definition: &'d Definition,
        source: &dyn ImageSource,
        arch: &str,
        lock: Option<&LockFile>,
        policy: &Policy,
    ) -> Result<Plan<'d>, PlanError> {
        let mut resolved: HashMap<String, Arc<PlannedImage>> = HashMap::new();
        let mut locked = LockFile::default();
        for reference in definition.image_references() {
            if resolved.contains_key(&reference.value) {
                continue;
            }
            let (name, image) = resolve_one(reference, source, arch, lock, policy)?;
            locked
                .digests
                .insert(name.clone(), image.image.digest.clone());
            if let Some(index) = &image.image.index {
                locked.indexes.insert(name.clone(), index.clone());
            }
            if let Some(keys) = &image.verified_by {
                locked.verified_by.insert(name, keys.clone());
            }
            resolved.insert(reference.value.clone(), Arc::new(image));
        }
        let image = |reference: &Located<String>| Arc::clone(&resolved[&reference.value]);
        let kernel = definition.kernel.as_ref().and_then(|spec| {
            spec.image.as_ref().map(|reference| PlannedKernel {
                spec,
                image: image(reference),
            })
        });
        let init = definition.init.iter().map(image).collect();
        let boot = definition.boot.as_ref().map(|boot| image(&boot.image));
        let mut containers = Vec::new();
        for (kind, entries) in [
            (BundleKind::Onboot, &definition.onboot),
            (BundleKind::Onshutdown, &definition.onshutdown),
            (BundleKind::Service, &definition.services),
        ] {
            for (index, entry) in entries.iter().enumerate() {
                let reference = entry
                    .image
                    .as_ref()
                    .expect("validated: every entry has an image");
                containers.push(PlannedContainer {
                    kind,
                    index,
                    entry,
                    image: image(reference),
                });
            }
        }
        Ok(Plan {
            definition,
            kernel,
            init,
            boot,
            containers,
            ids: IdMap::new(definition),
            locked,
        })
    }

    /// Every image of the plan: kernel, init, boot, containers' (an image
    /// named twice comes twice).
    pub fn images(&self) -> impl Iterator<Item = &Arc<PlannedImage>> {
        self.kernel
            .iter()
            .map(|k| &k.image)
            .chain(&self.init)
            .chain(&self.boot)
            .chain(self.containers.iter().map(|c| &c.image))
    }

    /// What every reference resolved to, and the keys that verified it,
    /// as a lock.
    pub fn lock(&self) -> LockFile {
        self.locked.clone()
    }
}

/// Resolves one reference: its name in the lock file, the image (checked
/// against the trust policy) and its label.
fn resolve_one(
    reference: &Located<String>,
    source: &dyn ImageSource,
    arch: &str,
    lock: Option<&LockFile>,
    policy: &Policy,
) -> Result<(String, PlannedImage), PlanError> {
    let parsed = Reference::parse(reference).map_err(|source| PlanError::Reference {
        position: reference.position(),
        source,
    })?;
    let mut registry = match parsed {
        Reference::Registry(r) => r,
        Reference::Package(_) => {
            return Err(PlanError::Package {
                position: reference.position(),
                reference: reference.value.clone(),
            });
        }
    };
    let unpinned = RegistryRef {
        digest: None,
        ..registry.clone()
    };
    let name = unpinned.to_string();
    let image = match lock {
        // Pinned by the lock: to the manifest, through the index it was
        // chosen from when the lock names one, so the index's attestations
        // and signatures are found as they were.
        Some(lock) => {
            let digest = lock
                .digests
                .get(&name)
                .ok_or_else(|| PlanError::NotLocked {
                    position: reference.position(),
                    reference: name.clone(),
                })?;
            match lock.indexes.get(&name) {
                Some(index) => {
                    registry.digest = Some(index.clone());
                    source.resolve_locked(&registry, digest, arch)
                }
                None => {
                    registry.digest = Some(digest.clone());
                    source.resolve(&registry, arch)
                }
            }
        }
        None => source.resolve(&registry, arch),
    }
    .map_err(|source| PlanError::Store {
        position: reference.position(),
        source,
    })?;
    let verified_by =
        policy
            .verify(source, &unpinned, &image)
            .map_err(|source| PlanError::Untrusted {
                position: reference.position(),
                source,
            })?;
    let label = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(LABEL))
        .map(|text| {
            let parsed = spec::parse_label(text, &image.reference)?;
            spec::check_label(&parsed, &image.reference)?;
            Ok::<_, SpecError>(parsed)
        })
        .transpose()?;
    Ok((
        name,
        PlannedImage {
            image,
            label,
            verified_by,
        },
    ))
}
