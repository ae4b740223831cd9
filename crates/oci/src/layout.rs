//! The OCI image layout on disk: berth's cache, read and written through one
//! model.
//!
//! The directory is laid out like LinuxKit's cache: `oci-layout`,
//! `index.json` whose entries carry `org.opencontainers.image.ref.name`
//! (fully expanded references), and `blobs/sha256/`. `skopeo inspect
//! oci:DIR:REF` reads it.
//!
//! Reading: every blob is checked against its digest as it is read
//! ([`Layout::open_blob`]), and [`Layout::resolve`] finds an image by name
//! and picks the manifest for one architecture.
//!
//! Writing is crash-safe and shared: a blob is written under a temporary
//! name beside its final place, checked against its digest and size,
//! synced, and only then renamed into `blobs/sha256/`, so a build killed at
//! any moment leaves either no blob or a whole, correct one. `index.json` is
//! rewritten the same way, under an exclusive lock, so two builds sharing a
//! cache never lose each other's names. `berth cache clean` takes a second
//! lock exclusively, which every build holds shared, so it never deletes a
//! blob a running build is about to name.
//!
//! Talking to registries is [`crate::registry`]'s business, and choosing
//! between the two [`crate::source`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use archive::clock::DEFAULT_MTIME;
use archive::entry::{Entry, Sink, copy_entry, write_bytes};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::digest::{self, HashingWriter};
use crate::reference::RegistryRef;

/// The annotation that names an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cache {}", root.display())]
    Io {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "blob {digest}: received {actual} ({size} bytes), expected {digest} ({expected_size} bytes)"
    )]
    Mismatch {
        digest: String,
        actual: String,
        size: u64,
        expected_size: u64,
    },
    #[error("cache {}: index.json is not valid: {message}", root.display())]
    Index { root: PathBuf, message: String },
    #[error("no image named {0} in the cache")]
    NoSuchImage(String),
    #[error("image {reference} not found: looked in the cache at {}", cache.display())]
    NotFound { reference: String, cache: PathBuf },
    #[error("image {reference}: no {arch} image in its index (it has: {available})")]
    NoPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("image {reference}: manifest {manifest} is not listed in the index {index}")]
    NotInIndex {
        reference: String,
        index: String,
        manifest: String,
    },
    #[error("image {reference}: blob {digest}")]
    Blob {
        reference: String,
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("image {reference}: {what} is not valid: {message}")]
    Invalid {
        reference: String,
        what: String,
        message: String,
    },
}

/// An image pinned by digest, with what a build needs to know of it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as the definition wrote it, fully expanded.
    pub reference: String,
    /// The digest of the image manifest.
    pub digest: String,
    /// The digest of the image index the manifest was chosen from, when
    /// the reference named an index (a signature may be for either).
    pub index: Option<String>,
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
}

