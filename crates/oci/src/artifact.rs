//! A build's files as one OCI artifact, following the conventions of ORAS,
//! so that any OCI client can store, copy and pull them.
//!
//! The artifact is an OCI image manifest (image-spec v1.1, "guidelines for
//! artifact usage") whose `artifactType` is [`ARTIFACT_TYPE`], whose config
//! is the empty descriptor (`{}`, [`EMPTY_TYPE`]), and which has one layer
//! per file: the file's bytes as they are, a media type saying what kind of
//! file it is (the caller's choice; [`GENERIC_TYPE`] when it has none), and
//! its name in the annotation [`TITLE`], as `oras push` writes it. Layers
//! are sorted by title, and the only time in the manifest is
//! `SOURCE_DATE_EPOCH`, so the same files give the same manifest and the
//! same digest.
//!
//! Pulling fetches the manifest, refuses anything that is not such an
//! artifact (a container image, an index, a layer without a safe title)
//! before fetching a single layer, keeps the layers in the cache like any
//! other blob (verified, shared, named in `index.json` under the
//! reference, so they are there offline later) and writes the files out
//! all at once. A server takes the cached blobs' paths instead
//! ([`cached_artifact`]) and serves them without copying.
//!
//! The network is [`crate::registry`]'s business; this module decides what
//! goes into the manifest and what comes out of it. What each file of a
//! build is called and what kind it is, is the builder's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{self, HashingWriter};
use crate::layout::{Layout, LayoutError};
use crate::reference::RegistryRef;
use crate::registry::{RegistryError, Remote, Upload, UploadBytes};

/// What a berth build is, as an artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.berth.build.v1";
/// The manifest's media type: an OCI image manifest, as ORAS writes.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config of an artifact that needs none (image-spec v1.1).
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The bytes of the empty config.
pub const EMPTY: &[u8] = b"{}";
/// A layer's file name.
pub const TITLE: &str = "org.opencontainers.image.title";
/// When the files were made, from `SOURCE_DATE_EPOCH` (RFC 3339, UTC).
pub const CREATED: &str = "org.opencontainers.image.created";
/// A file of no kind berth knows.
pub const GENERIC_TYPE: &str = "application/octet-stream";

/// The largest manifest berth reads as an artifact.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The most layers (files) an artifact may have.
pub const MAX_LAYERS: usize = 10_000;

/// Container images' configs: a manifest with one of these is an image,
/// not an artifact.
const IMAGE_CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// One file of an artifact to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// The file's name in the artifact (its layer's [`TITLE`]).
    pub title: String,
    pub path: PathBuf,
    pub media_type: String,
}

/// One file of an artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub title: String,
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// The verified blob in the cache.
    pub path: PathBuf,
}

/// An artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The reference, fully expanded.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// Sorted by title.
    pub files: Vec<CachedFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("artifact {reference}")]
    Refused {
        reference: String,
        #[source]
        refusal: Refusal,
    },
    #[error("{reference}: an artifact is pushed to a tag, not to a digest")]
    DigestDestination { reference: String },
    #[error(
        "artifact {reference} is not in the cache at {} (pull it once with the network)",
        cache.display()
    )]
    NotCached { reference: String, cache: PathBuf },
    #[error("artifact {reference}: blob {digest} ({title}) is missing from the cache at {}", cache.display())]
    MissingBlob {
        reference: String,
        digest: String,
        title: String,
        cache: PathBuf,
    },
    #[error(
        "artifact {reference}: blob {digest} ({title}) in the cache at {} does not match its digest (run `berth cache verify`)",
        cache.display()
    )]
    CorruptBlob {
        reference: String,
        digest: String,
        title: String,
        cache: PathBuf,
        path: PathBuf,
    },
    #[error("output directory {}", dir.display())]
    Output {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("output file {}", path.display())]
    OutputFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl From<RegistryError> for ArtifactError {
    fn from(error: RegistryError) -> ArtifactError {
        ArtifactError::Registry(Box::new(error))
    }
}

