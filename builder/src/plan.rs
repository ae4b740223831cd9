//! The plan: every image the definition names, resolved once, at the start,
//! to an image pinned by digest, with its `org.mobyproject.config` label
//! parsed.
//!
//! After this nothing looks an image up by name again, so a tag that moves
//! during a build cannot mix two versions of an image.

use std::collections::HashMap;

use crate::lock::Lock;
use crate::reference::{Reference, ReferenceError, RegistryRef};
use crate::spec::{self, Definition, Located, SpecError};
use crate::store::{Image, ImageSource, StoreError};

pub const LABEL: &str = "org.mobyproject.config";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{position}: {source}")]
    Reference {
        position: String,
        source: ReferenceError,
    },
    #[error("{position}: {source}")]
    Store {
        position: String,
        source: StoreError,
    },
    #[error(
        "{position}: image {reference}: @pkg: references are resolved by `berth build` before planning"
    )]
    Package { position: String, reference: String },
    #[error(transparent)]
    Label(#[from] SpecError),
    #[error("{position}: image {reference} is not in the lock file")]
    NotLocked { position: String, reference: String },
}

#[derive(Debug, Default)]
pub struct Plan {
    images: HashMap<String, Image>,
    labels: HashMap<String, spec::Image>,
    locked: std::collections::BTreeMap<String, String>,
}

impl Plan {
    /// Resolves every reference in `definition` for `arch` through `source`.
    /// With a `lock`, every reference is pinned to the digest it lists.
    pub fn resolve(
        definition: &Definition,
        source: &dyn ImageSource,
        arch: &str,
        lock: Option<&Lock>,
    ) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        for reference in definition.image_references() {
            if plan.images.contains_key(&reference.value) {
                continue;
            }
            let parsed = Reference::parse(reference).map_err(|source| PlanError::Reference {
                position: reference.position(),
                source,
            })?;
            let registry = match parsed {
                Reference::Registry(mut r) => {
                    if let Some(lock) = lock {
                        let digest = lock.digests.get(&r.to_string()).ok_or_else(|| {
                            PlanError::NotLocked {
                                position: reference.position(),
                                reference: r.to_string(),
                            }
                        })?;
                        r.digest = Some(digest.clone());
                    }
                    r
                }
                Reference::Package(_) => {
                    return Err(PlanError::Package {
                        position: reference.position(),
                        reference: reference.value.clone(),
                    });
                }
            };
            let name = RegistryRef {
                digest: None,
                ..registry.clone()
            }
            .to_string();
            let image = source
                .resolve(&registry, arch)
                .map_err(|source| PlanError::Store {
                    position: reference.position(),
                    source,
                })?;
            let label = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.labels().as_ref())
                .and_then(|l| l.get(LABEL));
            if let Some(text) = label {
                let parsed = spec::parse_label(text, &image.reference)?;
                spec::check_label(&parsed, &image.reference)?;
                plan.labels.insert(reference.value.clone(), parsed);
            }
            plan.locked.insert(name, image.digest.clone());
            plan.images.insert(reference.value.clone(), image);
        }
        Ok(plan)
    }

    /// The image a reference of the definition resolved to.
    pub fn image(&self, reference: &Located<String>) -> &Image {
        &self.images[&reference.value]
    }

    pub fn label(&self, reference: &Located<String>) -> Option<&spec::Image> {
        self.labels.get(&reference.value)
    }

    /// What every reference resolved to, as a lock.
    pub fn lock(&self) -> Lock {
        Lock {
            digests: self.locked.clone(),
        }
    }
}
