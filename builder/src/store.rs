//! The image store: where images come from, addressed by digest once
//! resolved.
//!
//! [`ImageSource`] is the interface the build uses; [`LocalLayout`] serves it
//! from an OCI image layout on disk (berth's cache, laid out like LinuxKit's:
//! `index.json` whose entries carry `org.opencontainers.image.ref.name`, and
//! `blobs/sha256/`). Registry pulls slot in behind the same trait.
//! Every blob is checked against its digest as it is read; nothing here
//! writes to the layout.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use crate::reference::RegistryRef;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image {reference} not found: looked in the cache at {}", cache.display())]
    NotFound { reference: String, cache: PathBuf },
    #[error("image {reference}: no {arch} image in its index (it has: {available})")]
    NoPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("image {reference}: blob {digest}: {source}")]
    Blob {
        reference: String,
        digest: String,
        source: io::Error,
    },
    #[error("image {reference}: {what} is not valid: {message}")]
    Invalid {
        reference: String,
        what: String,
        message: String,
    },
    #[error("cache {}: {source}", cache.display())]
    Cache { cache: PathBuf, source: io::Error },
    #[error("not in the cache at {}, and pulling failed: {source}", cache.display())]
    Pull {
        cache: PathBuf,
        source: Box<crate::registry::RegistryError>,
    },
}

/// An image pinned by digest, with what the build needs to know of it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as the definition wrote it, fully expanded.
    pub reference: String,
    /// The digest of the image manifest.
    pub digest: String,
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
}

/// Where images come from.
pub trait ImageSource: Sync {
    /// Finds the image `reference` names for `arch` (`amd64`, `arm64`).
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<Image, StoreError>;
    /// Opens a blob; the reader fails at its end if the bytes do not match
    /// `digest`.
    fn open_blob(&self, reference: &str, digest: &str) -> Result<Box<dyn Read + Send>, StoreError>;
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    root: PathBuf,
}

impl LocalLayout {
    pub fn new(root: impl Into<PathBuf>) -> LocalLayout {
        LocalLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let (algorithm, hex) = digest.split_once(':')?;
        let safe = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        (algorithm == "sha256" && safe).then(|| self.root.join("blobs").join(algorithm).join(hex))
    }

    fn read_small_blob(&self, reference: &str, digest: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.open_blob(reference, digest)?
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::Blob {
                reference: reference.into(),
                digest: digest.into(),
                source,
            })?;
        Ok(bytes)
    }

    fn index(&self) -> Result<Option<ImageIndex>, StoreError> {
        let path = self.root.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Cache {
                    cache: self.root.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, format!("index.json: {e}")),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Cache {
                cache: self.root.clone(),
                source,
            }),
        }
    }

    /// The names an image may be stored under: the fully expanded reference,
    /// and LinuxKit's form, which does not add `:latest`.
    fn names(reference: &RegistryRef) -> Vec<String> {
        let mut names = vec![reference.to_string()];
        if reference.tag.is_none() && reference.digest.is_none() {
            names.push(format!("{}/{}", reference.registry, reference.repository));
        }
        names
    }

    fn find(&self, reference: &RegistryRef) -> Result<Option<Descriptor>, StoreError> {
        let Some(index) = self.index()? else {
            return Ok(None);
        };
        let names = Self::names(reference);
        let by_name = index.manifests().iter().find(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|n| names.contains(n))
        });
        if let Some(found) = by_name {
            if let Some(digest) = &reference.digest
                && found.digest().to_string() != *digest
            {
                return Ok(None);
            }
            return Ok(Some(found.clone()));
        }
        // Pinned by digest: any entry with that digest will do.
        Ok(reference.digest.as_ref().and_then(|digest| {
            index
                .manifests()
                .iter()
                .find(|d| d.digest().to_string() == *digest)
                .cloned()
        }))
    }
}

fn invalid(reference: &str, what: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        reference: reference.into(),
        what: what.into(),
        message: message.to_string(),
    }
}