/// An OCI image layout directory, read and written.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// A lock on a file of the layout, held for as long as the value lives.
#[derive(Debug)]
pub struct FileLock(#[allow(dead_code)] File);

/// `index.json`, typed. Fields are in alphabetical order, the order the
/// file has always been written in.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    manifests: Vec<IndexEntry>,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion", default = "schema_version")]
    schema_version: u32,
    /// What other tools wrote (`annotations`, `subject`, …), kept as it was.
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

fn schema_version() -> u32 {
    2
}

/// One descriptor of `index.json`: what berth reads of it, and anything else
/// kept as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Value>,
    #[serde(default)]
    size: u64,
    /// What other tools wrote (`urls`, `artifactType`, …), kept as it was.
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

impl IndexEntry {
    fn name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    fn named(&self) -> Option<Named> {
        Some(Named {
            name: self.name()?.to_string(),
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size: self.size,
        })
    }
}

impl From<&Named> for IndexEntry {
    fn from(named: &Named) -> IndexEntry {
        IndexEntry {
            annotations: BTreeMap::from([(REF_NAME.to_string(), named.name.clone())]),
            digest: named.digest.clone(),
            media_type: named.media_type.clone(),
            platform: None,
            size: named.size,
            rest: BTreeMap::new(),
        }
    }
}

/// An entry of `index.json`: a name and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl Layout {
    /// Opens (creating if needed) the layout at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Layout, LayoutError> {
        let cache = Layout { root: root.into() };
        fs::create_dir_all(cache.root.join("blobs/sha256")).map_err(|e| cache.io(e))?;
        let marker = cache.root.join("oci-layout");
        if !marker.exists() {
            cache.write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, source: io::Error) -> LayoutError {
        LayoutError::Io {
            root: self.root.clone(),
            source,
        }
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<FileLock, LayoutError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(name))
            .map_err(|e| self.io(e))?;
        if exclusive {
            file.lock().map_err(|e| self.io(e))?;
        } else {
            file.lock_shared().map_err(|e| self.io(e))?;
        }
        Ok(FileLock(file))
    }

    /// Held by every build for its whole run; `clean` waits for it.
    pub fn use_lock(&self) -> Result<FileLock, LayoutError> {
        self.lock(".berth-use.lock", false)
    }

    /// Where the blob `digest` lives; `None` for a digest that is not a
    /// well-formed sha256 one, which therefore never names another path.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        digest::hex(digest).map(|hex| self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some_and(|p| p.is_file())
    }

    /// Starts writing the blob `digest` of `size` bytes.
    pub fn blob_writer(&self, digest: &str, size: u64) -> Result<BlobWriter, LayoutError> {
        let path = self.blob_path(digest).ok_or_else(|| {
            self.io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported digest {digest}"),
            ))
        })?;
        let temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(self.root.join("blobs/sha256"))
            .map_err(|e| self.io(e))?;
        Ok(BlobWriter {
            temp: HashingWriter::new(temp),
            path,
            digest: digest.to_string(),
            size,
        })
    }

    /// Writes a small blob held in memory (manifests, configs).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut writer = self.blob_writer(digest, bytes.len() as u64)?;
        writer.write_all(bytes).map_err(|e| self.io(e))?;
        writer.commit()
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
        let dir = path.parent().unwrap_or(&self.root);
        let mut temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .map_err(|e| self.io(e))?;
        temp.write_all(bytes).map_err(|e| self.io(e))?;
        persist(temp, path).map_err(|e| self.io(e))
    }

    /// `index.json`; a layout without one is empty.
    fn read_index(&self) -> Result<IndexFile, LayoutError> {
        match fs::read(self.root.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LayoutError::Index {
                root: self.root.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile {
                schema_version: 2,
                ..IndexFile::default()
            }),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Changes `index.json` under the index lock.
    fn edit_index(&self, edit: impl FnOnce(&mut Vec<IndexEntry>)) -> Result<(), LayoutError> {
        let _lock = self.lock(".berth-index.lock", true)?;
        let mut index = self.read_index()?;
        edit(&mut index.manifests);
        // Sorted by name, so the file does not depend on the order of pulls.
        index.manifests.sort_by(|a, b| a.name().cmp(&b.name()));
        let mut bytes = serde_json::to_vec(&index).expect("index.json serialises");
        bytes.push(b'\n');
        self.write_atomically(&self.root.join("index.json"), &bytes)
    }

    /// Names `digest` (already in the cache) `name`, replacing what the name
    /// pointed at before.
    pub fn tag(&self, named: &Named) -> Result<(), LayoutError> {
        self.edit_index(|manifests| {
            manifests.retain(|m| m.name() != Some(named.name.as_str()));
            manifests.push(IndexEntry::from(named));
        })
    }

    /// Removes a name; the blobs stay until [`Layout::clean`].
    pub fn untag(&self, name: &str) -> Result<(), LayoutError> {
        let mut found = false;
        self.edit_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| m.name() != Some(name));
            found = manifests.len() != before;
        })?;
        if found {
            Ok(())
        } else {
            Err(LayoutError::NoSuchImage(name.into()))
        }
    }

    /// Every name in the cache.
    pub fn list(&self) -> Result<Vec<Named>, LayoutError> {
        let index = self.read_index()?;
        let mut all: Vec<Named> = index
            .manifests
            .iter()
            .filter_map(IndexEntry::named)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The entry named `name`.
    pub fn named(&self, name: &str) -> Result<Named, LayoutError> {
        self.list()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LayoutError::NoSuchImage(name.into()))
    }

    /// The blobs reachable from the index: indexes, manifests, configs and
    /// layers. Missing blobs are skipped (a partial pull).
    pub fn reachable(&self) -> Result<BTreeSet<String>, LayoutError> {
        let index = self.read_index()?;
        let roots: Vec<String> = index.manifests.into_iter().map(|m| m.digest).collect();
        Ok(self.reachable_from(roots))
    }

    fn reachable_from(&self, roots: Vec<String>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = roots;
        while let Some(digest) = queue.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(path) = self.blob_path(&digest) else {
                continue;
            };
            let Ok(bytes) = fs::read(&path) else { continue };
            // Only JSON documents refer to other blobs; layers are skipped
            // cheaply by their first byte.
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(document) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            for key in ["manifests", "layers"] {
                for child in document[key].as_array().into_iter().flatten() {
                    if let Some(d) = child["digest"].as_str() {
                        queue.push(d.to_string());
                    }
                }
            }
            if let Some(d) = document["config"]["digest"].as_str() {
                queue.push(d.to_string());
            }
        }
        seen
    }

    /// Writes the image named `name` as an OCI archive: a tar of an OCI
    /// image layout holding just that image, readable by skopeo
    /// (`oci-archive:FILE`) and `berth cache import`.
    pub fn export(&self, name: &str, out: impl Write) -> Result<(), LayoutError> {
        let named = self.named(name)?;
        let io = |e| self.io(e);
        let mut tar = archive::tar::TarWriter::new(out);
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        write_bytes(
            &mut tar,
            &Entry::file("oci-layout", 0o644, layout.len() as u64, DEFAULT_MTIME),
            layout,
        )
        .map_err(io)?;
        let index = IndexFile {
            manifests: vec![IndexEntry::from(&named)],
            media_type: None,
            schema_version: 2,
            rest: BTreeMap::new(),
        };
        let index = serde_json::to_vec(&index).expect("index.json serialises");
        write_bytes(
            &mut tar,
            &Entry::file("index.json", 0o644, index.len() as u64, DEFAULT_MTIME),
            &index,
        )
        .map_err(io)?;
        for dir in ["blobs", "blobs/sha256"] {
            tar.entry(&Entry::directory(dir, 0o755, DEFAULT_MTIME))
                .map_err(io)?;
        }
        for digest in self.reachable_from(vec![named.digest.clone()]) {
            let path = self
                .blob_path(&digest)
                .expect("reachable digests are valid");
            let mut file = File::open(&path).map_err(io)?;
            let size = file.metadata().map_err(io)?.len();
            let hex = digest.trim_start_matches("sha256:");
            let entry = Entry::file(format!("blobs/sha256/{hex}"), 0o644, size, DEFAULT_MTIME);
            copy_entry(&mut tar, &entry, &mut file).map_err(io)?;
        }
        tar.finish().map_err(io)
    }

    /// Reads an OCI archive (as written by [`Layout::export`] or skopeo):
    /// every blob is verified on the way in, then every named image of its
    /// `index.json` is named in the cache. Returns the names.
    pub fn import(&self, archive: impl io::Read) -> Result<Vec<String>, LayoutError> {
        let invalid = |message: String| LayoutError::Index {
            root: self.root.clone(),
            message,
        };
        let mut archive = tar::Archive::new(archive);
        let mut index = None;
        for entry in archive.entries().map_err(|e| self.io(e))? {
            let mut entry = entry.map_err(|e| self.io(e))?;
            let path = entry.path().map_err(|e| self.io(e))?.display().to_string();
            let path = path.trim_start_matches("./").to_string();
            if path == "index.json" {
                let mut text = Vec::new();
                io::Read::read_to_end(&mut entry, &mut text).map_err(|e| self.io(e))?;
                index = Some(
                    serde_json::from_slice::<IndexFile>(&text)
                        .map_err(|e| invalid(format!("archive index.json: {e}")))?,
                );
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if hex.is_empty() {
                    continue;
                }
                let digest = format!("sha256:{hex}");
                if self.has_blob(&digest) {
                    continue;
                }
                let mut writer = self.blob_writer(&digest, entry.size())?;
                io::copy(&mut entry, &mut writer).map_err(|e| self.io(e))?;
                writer.commit()?;
            }
        }
        let index = index.ok_or_else(|| invalid("the archive has no index.json".into()))?;
        let mut names = Vec::new();
        for manifest in &index.manifests {
            let named = manifest
                .named()
                .ok_or_else(|| invalid("an image in the archive has no name annotation".into()))?;
            if !self.has_blob(&named.digest) {
                return Err(invalid(format!(
                    "{}: blob {} is not in the archive",
                    named.name, named.digest
                )));
            }
            self.tag(&named)?;
            names.push(named.name);
        }
        Ok(names)
    }

    /// Deletes blobs no name reaches, and leftovers of interrupted writes.
    /// Returns how many files and bytes were removed.
    pub fn clean(&self) -> Result<(usize, u64), LayoutError> {
        let _lock = self.lock(".berth-use.lock", true)?;
        let keep = self.reachable()?;
        let mut removed = (0, 0);
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&format!("sha256:{name}")) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).map_err(|e| self.io(e))?;
            removed.0 += 1;
            removed.1 += size;
        }
        Ok(removed)
    }

    /// Checks every blob against its digest; returns the ones that fail.
    pub fn verify(&self) -> Result<Vec<String>, LayoutError> {
        let mut bad = Vec::new();
        let dir = self.root.join("blobs/sha256");
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            names.insert(
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            );
        }
        for (name, path) in names {
            if name.starts_with(".partial-") {
                continue;
            }
            let mut hasher = HashingWriter::new(io::sink());
            let mut file = File::open(&path).map_err(|e| self.io(e))?;
            io::copy(&mut file, &mut hasher).map_err(|e| self.io(e))?;
            let (actual, _) = hasher.finish();
            let expected = format!("sha256:{name}");
            if actual != expected {
                bad.push(expected);
            }
        }
        Ok(bad)
    }
}

