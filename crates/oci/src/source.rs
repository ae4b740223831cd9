//! Where a build's images come from: the [`ImageSource`] trait, served by
//! the cache alone ([`Layout`]) or by [`CacheThenRegistry`], which pulls
//! what the cache lacks.
//!
//! Either way images are read back from the cache, so every build reads
//! them the same way, verified against their digests. An image's
//! signatures ([`crate::signature`]) come the same way: from the cache, or
//! fetched into it.

use std::io::Read;
use std::path::PathBuf;

use crate::layout::{Layout, LayoutError, ResolvedImage};
use crate::reference::RegistryRef;
use crate::registry::{RegistryError, Remote, SmallManifest};
use crate::signature::{self, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("not in the cache at {}, and pulling failed", cache.display())]
    Pull {
        cache: PathBuf,
        #[source]
        source: Box<RegistryError>,
    },
    #[error(transparent)]
    Signatures(Box<SignatureError>),
}

impl From<SignatureError> for SourceError {
    fn from(error: SignatureError) -> SourceError {
        SourceError::Signatures(Box::new(error))
    }
}

/// Where images come from.
pub trait ImageSource: Sync {
    /// Finds the image `reference` names for `arch` (`amd64`, `arm64`).
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<ResolvedImage, SourceError>;
    /// Finds the image a lock file pinned with its index: `reference`
    /// names the index by its digest, `manifest` the image's manifest,
    /// which must be listed in it ([`Layout::resolve_locked`]).
    fn resolve_locked(
        &self,
        reference: &RegistryRef,
        manifest: &str,
        arch: &str,
    ) -> Result<ResolvedImage, SourceError>;
    /// Opens a blob; the reader fails at its end if the bytes do not match
    /// `digest`.
    fn open_blob(&self, reference: &str, digest: &str)
    -> Result<Box<dyn Read + Send>, SourceError>;
    /// The SPDX documents attested for a resolved image
    /// ([`crate::attestation`]); none where the source keeps none.
    fn spdx_documents(&self, _image: &ResolvedImage) -> Result<Vec<Vec<u8>>, SourceError> {
        Ok(Vec::new())
    }
    /// The `.sig` manifest holding the signatures of `digest` in `image`'s
    /// repository, unverified (checking it is [`signature::check`]'s
    /// business); `None` when there is none.
    fn signatures(
        &self,
        image: &RegistryRef,
        digest: &str,
    ) -> Result<Option<SmallManifest>, SourceError>;
}

impl ImageSource for Layout {
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<ResolvedImage, SourceError> {
        Ok(Layout::resolve(self, reference, arch)?)
    }

    fn resolve_locked(
        &self,
        reference: &RegistryRef,
        manifest: &str,
        arch: &str,
    ) -> Result<ResolvedImage, SourceError> {
        Ok(Layout::resolve_locked(self, reference, manifest, arch)?)
    }

    fn open_blob(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        Ok(Layout::open_blob(self, reference, digest)?)
    }

    fn spdx_documents(&self, image: &ResolvedImage) -> Result<Vec<Vec<u8>>, SourceError> {
        Ok(Layout::spdx_documents(self, image)?)
    }

    fn signatures(
        &self,
        image: &RegistryRef,
        digest: &str,
    ) -> Result<Option<SmallManifest>, SourceError> {
        Ok(signature::cached_signatures(self, image, digest)?)
    }
}

/// The cache first, then the registry: what `berth build` uses.
///
/// An image found in the cache is used as it is unless `pull` is set; one
/// that is missing (or lacks the requested architecture) is pulled into the
/// cache and read back from there. Signatures are asked of the registry
/// each time, as they may have gained one, and kept in the cache
/// (unverified, as `cache pull` keeps them) for a build offline; the
/// cache's answer when the registry has none or cannot be reached. Without
/// a remote (offline), the network is never touched.
pub struct CacheThenRegistry {
    pub cache: Layout,
    pub remote: Option<Remote>,
    pub pull: bool,
}

impl CacheThenRegistry {
    /// `read` from the cache; when that fails (or `pull` is set), pulls
    /// `reference` for `arch` and reads again. An index that does not list
    /// the manifest a lock pinned is final: its digest fixes its content.
    fn cached_or_pulled(
        &self,
        reference: &RegistryRef,
        arch: &str,
        read: impl Fn(&Layout) -> Result<ResolvedImage, LayoutError>,
    ) -> Result<ResolvedImage, SourceError> {
        let Some(remote) = &self.remote else {
            return Ok(read(&self.cache)?);
        };
        if !self.pull {
            match read(&self.cache) {
                Ok(image) => return Ok(image),
                Err(error @ LayoutError::NotInIndex { .. }) => return Err(error.into()),
                Err(_) => {}
            }
        }
        remote
            .pull(&self.cache, reference, arch)
            .map_err(|source| SourceError::Pull {
                cache: self.cache.root().to_path_buf(),
                source: Box::new(source),
            })?;
        Ok(read(&self.cache)?)
    }
}

impl ImageSource for CacheThenRegistry {
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<ResolvedImage, SourceError> {
        self.cached_or_pulled(reference, arch, |cache| cache.resolve(reference, arch))
    }

    fn resolve_locked(
        &self,
        reference: &RegistryRef,
        manifest: &str,
        arch: &str,
    ) -> Result<ResolvedImage, SourceError> {
        self.cached_or_pulled(reference, arch, |cache| {
            cache.resolve_locked(reference, manifest, arch)
        })
    }

    fn open_blob(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        Ok(self.cache.open_blob(reference, digest)?)
    }

    fn spdx_documents(&self, image: &ResolvedImage) -> Result<Vec<Vec<u8>>, SourceError> {
        Ok(self.cache.spdx_documents(image)?)
    }

    fn signatures(
        &self,
        image: &RegistryRef,
        digest: &str,
    ) -> Result<Option<SmallManifest>, SourceError> {
        // The registry's signatures are the newest (one may have been
        // added since the cache kept them); the cache's stand when the
        // registry has none (an image signed locally) or cannot be asked.
        if let Some(remote) = &self.remote
            && let Err(error) = signature::pull(&self.cache, remote, image, digest)
            && signature::cached_signatures(&self.cache, image, digest)?.is_none()
        {
            return Err(error.into());
        }
        Ok(signature::cached_signatures(&self.cache, image, digest)?)
    }
}