impl ImageSource for LocalLayout {
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<Image, StoreError> {
        let name = reference.to_string();
        let mut descriptor = self.find(reference)?.ok_or_else(|| StoreError::NotFound {
            reference: name.clone(),
            cache: self.root.clone(),
        })?;
        if is_index_type(descriptor.media_type()) {
            let bytes = self.read_small_blob(&name, descriptor.digest().as_ref())?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| invalid(&name, "image index", e))?;
            let matching = index.manifests().iter().find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.architecture().to_string() == arch && p.os().to_string() == "linux"
                })
            });
            descriptor = match matching {
                Some(m) => m.clone(),
                None => {
                    let available: Vec<String> = index
                        .manifests()
                        .iter()
                        .filter_map(|m| m.platform().as_ref())
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                        .collect();
                    return Err(StoreError::NoPlatform {
                        reference: name,
                        arch: arch.into(),
                        available: available.join(", "),
                    });
                }
            };
        }
        let digest = descriptor.digest().to_string();
        let bytes = self.read_small_blob(&name, &digest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&name, "image manifest", e))?;
        let config_digest = manifest.config().digest().to_string();
        let config_bytes = self.read_small_blob(&name, &config_digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&name, "image configuration", e))?;
        if config.architecture().to_string() != arch {
            return Err(StoreError::NoPlatform {
                reference: name,
                arch: arch.into(),
                available: format!("linux/{}", config.architecture()),
            });
        }
        Ok(Image {
            reference: name,
            digest,
            config,
            layers: manifest.layers().clone(),
        })
    }

    fn open_blob(&self, reference: &str, digest: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let fail = |source| StoreError::Blob {
            reference: reference.into(),
            digest: digest.into(),
            source,
        };
        let path = self.blob_path(digest).ok_or_else(|| {
            fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only sha256 digests are supported",
            ))
        })?;
        let file = File::open(&path)
            .map_err(|e| fail(io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
        Ok(Box::new(VerifyingReader {
            inner: BufReader::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            expected: digest
                .split_once(':')
                .map(|(_, h)| h.to_string())
                .unwrap_or_default(),
            done: false,
        }))
    }
}

fn is_index_type(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => {
            other == "application/vnd.docker.distribution.manifest.list.v2+json"
        }
        _ => false,
    }
}

/// Hashes what passes through and fails at the end if the digest is wrong,
/// so a corrupt blob can never complete a build.
struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
    done: bool,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
        } else if !self.done && !buf.is_empty() {
            self.done = true;
            let actual = format!("{:x}", std::mem::take(&mut self.hasher).finalize());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content does not match its digest (it hashes to sha256:{actual})"),
                ));
            }
        }
        Ok(n)
    }
}

/// The cache directory: `--cache`, else `$BERTH_CACHE`, else
/// `~/.cache/berth`.
pub fn default_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".cache").join("berth")
}

/// The cache first, then the registry: what `berth build` uses.
///
/// An image found in the cache is used as it is unless `pull` is set; one
/// that is missing (or lacks the requested architecture) is pulled into the
/// cache and read back from there, so every build reads images the same
/// way. `offline` never touches the network.
pub struct CacheThenRegistry {
    pub layout: LocalLayout,
    pub cache: crate::cache::Cache,
    pub remote: Option<crate::registry::Remote>,
    pub pull: bool,
}

impl ImageSource for CacheThenRegistry {
    fn resolve(&self, reference: &RegistryRef, arch: &str) -> Result<Image, StoreError> {
        if !self.pull || self.remote.is_none() {
            match self.layout.resolve(reference, arch) {
                Ok(image) => return Ok(image),
                Err(error) if self.remote.is_none() => return Err(error),
                Err(_) => {}
            }
        }
        let remote = self.remote.as_ref().expect("checked above");
        remote
            .pull(&self.cache, reference, arch)
            .map_err(|source| StoreError::Pull {
                cache: self.layout.root().to_path_buf(),
                source: Box::new(source),
            })?;
        self.layout.resolve(reference, arch)
    }

    fn open_blob(&self, reference: &str, digest: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        self.layout.open_blob(reference, digest)
    }
}