/// Reading images.
impl Layout {
    /// Finds the image `reference` names for `arch` (`amd64`, `arm64`):
    /// its manifest (through an index when the name points at one) and its
    /// configuration, each verified against its digest.
    pub fn resolve(
        &self,
        reference: &RegistryRef,
        arch: &str,
    ) -> Result<ResolvedImage, LayoutError> {
        self.resolve_with(reference, arch, None)
    }

    /// Finds the image a lock file pinned: the index `reference` names by
    /// its digest, and in it the manifest `manifest` (which must be listed
    /// there, and be for `arch`), so the image is known with its index as
    /// when it was locked.
    pub fn resolve_locked(
        &self,
        reference: &RegistryRef,
        manifest: &str,
        arch: &str,
    ) -> Result<ResolvedImage, LayoutError> {
        self.resolve_with(reference, arch, Some(manifest))
    }

    fn resolve_with(
        &self,
        reference: &RegistryRef,
        arch: &str,
        locked: Option<&str>,
    ) -> Result<ResolvedImage, LayoutError> {
        let name = reference.to_string();
        let mut descriptor = self.find(reference)?.ok_or_else(|| LayoutError::NotFound {
            reference: name.clone(),
            cache: self.root.clone(),
        })?;
        let mut index_digest = None;
        let is_index = is_index_type(descriptor.media_type());
        if let (Some(manifest), false) = (locked, is_index) {
            return Err(LayoutError::NotInIndex {
                reference: unpinned(reference),
                index: descriptor.digest().to_string(),
                manifest: manifest.into(),
            });
        }
        if is_index {
            index_digest = Some(descriptor.digest().to_string());
            let bytes = self.read_small_blob(&name, descriptor.digest().as_ref())?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| invalid(&name, "image index", e))?;
            descriptor = match locked {
                Some(manifest) => index
                    .manifests()
                    .iter()
                    .find(|m| m.digest().as_ref() == manifest)
                    .cloned()
                    .ok_or_else(|| LayoutError::NotInIndex {
                        reference: unpinned(reference),
                        index: descriptor.digest().to_string(),
                        manifest: manifest.into(),
                    })?,
                None => {
                    choose_platform(&index, arch).map_err(|available| LayoutError::NoPlatform {
                        reference: name.clone(),
                        arch: arch.into(),
                        available,
                    })?
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
            return Err(LayoutError::NoPlatform {
                reference: name,
                arch: arch.into(),
                available: format!("linux/{}", config.architecture()),
            });
        }
        Ok(ResolvedImage {
            reference: name,
            digest,
            index: index_digest,
            config,
            layers: manifest.layers().clone(),
        })
    }

    /// Opens a blob; the reader fails at its end if the bytes do not match
    /// `digest`, so a corrupt blob can never complete a build.
    pub fn open_blob(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Box<dyn Read + Send>, LayoutError> {
        let fail = |source| LayoutError::Blob {
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
            expected: digest.to_string(),
            done: false,
        }))
    }