/// Why a manifest is not an artifact berth takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "it is a container image (config {config}), not a build artifact (artifactType {ARTIFACT_TYPE})"
    )]
    ContainerImage { config: String },
    #[error(
        "it is an image index, not a build artifact (artifactType {ARTIFACT_TYPE}); name one of its manifests"
    )]
    Index,
    #[error("layer title {title:?}: {reason}")]
    Title { title: String, reason: &'static str },
    #[error("layer {digest} has no title ({TITLE})")]
    Untitled { digest: String },
    #[error("manifest is not valid: {0}")]
    Invalid(String),
    #[error("the manifest has {size} bytes, more than the {MAX_MANIFEST_BYTES} berth reads")]
    TooLarge { size: usize },
    #[error("the manifest has {layers} layers, more than the {MAX_LAYERS} berth takes")]
    TooManyLayers { layers: usize },
}

/// The manifest, as written and as read. Fields are in the order they are
/// written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE).map(String::as_str)
    }
}

/// Why `title` cannot name a file in an output directory, if it cannot:
/// it must be one plain name, so that a hostile artifact never writes
/// outside the directory or over a hidden file.
pub fn check_title(title: &str) -> Result<(), Refusal> {
    let reason = if title.is_empty() {
        "empty"
    } else if title.contains('/') || title.contains('\\') {
        "contains a path separator"
    } else if title.contains("..") {
        "contains '..'"
    } else if title.starts_with('.') {
        "starts with a dot"
    } else if title.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(Refusal::Title {
        title: title.into(),
        reason,
    })
}

/// Reads a manifest and checks it is an artifact of files with safe,
/// distinct titles.
fn parse(bytes: &[u8]) -> Result<Manifest, Refusal> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Refusal::TooLarge { size: bytes.len() });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Invalid(e.to_string()))?;
    if value.get("manifests").is_some() {
        return Err(Refusal::Index);
    }
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|e| Refusal::Invalid(e.to_string()))?;
    let berths = manifest.artifact_type.as_deref() == Some(ARTIFACT_TYPE)
        || manifest.config.media_type == ARTIFACT_TYPE;
    if !berths && IMAGE_CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(Refusal::ContainerImage {
            config: manifest.config.media_type,
        });
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Refusal::TooManyLayers {
            layers: manifest.layers.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for layer in &manifest.layers {
        let title = layer.title().ok_or_else(|| Refusal::Untitled {
            digest: layer.digest.clone(),
        })?;
        check_title(title)?;
        if !seen.insert(title) {
            return Err(Refusal::Title {
                title: title.into(),
                reason: "names two layers",
            });
        }
        if !digest::is_valid(&layer.digest) {
            return Err(Refusal::Invalid(format!(
                "layer {title:?} has digest {:?}, not a sha256 one",
                layer.digest
            )));
        }
    }
    Ok(manifest)
}

/// An artifact ready to push: its manifest and the blobs it names.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The manifest's bytes, exactly as pushed.
    pub manifest: Vec<u8>,
    /// Their digest: what the registry will name the artifact by.
    pub digest: String,
    blobs: Vec<Upload>,
}