    /// A blob small enough to hold (a manifest, an index, a configuration),
    /// verified.
    pub fn read_small_blob(&self, reference: &str, digest: &str) -> Result<Vec<u8>, LayoutError> {
        let mut bytes = Vec::new();
        self.open_blob(reference, digest)?
            .read_to_end(&mut bytes)
            .map_err(|source| LayoutError::Blob {
                reference: reference.into(),
                digest: digest.into(),
                source,
            })?;
        Ok(bytes)
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

    pub(crate) fn find(&self, reference: &RegistryRef) -> Result<Option<Descriptor>, LayoutError> {
        let index = self.read_index()?;
        let names = Self::names(reference);
        let by_name = index
            .manifests
            .iter()
            .find(|entry| entry.name().is_some_and(|n| names.iter().any(|m| m == n)));
        let found = match by_name {
            Some(found) => match &reference.digest {
                Some(digest) if found.digest != *digest => return Ok(None),
                _ => found,
            },
            // Pinned by digest: any entry with that digest will do.
            None => match &reference.digest {
                Some(digest) => match index.manifests.iter().find(|e| e.digest == *digest) {
                    Some(found) => found,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        // Through the typed descriptor, so a malformed entry is reported as
        // the index being invalid rather than a missing image.
        let value = serde_json::to_value(found).expect("index entries serialise");
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| LayoutError::Index {
                root: self.root.clone(),
                message: format!("{}: {e}", found.name().unwrap_or(&found.digest)),
            })
    }
}

/// `reference` without its digest: what a lock file names.
fn unpinned(reference: &RegistryRef) -> String {
    RegistryRef {
        digest: None,
        ..reference.clone()
    }
    .to_string()
}

fn invalid(reference: &str, what: &str, message: impl std::fmt::Display) -> LayoutError {
    LayoutError::Invalid {
        reference: reference.into(),
        what: what.into(),
        message: message.to_string(),
    }
}

/// Whether a descriptor points at an index of manifests (OCI's, or Docker's
/// manifest list).
pub fn is_index_type(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST_LIST,
        _ => false,
    }
}

/// Docker's name for an index.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest of `index` for `linux/ARCH`; otherwise the platforms the
/// index has, for the error.
pub fn choose_platform(index: &ImageIndex, arch: &str) -> Result<Descriptor, String> {
    let matching = index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| p.architecture().to_string() == arch && p.os().to_string() == "linux")
    });
    matching.cloned().ok_or_else(|| {
        index
            .manifests()
            .iter()
            .map(|m| match m.platform() {
                Some(p) => format!("{}/{}", p.os(), p.architecture()),
                None => "?/?".into(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Hashes what passes through and fails at the end if the digest is wrong.
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
            let actual = digest::finish(std::mem::take(&mut self.hasher));
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content does not match its digest (it hashes to {actual})"),
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

/// A blob being written; it appears in the cache only through
/// [`BlobWriter::commit`], and is deleted if dropped before.
pub struct BlobWriter {
    temp: HashingWriter<tempfile::NamedTempFile>,
    path: PathBuf,
    digest: String,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.temp.written()
    }

    /// Verifies digest and size, then moves the blob into place.
    pub fn commit(self) -> Result<(), LayoutError> {
        let written = self.temp.written();
        let (actual, temp) = self.temp.finish();
        if actual != self.digest || written != self.size {
            return Err(LayoutError::Mismatch {
                digest: self.digest,
                actual,
                size: written,
                expected_size: self.size,
            });
        }
        persist(temp, &self.path).map_err(|source| LayoutError::Io {
            root: self.path.clone(),
            source,
        })
    }
}

/// Syncs `temp`, makes it an ordinary 0644 file and renames it to `path`:
/// a reader sees either nothing or the whole file.
fn persist(mut temp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    temp.flush()?;
    temp.as_file().sync_all()?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::digest::sha256 as digest;

    #[test]
    fn a_blob_appears_only_when_whole_and_correct() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Layout::open(dir.path()).unwrap();
        let good = digest(b"hello");
        let mut writer = cache.blob_writer(&good, 5).unwrap();
        writer.write_all(b"hel").unwrap();
        assert!(!cache.has_blob(&good));
        drop(writer);
        let leftovers = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "a dropped writer leaves nothing");
        let mut writer = cache.blob_writer(&good, 5).unwrap();
        writer.write_all(b"hellO").unwrap();
        let error = writer.commit().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("blob {good}: received sha256:")),
            "{error}"
        );
        assert!(!cache.has_blob(&good));
        cache.write_blob(&good, b"hello").unwrap();
        assert!(cache.has_blob(&good));
        assert!(cache.verify().unwrap().is_empty());
    }

    #[test]
    fn names_are_replaced_listed_removed_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Layout::open(dir.path()).unwrap();
        let layer = b"layer bytes";
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}]}}"#,
            digest(b"{}"),
            digest(layer)
        );
        cache.write_blob(&digest(b"{}"), b"{}").unwrap();
        cache.write_blob(&digest(layer), layer).unwrap();
        cache
            .write_blob(&digest(manifest.as_bytes()), manifest.as_bytes())
            .unwrap();
        cache.write_blob(&digest(b"orphan"), b"orphan").unwrap();
        let named = Named {
            name: "docker.io/x/y:1".into(),
            digest: digest(manifest.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: manifest.len() as u64,
        };
        cache.tag(&named).unwrap();
        cache.tag(&named).unwrap();
        assert_eq!(cache.list().unwrap(), std::slice::from_ref(&named));
        assert_eq!(cache.reachable().unwrap().len(), 3);
        assert_eq!(cache.clean().unwrap(), (1, 6));
        assert!(!cache.has_blob(&digest(b"orphan")));
        cache.untag("docker.io/x/y:1").unwrap();
        assert!(cache.untag("docker.io/x/y:1").is_err());
        assert_eq!(cache.clean().unwrap().0, 3);
    }

    #[test]
    fn a_locked_image_is_found_through_its_index_which_must_list_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Layout::open(dir.path()).unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        cache.write_blob(&digest(config), config).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            digest(config),
            config.len()
        );
        let manifest_digest = digest(manifest.as_bytes());
        cache
            .write_blob(&manifest_digest, manifest.as_bytes())
            .unwrap();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            manifest.len()
        );
        let index_digest = digest(index.as_bytes());
        cache.write_blob(&index_digest, index.as_bytes()).unwrap();
        for (name, pointed, media_type, size) in [
            (
                "x.io/a:1",
                &index_digest,
                "application/vnd.oci.image.index.v1+json",
                index.len(),
            ),
            (
                "x.io/a:2",
                &manifest_digest,
                "application/vnd.oci.image.manifest.v1+json",
                manifest.len(),
            ),
        ] {
            cache
                .tag(&Named {
                    name: name.into(),
                    digest: pointed.clone(),
                    media_type: media_type.into(),
                    size: size as u64,
                })
                .unwrap();
        }
        let pinned = |tag: &str, digest: &str| RegistryRef {
            registry: "x.io".into(),
            repository: "a".into(),
            tag: Some(tag.into()),
            digest: Some(digest.into()),
        };
        let image = cache
            .resolve_locked(&pinned("1", &index_digest), &manifest_digest, "amd64")
            .unwrap();
        assert_eq!(image.digest, manifest_digest);
        assert_eq!(image.index.as_deref(), Some(index_digest.as_str()));
        let other = digest(b"other");
        let error = cache
            .resolve_locked(&pinned("1", &index_digest), &other, "amd64")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("image x.io/a:1: manifest {other} is not listed in the index {index_digest}")
        );
        // A lock naming a manifest as the index.
        let error = cache
            .resolve_locked(&pinned("2", &manifest_digest), &manifest_digest, "amd64")
            .unwrap_err();
        assert!(matches!(error, LayoutError::NotInIndex { .. }), "{error}");
        let error = cache
            .resolve_locked(&pinned("1", &index_digest), &manifest_digest, "arm64")
            .unwrap_err();
        assert!(matches!(error, LayoutError::NoPlatform { .. }), "{error}");
    }

    #[test]
    fn what_other_tools_wrote_in_index_json_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Layout::open(dir.path()).unwrap();
        let theirs = format!(
            r#"{{"schemaVersion":2,"annotations":{{"by":"skopeo"}},"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":2,"urls":["https://example.invalid/x"],"annotations":{{"{REF_NAME}":"docker.io/a/b:1"}}}}]}}"#,
            digest(b"{}")
        );
        fs::write(dir.path().join("index.json"), theirs).unwrap();
        cache
            .tag(&Named {
                name: "docker.io/c/d:1".into(),
                digest: digest(b"{}"),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 2,
            })
            .unwrap();
        let written: Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(written["annotations"]["by"], "skopeo");
        assert_eq!(
            written["manifests"][0]["urls"][0],
            "https://example.invalid/x"
        );
        assert_eq!(cache.list().unwrap().len(), 2);
    }
}