/// Hashes `files` (streamed, never held whole) and writes the manifest.
/// `created` (seconds since the epoch, from `SOURCE_DATE_EPOCH`) becomes
/// the [`CREATED`] annotation; without it the manifest has no time at all.
pub fn prepare(files: &[ArtifactFile], created: Option<u64>) -> Result<Prepared, ArtifactError> {
    let mut files: Vec<&ArtifactFile> = files.iter().collect();
    files.sort_by(|a, b| a.title.cmp(&b.title));
    let mut layers = Vec::new();
    let mut blobs = vec![Upload {
        digest: digest::sha256(EMPTY),
        size: EMPTY.len() as u64,
        bytes: UploadBytes::Memory(EMPTY.to_vec()),
    }];
    let mut seen = BTreeSet::new();
    for file in files {
        let refused = |refusal| ArtifactError::Refused {
            reference: file.path.display().to_string(),
            refusal,
        };
        check_title(&file.title).map_err(refused)?;
        if !seen.insert(&file.title) {
            return Err(refused(Refusal::Title {
                title: file.title.clone(),
                reason: "names two files",
            }));
        }
        let (digest, size) = hash_file(&file.path)?;
        layers.push(Descriptor {
            media_type: file.media_type.clone(),
            digest: digest.clone(),
            size,
            annotations: BTreeMap::from([(TITLE.to_string(), file.title.clone())]),
        });
        blobs.push(Upload {
            digest,
            size,
            bytes: UploadBytes::File(file.path.clone()),
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_TYPE.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor {
            media_type: EMPTY_TYPE.into(),
            digest: digest::sha256(EMPTY),
            size: EMPTY.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: created
            .map(|seconds| (CREATED.to_string(), archive::clock::rfc3339(seconds)))
            .into_iter()
            .collect(),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest serialises");
    Ok(Prepared {
        digest: digest::sha256(&manifest),
        manifest,
        blobs,
    })
}

fn hash_file(path: &Path) -> Result<(String, u64), ArtifactError> {
    let read = |source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read)?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hasher).map_err(read)?;
    let size = hasher.written();
    Ok((hasher.finish().0, size))
}

/// Pushes `files` as one artifact to `destination`'s tag; returns the
/// manifest's digest. Blobs the registry has are not sent again.
pub fn push(
    remote: &Remote,
    files: &[ArtifactFile],
    created: Option<u64>,
    destination: &RegistryRef,
) -> Result<String, ArtifactError> {
    if destination.digest.is_some() {
        return Err(ArtifactError::DigestDestination {
            reference: destination.to_string(),
        });
    }
    let prepared = prepare(files, created)?;
    Ok(remote.push_manifest(
        destination,
        &prepared.blobs,
        &prepared.manifest,
        MANIFEST_TYPE,
    )?)
}

/// The artifact `reference` names, in `layout`: fetched first with
/// `remote` (only what the cache lacks), unless `remote` is `None`
/// (offline) or the reference pins a digest the cache has. Every blob is
/// checked against its digest; one that fails is dropped from the cache and
/// fetched again with `remote`, and is an error offline.
pub fn fetch(
    layout: &Layout,
    remote: Option<&Remote>,
    reference: &RegistryRef,
) -> Result<Artifact, ArtifactError> {
    let name = reference.to_string();
    let digest = manifest_digest(layout, remote, reference)?;
    let (digest, files) = match (
        verified_files(layout, &name, &digest, remote.is_some()),
        remote,
    ) {
        (
            Err(ArtifactError::MissingBlob { .. } | ArtifactError::CorruptBlob { .. }),
            Some(remote),
        ) => {
            let digest = remote.pull_artifact(layout, reference, check)?;
            let files = verified_files(layout, &name, &digest, false)?;
            (digest, files)
        }
        (files, _) => (digest, files?),
    };
    Ok(Artifact {
        reference: name,
        digest,
        files,
    })
}

/// `parse` as [`Remote::pull_artifact`] checks a manifest.
fn check(bytes: &[u8]) -> Result<(), String> {
    parse(bytes).map(drop).map_err(|e| e.to_string())
}

/// The digest of the artifact's manifest, fetched into `layout` with
/// `remote` unless it is pinned and cached.
fn manifest_digest(
    layout: &Layout,
    remote: Option<&Remote>,
    reference: &RegistryRef,
) -> Result<String, ArtifactError> {
    let name = reference.to_string();
    let cached = reference
        .digest
        .as_ref()
        .filter(|digest| layout.has_blob(digest))
        .cloned();
    let digest = match (cached, remote) {
        (Some(digest), _) => digest,
        (None, Some(remote)) => remote.pull_artifact(layout, reference, check)?,
        (None, None) => match layout.named(&name) {
            Ok(named) => named.digest,
            Err(LayoutError::NoSuchImage(_)) => {
                return Err(ArtifactError::NotCached {
                    reference: name,
                    cache: layout.root().to_path_buf(),
                });
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(digest)
}

/// The files of the artifact `name` whose manifest is `digest`, each blob
/// checked against its size and digest; the first that fails is the error.
/// With `drop_corrupt`, every blob that fails its digest is removed from
/// the cache, so that a pull fetches it again.
fn verified_files(
    layout: &Layout,
    name: &str,
    digest: &str,
    drop_corrupt: bool,
) -> Result<Vec<CachedFile>, ArtifactError> {
    let bytes = layout.read_small_blob(name, digest)?;
    let manifest = parse(&bytes).map_err(|refusal| ArtifactError::Refused {
        reference: name.to_string(),
        refusal,
    })?;
    let mut files = Vec::new();
    let mut first_error = None;
    for layer in manifest.layers {
        let title = layer.title().unwrap_or_default().to_string();
        match verified_blob(layout, name, &layer, &title) {
            Ok(path) => files.push(CachedFile {
                title,
                media_type: layer.media_type,
                digest: layer.digest,
                size: layer.size,
                path,
            }),
            Err(error) => {
                if let (true, ArtifactError::CorruptBlob { path, .. }) = (drop_corrupt, &error) {
                    let _ = fs::remove_file(path);
                }
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    files.sort_by(|a, b| a.title.cmp(&b.title));
    Ok(files)
}

/// The path of `layer`'s blob in `layout`, once its size and digest are
/// those the manifest names.
fn verified_blob(
    layout: &Layout,
    name: &str,
    layer: &Descriptor,
    title: &str,
) -> Result<PathBuf, ArtifactError> {
    let missing = || ArtifactError::MissingBlob {
        reference: name.to_string(),
        digest: layer.digest.clone(),
        title: title.to_string(),
        cache: layout.root().to_path_buf(),
    };
    let path = layout
        .blob_path(&layer.digest)
        .filter(|path| fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == layer.size))
        .ok_or_else(missing)?;
    let (actual, _) = hash_file(&path)?;
    if actual != layer.digest {
        return Err(ArtifactError::CorruptBlob {
            reference: name.to_string(),
            digest: layer.digest.clone(),
            title: title.to_string(),
            cache: layout.root().to_path_buf(),
            path,
        });
    }
    Ok(path)
}

/// For a server: the artifact `reference` names, pulled into the cache
/// once, as (title, path of the verified blob in the cache) pairs, to be
/// served from there without copying. Works offline (`remote` `None`) once
/// the cache has it.
pub fn cached_artifact(
    layout: &Layout,
    remote: Option<&Remote>,
    reference: &RegistryRef,
) -> Result<Vec<(String, PathBuf)>, ArtifactError> {
    Ok(fetch(layout, remote, reference)?
        .files
        .into_iter()
        .map(|file| (file.title, file.path))
        .collect())
}

/// [`fetch`]es the artifact and writes its files into `output` by title,
/// each checked against its digest as it is copied out of the cache. The
/// files appear all at once: on failure nothing is left (not even `output`,
/// if this made it). Returns the artifact and the paths written.
pub fn pull(
    layout: &Layout,
    remote: Option<&Remote>,
    reference: &RegistryRef,
    output: &Path,
) -> Result<(Artifact, Vec<PathBuf>), ArtifactError> {
    let artifact = fetch(layout, remote, reference)?;
    let failed = |source| ArtifactError::Output {
        dir: output.to_path_buf(),
        source,
    };
    let created = !output.exists();
    fs::create_dir_all(output).map_err(failed)?;
    let written = write_files(layout, &artifact, output);
    if written.is_err() && created {
        let _ = fs::remove_dir(output);
    }
    Ok((artifact, written?))
}

fn write_files(
    layout: &Layout,
    artifact: &Artifact,
    output: &Path,
) -> Result<Vec<PathBuf>, ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    // Closed once written (paths, not open files), so that any number of
    // files can be pending.
    let mut pending = Vec::new();
    for file in &artifact.files {
        let path = output.join(&file.title);
        let failed = |source| ArtifactError::OutputFile {
            path: path.clone(),
            source,
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".berth-")
            .tempfile_in(output)
            .map_err(failed)?;
        let mut blob = layout.open_blob(&artifact.reference, &file.digest)?;
        io::copy(&mut blob, &mut temp).map_err(|source| LayoutError::Blob {
            reference: artifact.reference.clone(),
            digest: file.digest.clone(),
            source,
        })?;
        temp.flush().map_err(failed)?;
        temp.as_file().sync_all().map_err(failed)?;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(failed)?;
        pending.push((temp.into_temp_path(), path));
    }
    // Nothing is replaced unless everything can be.
    for (_, path) in &pending {
        replaceable(path)?;
    }
    let mut written = Vec::new();
    for (temp, path) in pending {
        temp.persist(&path).map_err(|e| ArtifactError::OutputFile {
            path: path.clone(),
            source: e.error,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Whether a file may be written at `path`: nothing is there, or a regular
/// file (not a directory, a link, a device).
fn replaceable(path: &Path) -> Result<(), ArtifactError> {
    let refused = |source| ArtifactError::OutputFile {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(metadata) if metadata.is_dir() => Err(refused(io::Error::new(
            io::ErrorKind::IsADirectory,
            "a directory is in the way",
        ))),
        Ok(_) => Err(refused(io::Error::other(
            "something other than a regular file is in the way",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refused(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, contents: &[(&str, &[u8])]) -> Vec<ArtifactFile> {
        contents
            .iter()
            .map(|(title, bytes)| {
                let path = dir.join(title);
                fs::write(&path, bytes).unwrap();
                ArtifactFile {
                    title: title.to_string(),
                    path,
                    media_type: GENERIC_TYPE.into(),
                }
            })
            .collect()
    }

    #[test]
    fn the_manifest_follows_oras_and_depends_only_on_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = files(dir.path(), &[("b-kernel", b"kernel"), ("a.iso", b"iso")]);
        let prepared = prepare(&all, Some(1_700_000_000)).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&prepared.manifest).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_TYPE);
        assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
        assert_eq!(manifest["config"]["mediaType"], EMPTY_TYPE);
        assert_eq!(
            manifest["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(manifest["config"]["size"], 2);
        assert_eq!(manifest["layers"][0]["annotations"][TITLE], "a.iso");
        assert_eq!(manifest["layers"][0]["digest"], digest::sha256(b"iso"));
        assert_eq!(manifest["layers"][1]["size"], 6);
        assert_eq!(
            manifest["annotations"][CREATED], "2023-11-14T22:13:20Z",
            "SOURCE_DATE_EPOCH, as RFC 3339"
        );
        all.reverse();
        let again = prepare(&all, Some(1_700_000_000)).unwrap();
        assert_eq!(
            again.manifest, prepared.manifest,
            "the order given is irrelevant"
        );
        assert_eq!(again.digest, digest::sha256(&prepared.manifest));
        let timeless = prepare(&all, None).unwrap().manifest;
        assert!(!String::from_utf8(timeless).unwrap().contains(CREATED));
    }

    #[test]
    fn hostile_or_ambiguous_titles_are_refused() {
        for bad in [
            "", "../evil", "..", "a/b", ".hidden", "a\\b", "x..y", "a\nb",
        ] {
            assert!(check_title(bad).is_err(), "{bad:?}");
        }
        for good in ["image-kernel", "image.img.tar.gz", "a b", "x.y"] {
            assert!(check_title(good).is_ok(), "{good:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut twice = files(dir.path(), &[("a", b"1")]);
        twice.push(twice[0].clone());
        let error = crate::chain::render(&prepare(&twice, None).unwrap_err());
        assert!(
            error.ends_with("layer title \"a\": names two files"),
            "{error}"
        );
    }

    #[test]
    fn container_images_and_indexes_are_not_artifacts() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        assert!(matches!(parse(image), Err(Refusal::ContainerImage { .. })));
        assert_eq!(
            parse(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap_err(),
            Refusal::Index
        );
        let untitled = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/octet-stream","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#;
        assert!(matches!(parse(untitled), Err(Refusal::Untitled { .. })));
    }

    #[test]
    fn huge_manifests_are_refused() {
        let layer = r#"{"mediaType":"application/octet-stream","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"org.opencontainers.image.title":"f"}}"#;
        let manifest = |layers: usize, padding: usize| {
            let layers: Vec<String> = (0..layers)
                .map(|i| layer.replace("\"f\"", &format!("\"f{i}\"")))
                .collect();
            format!(
                r#"{{"schemaVersion":2,"artifactType":"{ARTIFACT_TYPE}","config":{{"mediaType":"{EMPTY_TYPE}","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[{}]{}}}"#,
                layers.join(","),
                " ".repeat(padding)
            )
        };
        assert!(parse(manifest(MAX_LAYERS, 0).as_bytes()).is_ok());
        assert_eq!(
            parse(manifest(MAX_LAYERS + 1, 0).as_bytes()).unwrap_err(),
            Refusal::TooManyLayers {
                layers: MAX_LAYERS + 1
            }
        );
        let big = manifest(1, MAX_MANIFEST_BYTES);
        assert_eq!(
            parse(big.as_bytes()).unwrap_err().to_string(),
            format!(
                "the manifest has {} bytes, more than the 4194304 berth reads",
                big.len()
            )
        );
    }

    #[test]
    fn an_artifact_in_the_cache_is_written_out_verified_and_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path().join("cache")).unwrap();
        let sources = dir.path().join("sources");
        fs::create_dir(&sources).unwrap();
        let all = files(
            &sources,
            &[("x-kernel", b"kernel"), ("x-cmdline", b"quiet")],
        );
        let prepared = prepare(&all, None).unwrap();
        for file in &all {
            let bytes = fs::read(&file.path).unwrap();
            layout.write_blob(&digest::sha256(&bytes), &bytes).unwrap();
        }
        layout
            .write_blob(&prepared.digest, &prepared.manifest)
            .unwrap();
        let reference = RegistryRef {
            registry: "127.0.0.1:5000".into(),
            repository: "builds/x".into(),
            tag: None,
            digest: Some(prepared.digest.clone()),
        };
        let cached = cached_artifact(&layout, None, &reference).unwrap();
        assert_eq!(cached[0].0, "x-cmdline");
        assert_eq!(fs::read(&cached[1].1).unwrap(), b"kernel");

        let out = dir.path().join("out");
        let (_, written) = pull(&layout, None, &reference, &out).unwrap();
        assert_eq!(written, [out.join("x-cmdline"), out.join("x-kernel")]);
        assert_eq!(fs::read(out.join("x-cmdline")).unwrap(), b"quiet");

        // A directory or a link in the way: refused before any file is
        // replaced, and no temporary file is left.
        for (title, in_the_way) in [("x-kernel", "dir"), ("x-kernel", "link")] {
            let busy = dir.path().join(format!("busy-{in_the_way}"));
            fs::create_dir(&busy).unwrap();
            fs::write(busy.join("x-cmdline"), b"mine").unwrap();
            if in_the_way == "dir" {
                fs::create_dir(busy.join(title)).unwrap();
            } else {
                std::os::unix::fs::symlink("x-cmdline", busy.join(title)).unwrap();
            }
            let error = crate::chain::render(&pull(&layout, None, &reference, &busy).unwrap_err());
            assert!(
                error.starts_with(&format!("output file {}: ", busy.join(title).display())),
                "{error}"
            );
            assert_eq!(fs::read(busy.join("x-cmdline")).unwrap(), b"mine");
            assert_eq!(fs::read_dir(&busy).unwrap().count(), 2, "{error}");
        }

        // A corrupt blob in the cache is handed out neither to a server nor
        // to a pull, and nothing appears.
        fs::write(&cached[1].1, b"KERNEL").unwrap();
        let error = crate::chain::render(&cached_artifact(&layout, None, &reference).unwrap_err());
        assert!(
            error.contains("(x-kernel) in the cache") && error.contains("berth cache verify"),
            "{error}"
        );
        let fresh = dir.path().join("fresh");
        let error = crate::chain::render(&pull(&layout, None, &reference, &fresh).unwrap_err());
        assert!(error.contains("does not match its digest"), "{error}");
        assert!(!fresh.exists());

        let by_tag = RegistryRef {
            tag: Some("1".into()),
            digest: None,
            ..reference
        };
        let error = crate::chain::render(&fetch(&layout, None, &by_tag).unwrap_err());
        assert!(
            error.starts_with("artifact 127.0.0.1:5000/builds/x:1 is not in the cache"),
            "{error}"
        );
    }
}
