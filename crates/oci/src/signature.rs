//! Image signatures in cosign's format, so that cosign and berth read each
//! other's (cosign's `specs/SIGNATURE_SPEC.md`).
//!
//! What is signed is the simple-signing payload ([`payload`]): JSON naming
//! the image's repository (`critical.identity.docker-reference`), the
//! digest of its manifest or index (`critical.image.docker-manifest-digest`)
//! and `critical.type` [`SIGNATURE_TYPE`]. berth's ed25519 signature is
//! over the payload's bytes exactly (pure Ed25519, what `cosign verify
//! --key` checks and what cosign signed with before version 2.3). A
//! signature made the way cosign signs with an ed25519 key since then,
//! Ed25519ph over the payload's SHA-512, is accepted too.
//!
//! Signatures are stored where cosign looks for them: in the image's
//! repository, under the tag [`tag`] (`sha256-HEX.sig`), as an OCI image
//! manifest whose config is an image config and whose layers are payloads
//! ([`PAYLOAD_TYPE`]), each with its signature, base64, in the annotation
//! [`SIGNATURE_ANNOTATION`]. Signing again adds a layer, so signatures by
//! several keys accumulate. The same manifest is kept in the cache under
//! the name `REPOSITORY:sha256-HEX.sig`, so that verification works
//! offline.
//!
//! Verification ([`verify`]) takes the digest the reference resolves to
//! now, and accepts it only if a layer of its `.sig` manifest names that
//! digest and that repository and carries a signature valid under one of
//! the keys. A refusal is one line naming the image, the digest, the keys
//! and what each signature lacked; nothing is written to the cache then.
//! The network is [`crate::registry`]'s business.
//!
//! [`push`] carries an image's cached signatures to where the image is
//! pushed. Files are signed as `cosign sign-blob` signs them
//! ([`sign_blob`], [`verify_blob`]): the base64 ed25519 signature of their
//! bytes.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Digest, Sha512, Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::digest;
use crate::keys::PublicKey;
use crate::layout::{Layout, LayoutError, Named};
use crate::reference::RegistryRef;
use crate::registry::{RegistryError, Remote, SmallManifest, Upload, UploadBytes};

/// The media type of a simple-signing payload layer.
pub const PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The `.sig` manifest's media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Its config's media type: an image config, as cosign writes.
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The most bytes a `.sig` manifest and its blobs may have together.
pub const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("image {image} ({digest}): not verified with {keys}: {reason}")]
    Refused {
        image: String,
        digest: String,
        keys: String,
        reason: String,
    },
    #[error(
        "image {image} is not in the cache at {} (pull it once with the network)",
        cache.display()
    )]
    NotCached {
        image: String,
        cache: std::path::PathBuf,
    },
    #[error("signatures of {image} ({reference}): {reason}")]
    Malformed {
        image: String,
        reference: String,
        reason: String,
    },
    #[error("image {image}: digest {digest} is not a sha256 digest")]
    Digest { image: String, digest: String },
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl From<RegistryError> for SignatureError {
    fn from(error: RegistryError) -> SignatureError {
        SignatureError::Registry(Box::new(error))
    }
}

/// The simple-signing payload for `digest` in `repository`
/// (`REGISTRY/REPOSITORY`), byte for byte as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&value).expect("a payload serialises")
}

/// The tag of the signatures of `digest`: `sha256-HEX.sig`.
pub fn tag(digest: &str) -> Option<String> {
    digest::hex(digest).map(|hex| format!("sha256-{hex}.sig"))
}

/// `REGISTRY/REPOSITORY` of `image`, as payloads name it.
pub fn repository(image: &RegistryRef) -> String {
    format!("{}/{}", image.registry, image.repository)
}

/// Where the signatures of `digest` in `image`'s repository are.
pub fn signature_ref(image: &RegistryRef, digest: &str) -> Option<RegistryRef> {
    Some(RegistryRef {
        registry: image.registry.clone(),
        repository: image.repository.clone(),
        tag: Some(tag(digest)?),
        digest: None,
    })
}

/// The `.sig` manifest, as written and read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The config of a `.sig` manifest: an empty image whose layers are the
/// payloads, as cosign writes it.
fn config(layers: &[Descriptor]) -> Vec<u8> {
    let zero = "0001-01-01T00:00:00Z";
    let value = serde_json::json!({
        "architecture": "",
        "created": zero,
        "history": layers.iter().map(|_| serde_json::json!({"created": zero})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>(),
        },
        "config": {},
    });
    serde_json::to_vec(&value).expect("a config serialises")
}

/// A `.sig` manifest with its blobs, in memory.
#[derive(Debug, Clone, Default)]
struct Signatures {
    layers: Vec<Descriptor>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Signatures {
    fn read(small: &SmallManifest) -> Result<Signatures, String> {
        let manifest: Manifest = serde_json::from_slice(&small.manifest)
            .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
        let blobs: BTreeMap<String, Vec<u8>> = small.blobs.iter().cloned().collect();
        for layer in &manifest.layers {
            if !blobs.contains_key(&layer.digest) {
                return Err(format!("layer {} is missing", layer.digest));
            }
        }
        Ok(Signatures {
            layers: manifest.layers,
            blobs,
        })
    }

    /// Adds a layer; false when the same payload and signature is there.
    fn add(&mut self, payload: Vec<u8>, signature: &Signature) -> bool {
        let digest = digest::sha256(&payload);
        let encoded = BASE64.encode(signature.to_bytes());
        let layer = Descriptor {
            media_type: PAYLOAD_TYPE.into(),
            size: payload.len() as u64,
            digest: digest.clone(),
            annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), encoded)]),
        };
        self.add_layer(layer, payload)
    }

    fn add_layer(&mut self, layer: Descriptor, payload: Vec<u8>) -> bool {
        if self.layers.contains(&layer) {
            return false;
        }
        self.blobs.insert(layer.digest.clone(), payload);
        self.layers.push(layer);
        true
    }

    /// Adds the layers of `other` that are not here yet, after these.
    fn merge(&mut self, other: Signatures) {
        // Layers share a blob when keys signed the same payload.
        for layer in other.layers {
            if let Some(payload) = other.blobs.get(&layer.digest) {
                self.add_layer(layer, payload.clone());
            }
        }
    }

    /// The manifest and every blob it names (config first).
    fn write(&self) -> SmallManifest {
        let config = config(&self.layers);
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_TYPE.into(),
            config: Descriptor {
                media_type: CONFIG_TYPE.into(),
                size: config.len() as u64,
                digest: digest::sha256(&config),
                annotations: BTreeMap::new(),
            },
            layers: self.layers.clone(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let mut blobs = vec![(manifest.config.digest.clone(), config)];
        for layer in &self.layers {
            blobs.push((layer.digest.clone(), self.blobs[&layer.digest].clone()));
        }
        SmallManifest {
            digest: digest::sha256(&bytes),
            manifest: bytes,
            blobs,
        }
    }

    /// The key that signed a layer naming `digest` in `repository`, or
    /// why none did.
    fn check(&self, repository: &str, digest: &str, keys: &[PublicKey]) -> Result<String, String> {
        let mut reasons = Vec::new();
        for (n, layer) in self.layers.iter().enumerate() {
            let n = n + 1;
            match check_layer(layer, &self.blobs[&layer.digest], repository, digest, keys) {
                Ok(key) => return Ok(key),
                Err(reason) => reasons.push(format!("signature {n} {reason}")),
            }
        }
        if reasons.is_empty() {
            return Err("its signature manifest has no signatures".into());
        }
        // One line, however many layers a registry serves.
        const SHOWN: usize = 4;
        let more = reasons.len().saturating_sub(SHOWN);
        reasons.truncate(SHOWN);
        if more > 0 {
            reasons.push(format!("and {more} more"));
        }
        Err(reasons.join("; "))
    }
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// A repository's one spelling (`REGISTRY/PATH`, no tag or digest), for
/// comparing names: the registry's host name in lower case, Docker Hub's
/// other host names as `docker.io`, no `:443`, and a one-part name on
/// Docker Hub under `library/`.
pub fn canonical_repository(name: &str) -> String {
    let (host, path) = name.split_once('/').unwrap_or((name, ""));
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other.strip_suffix(":443").unwrap_or(other),
    };
    if host == "docker.io" && !path.contains('/') {
        return format!("docker.io/library/{path}");
    }
    format!("{host}/{path}")
}

/// Whether a payload's docker-reference (a tag or digest after the
/// repository allowed) names `repository`.
fn same_repository(named: &str, repository: &str) -> bool {
    let bare = match named.rsplit_once('@') {
        Some((name, _)) => name,
        None => named,
    };
    let bare = match bare.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => bare,
    };
    canonical_repository(bare) == canonical_repository(repository)
}

fn check_layer(
    layer: &Descriptor,
    payload: &[u8],
    repository: &str,
    digest: &str,
    keys: &[PublicKey],
) -> Result<String, String> {
    if layer.media_type != PAYLOAD_TYPE {
        return Err(format!(
            "is a {:?} layer, not a simple-signing payload",
            layer.media_type
        ));
    }
    let encoded = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| format!("has no {SIGNATURE_ANNOTATION} annotation"))?;
    let key = verify_blob(keys, payload, encoded)?;
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("(by {}) is not a simple-signing payload: {e}", key.name))?;
    let critical = parsed.critical;
    if critical.kind != SIGNATURE_TYPE {
        return Err(format!("(by {}) has type {:?}", key.name, critical.kind));
    }
    if critical.image.digest != digest {
        return Err(format!(
            "(by {}) is for {:?}",
            key.name, critical.image.digest
        ));
    }
    if !same_repository(&critical.identity.docker_reference, repository) {
        return Err(format!(
            "(by {}) names repository {:?}",
            key.name, critical.identity.docker_reference
        ));
    }
    Ok(key.name.clone())
}

/// The signature of a file's bytes as `cosign sign-blob` writes it: the
/// ed25519 signature, base64, no newline.
pub fn sign_blob(key: &SigningKey, bytes: &[u8]) -> String {
    BASE64.encode(key.sign(bytes).to_bytes())
}

/// The key among `keys` that made `signature` (as [`sign_blob`] writes
/// it, or Ed25519ph over its SHA-512 as cosign 2.3 and later sign;
/// whitespace around it ignored) of `bytes`, or why none did.
pub fn verify_blob<'a>(
    keys: &'a [PublicKey],
    bytes: &[u8],
    signature: &str,
) -> Result<&'a PublicKey, &'static str> {
    let signature = BASE64
        .decode(signature.trim())
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or("is not a base64 ed25519 signature")?;
    let prehashed = || Sha512::new().chain_update(bytes);
    keys.iter()
        .find(|key| {
            key.key.verify_strict(bytes, &signature).is_ok()
                || key
                    .key
                    .verify_prehashed_strict(prehashed(), None, &signature)
                    .is_ok()
        })
        .ok_or("is by none of the keys")
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The digest signed.
    pub digest: String,
    /// Where the signatures are: `REPOSITORY:sha256-HEX.sig`.
    pub reference: String,
    /// How many signatures it holds now.
    pub signatures: usize,
    /// False when this key had signed this digest already.
    pub added: bool,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub digest: String,
    /// The name of the key whose signature verified.
    pub key: String,
}

/// The digest `image` names: from the registry with `remote`, else from
/// the cache (whose manifest is checked against it).
fn digest_of(
    layout: &Layout,
    remote: Option<&Remote>,
    image: &RegistryRef,
) -> Result<String, SignatureError> {
    let digest = match (remote, &image.digest) {
        (Some(remote), _) => remote.resolve(image)?,
        (None, Some(digest)) => digest.clone(),
        (None, None) => match layout.named(&image.to_string()) {
            Ok(named) => {
                layout.read_small_blob(&named.name, &named.digest)?;
                named.digest
            }
            Err(LayoutError::NoSuchImage(_)) => {
                return Err(SignatureError::NotCached {
                    image: image.to_string(),
                    cache: layout.root().to_path_buf(),
                });
            }
            Err(e) => return Err(e.into()),
        },
    };
    if !digest::is_valid(&digest) {
        return Err(SignatureError::Digest {
            image: image.to_string(),
            digest,
        });
    }
    Ok(digest)
}

/// The `.sig` manifest named `name` in the cache with its blobs, if any.
fn cached(layout: &Layout, name: &str) -> Result<Option<SmallManifest>, LayoutError> {
    let named = match layout.named(name) {
        Ok(named) => named,
        Err(LayoutError::NoSuchImage(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let manifest = layout.read_small_blob(name, &named.digest)?;
    let invalid = |message: String| LayoutError::Invalid {
        reference: name.to_string(),
        what: "signature manifest".into(),
        message,
    };
    let parsed: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(format!("not an OCI image manifest: {e}")))?;
    let mut total = manifest.len() as u64;
    let mut blobs = Vec::new();
    for descriptor in std::iter::once(&parsed.config).chain(&parsed.layers) {
        total = total.saturating_add(descriptor.size);
        if total > MAX_BYTES || !digest::is_valid(&descriptor.digest) {
            return Err(invalid(format!(
                "more than {MAX_BYTES} bytes, or a bad digest"
            )));
        }
        let bytes = layout.read_small_blob(name, &descriptor.digest)?;
        blobs.push((descriptor.digest.clone(), bytes));
    }
    Ok(Some(SmallManifest {
        manifest,
        digest: named.digest,
        blobs,
    }))
}

/// Puts signatures into the cache under `name`, as a `.sig` manifest.
fn store(layout: &Layout, name: &str, signatures: &Signatures) -> Result<(), LayoutError> {
    let small = signatures.write();
    for (digest, bytes) in &small.blobs {
        if !layout.has_blob(digest) {
            layout.write_blob(digest, bytes)?;
        }
    }
    layout.write_blob(&small.digest, &small.manifest)?;
    layout.tag(&Named {
        name: name.to_string(),
        digest: small.digest.clone(),
        media_type: MANIFEST_TYPE.into(),
        size: small.manifest.len() as u64,
    })
}

/// The signatures of `digest` known here: with `remote`, the registry's
/// and then those only the cache has (a signature made offline is not
/// lost when the registry's are fetched); without it, the cache's.
fn signatures_of(
    layout: &Layout,
    remote: Option<&Remote>,
    image: &RegistryRef,
    at: &RegistryRef,
) -> Result<Option<Signatures>, SignatureError> {
    let read = |small: SmallManifest| {
        Signatures::read(&small).map_err(|reason| SignatureError::Malformed {
            image: image.to_string(),
            reference: at.to_string(),
            reason,
        })
    };
    let Some(remote) = remote else {
        return cached(layout, &at.to_string())?.map(read).transpose();
    };
    // Online, a cached copy that cannot be read is replaced, not fatal.
    let cached = cached(layout, &at.to_string())
        .ok()
        .flatten()
        .and_then(|small| read(small).ok());
    let fetched = remote.pull_small(at, MAX_BYTES)?.map(read).transpose()?;
    Ok(match (fetched, cached) {
        (Some(mut fetched), Some(cached)) => {
            fetched.merge(cached);
            Some(fetched)
        }
        (fetched, cached) => fetched.or(cached),
    })
}

/// Pushes `small` to `at` with its blobs.
fn upload(remote: &Remote, at: &RegistryRef, small: &SmallManifest) -> Result<(), RegistryError> {
    let uploads: Vec<Upload> = small
        .blobs
        .iter()
        .map(|(digest, bytes)| Upload {
            digest: digest.clone(),
            size: bytes.len() as u64,
            bytes: UploadBytes::Memory(bytes.clone()),
        })
        .collect();
    remote.push_manifest(at, &uploads, &small.manifest, MANIFEST_TYPE)?;
    Ok(())
}

/// Signs the digest `image` names with `key`: in the registry (the
/// signatures already there kept) and in the cache with `remote`; in the
/// cache alone without it (the image must be cached then).
pub fn sign(
    layout: &Layout,
    remote: Option<&Remote>,
    image: &RegistryRef,
    key: &SigningKey,
) -> Result<Signed, SignatureError> {
    let digest = digest_of(layout, remote, image)?;
    let at = signature_ref(image, &digest).expect("a checked digest");
    let mut signatures = signatures_of(layout, remote, image, &at)?.unwrap_or_default();
    let payload = payload(&repository(image), &digest);
    let signature = key.sign(&payload);
    let added = signatures.add(payload, &signature);
    if let Some(remote) = remote {
        upload(remote, &at, &signatures.write())?;
    }
    store(layout, &at.to_string(), &signatures)?;
    Ok(Signed {
        digest,
        reference: at.to_string(),
        signatures: signatures.layers.len(),
        added,
    })
}

/// Checks that the digest `image` names now is signed by one of `keys`:
/// with `remote` from the registry (the signatures then kept in the cache),
/// without it from the cache alone. Nothing is written when it is not.
pub fn verify(
    layout: &Layout,
    remote: Option<&Remote>,
    image: &RegistryRef,
    keys: &[PublicKey],
) -> Result<Verified, SignatureError> {
    let digest = digest_of(layout, remote, image)?;
    let at = signature_ref(image, &digest).expect("a checked digest");
    let refused = |reason: String| SignatureError::Refused {
        image: image.to_string(),
        digest: digest.clone(),
        keys: crate::keys::names(keys),
        reason,
    };
    let signatures = match signatures_of(layout, remote, image, &at) {
        Ok(Some(signatures)) => signatures,
        Ok(None) => return Err(refused(format!("it has no signature (no {at})"))),
        Err(SignatureError::Malformed {
            reference, reason, ..
        }) => {
            return Err(refused(format!("{reference}: {reason}")));
        }
        Err(e) => return Err(e),
    };
    let key = signatures
        .check(&repository(image), &digest, keys)
        .map_err(refused)?;
    if remote.is_some() {
        store(layout, &at.to_string(), &signatures)?;
    }
    Ok(Verified { digest, key })
}

/// Checks the `.sig` manifest found for `digest` in `image`'s repository
/// (`None`: there is none) against `keys`: the name of the key whose
/// signature names that digest and that repository, or why none does, as
/// [`SignatureError::Refused`] says it. This is all of verification but
/// finding the digest and the signatures, which are the caller's.
pub fn check(
    image: &RegistryRef,
    digest: &str,
    found: Option<&SmallManifest>,
    keys: &[PublicKey],
) -> Result<String, String> {
    let Some(small) = found else {
        let at =
            signature_ref(image, digest).map_or_else(|| digest.to_string(), |at| at.to_string());
        return Err(format!("it has no signature (no {at})"));
    };
    let signatures = Signatures::read(small)
        .map_err(|reason| format!("its signature manifest {}: {reason}", small.digest))?;
    signatures.check(&repository(image), digest, keys)
}

/// The `.sig` manifest of `digest` in `image`'s repository as the cache
/// keeps it (`REPOSITORY:sha256-HEX.sig`), with its blobs, if there is one.
pub fn cached_signatures(
    layout: &Layout,
    image: &RegistryRef,
    digest: &str,
) -> Result<Option<SmallManifest>, SignatureError> {
    let at = signature_ref(image, digest).ok_or_else(|| SignatureError::Digest {
        image: image.to_string(),
        digest: digest.into(),
    })?;
    Ok(cached(layout, &at.to_string())?)
}

/// Brings the signatures of `digest` (the digest `image` was pulled at)
/// into the cache, unverified, for offline verification later, beside any
/// the cache has already; returns where they were found, if anywhere.
pub fn pull(
    layout: &Layout,
    remote: &Remote,
    image: &RegistryRef,
    digest: &str,
) -> Result<Option<String>, SignatureError> {
    let Some(at) = signature_ref(image, digest) else {
        return Err(SignatureError::Digest {
            image: image.to_string(),
            digest: digest.into(),
        });
    };
    match signatures_of(layout, Some(remote), image, &at)? {
        Some(signatures) => {
            store(layout, &at.to_string(), &signatures)?;
            Ok(Some(at.to_string()))
        }
        None => Ok(None),
    }
}

/// Pushes the cached signatures of `digest` (the digest `image` is cached
/// at) to `destination`'s repository, beside the image pushed there, and
/// keeps those already there; returns where they went, or `None` when the
/// cache holds none. The payloads still name `image`'s repository.
pub fn push(
    layout: &Layout,
    remote: &Remote,
    image: &RegistryRef,
    digest: &str,
    destination: &RegistryRef,
) -> Result<Option<String>, SignatureError> {
    let bad_digest = || SignatureError::Digest {
        image: image.to_string(),
        digest: digest.into(),
    };
    let from = signature_ref(image, digest).ok_or_else(bad_digest)?;
    let to = signature_ref(destination, digest).ok_or_else(bad_digest)?;
    let Some(cached) = signatures_of(layout, None, image, &from)? else {
        return Ok(None);
    };
    let mut signatures = signatures_of(layout, Some(remote), destination, &to)?.unwrap_or_default();
    signatures.merge(cached);
    upload(remote, &to, &signatures.write())?;
    Ok(Some(to.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(repository: &str) -> RegistryRef {
        RegistryRef {
            registry: "127.0.0.1:5000".into(),
            repository: repository.into(),
            tag: Some("1".into()),
            digest: None,
        }
    }

    #[test]
    fn the_payload_is_cosigns_to_the_byte() {
        assert_eq!(
            String::from_utf8(payload("127.0.0.1:5000/a/b", DIGEST)).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/a/b"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(
            tag(DIGEST).unwrap(),
            "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a.sig"
        );
        assert_eq!(
            signature_ref(&image("a/b"), DIGEST).unwrap().to_string(),
            format!("127.0.0.1:5000/a/b:{}", tag(DIGEST).unwrap())
        );
    }

    #[test]
    fn a_blob_signature_is_base64_and_checked_against_the_bytes() {
        let key = keys::generate().unwrap();
        let text = sign_blob(&key, b"abc  x\n");
        assert_eq!(BASE64.decode(&text).unwrap().len(), 64);
        assert_eq!(text, sign_blob(&key, b"abc  x\n"), "deterministic");
        let public = keys::public_of(&key, "k.pub");
        let other = keys::public_of(&keys::generate().unwrap(), "o.pub");
        let both = [other.clone(), public];
        let found = verify_blob(&both, b"abc  x\n", &format!("{text}\n"));
        assert_eq!(found.unwrap().name, "k.pub");
        assert_eq!(
            verify_blob(&both, b"abd  x\n", &text).unwrap_err(),
            "is by none of the keys"
        );
        assert_eq!(
            verify_blob(&[other], b"abc  x\n", "not base64!").unwrap_err(),
            "is not a base64 ed25519 signature"
        );
    }

    #[test]
    fn merged_signatures_keep_every_layer_once() {
        let body = payload("127.0.0.1:5000/a/b", DIGEST);
        let (one, two) = (keys::generate().unwrap(), keys::generate().unwrap());
        let mut here = Signatures::default();
        here.add(body.clone(), &one.sign(&body));
        let mut there = Signatures::default();
        there.add(body.clone(), &one.sign(&body));
        there.add(body.clone(), &two.sign(&body));
        here.merge(there);
        assert_eq!(here.layers.len(), 2);
        let read = Signatures::read(&here.write()).unwrap();
        let second = keys::public_of(&two, "two.pub");
        assert_eq!(
            read.check("127.0.0.1:5000/a/b", DIGEST, &[second]),
            Ok("two.pub".to_string())
        );
    }

    #[test]
    fn signatures_accumulate_and_each_is_checked() {
        let one = keys::generate().unwrap();
        let two = keys::generate().unwrap();
        let mut signatures = Signatures::default();
        let body = payload("127.0.0.1:5000/a/b", DIGEST);
        assert!(signatures.add(body.clone(), &one.sign(&body)));
        assert!(
            !signatures.add(body.clone(), &one.sign(&body)),
            "once per key"
        );
        assert!(signatures.add(body.clone(), &two.sign(&body)));
        let small = signatures.write();
        let manifest: serde_json::Value = serde_json::from_slice(&small.manifest).unwrap();
        assert_eq!(manifest["config"]["mediaType"], CONFIG_TYPE);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
        assert_eq!(manifest["layers"][1]["mediaType"], PAYLOAD_TYPE);
        let read = Signatures::read(&small).unwrap();
        let second = keys::public_of(&two, "two.pub");
        assert_eq!(
            read.check("127.0.0.1:5000/a/b", DIGEST, std::slice::from_ref(&second)),
            Ok("two.pub".to_string())
        );
        let other = keys::public_of(&keys::generate().unwrap(), "other.pub");
        assert_eq!(
            read.check("127.0.0.1:5000/a/b", DIGEST, &[other]),
            Err("signature 1 is by none of the keys; signature 2 is by none of the keys".into())
        );
        let error = read.check("127.0.0.1:5000/a/c", DIGEST, std::slice::from_ref(&second));
        assert!(
            error
                .unwrap_err()
                .contains("names repository \"127.0.0.1:5000/a/b\"")
        );
        let error = read.check("127.0.0.1:5000/a/b", &DIGEST.replace('4', "5"), &[second]);
        assert!(error.unwrap_err().contains(&format!("is for {DIGEST:?}")));
    }

    #[test]
    fn ed25519ph_signatures_as_cosign_makes_them_are_accepted() {
        let key = keys::generate().unwrap();
        let body = payload("127.0.0.1:5000/a/b", DIGEST);
        let prehashed = key
            .sign_prehashed(Sha512::new().chain_update(&body), None)
            .unwrap();
        let mut signatures = Signatures::default();
        signatures.add(body.clone(), &prehashed);
        let public = keys::public_of(&key, "k.pub");
        assert_eq!(
            signatures.check("127.0.0.1:5000/a/b", DIGEST, std::slice::from_ref(&public)),
            Ok("k.pub".to_string())
        );
        // With a context, or over another payload, it is not a signature.
        let other = key
            .sign_prehashed(Sha512::new().chain_update(b"other"), None)
            .unwrap();
        let mut signatures = Signatures::default();
        signatures.add(body, &other);
        assert!(
            signatures
                .check("127.0.0.1:5000/a/b", DIGEST, &[public])
                .is_err()
        );
    }

    /// RFC 8032's test vector for Ed25519ph (section 7.3, "abc"): what Go's
    /// crypto/ed25519 makes with SHA-512 as its hash, as cosign 2.3 and
    /// later sign with an ed25519 key.
    #[test]
    fn rfc_8032_ed25519ph_vector_verifies() {
        let bytes = |hex: &str| -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        let public: [u8; 32] =
            bytes("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
                .try_into()
                .unwrap();
        let key = PublicKey {
            name: "rfc8032".into(),
            key: ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap(),
        };
        let signature = BASE64.encode(bytes(
            "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41\
             31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406",
        ));
        let keys = [key];
        assert_eq!(
            verify_blob(&keys, b"abc", &signature).map(|k| k.name.as_str()),
            Ok("rfc8032")
        );
        assert!(verify_blob(&keys, b"abd", &signature).is_err());
    }

    #[test]
    fn merged_signatures_keep_both_sides_once() {
        let body = payload("127.0.0.1:5000/a/b", DIGEST);
        let (one, two) = (keys::generate().unwrap(), keys::generate().unwrap());
        let mut registry = Signatures::default();
        registry.add(body.clone(), &one.sign(&body));
        let mut cache = Signatures::default();
        cache.add(body.clone(), &one.sign(&body));
        cache.add(body.clone(), &two.sign(&body));
        registry.merge(cache);
        assert_eq!(registry.layers.len(), 2);
        let read = Signatures::read(&registry.write()).unwrap();
        let second = keys::public_of(&two, "two.pub");
        assert_eq!(
            read.check("127.0.0.1:5000/a/b", DIGEST, &[second]),
            Ok("two.pub".to_string())
        );
    }

    #[test]
    fn a_refusal_stays_one_short_line() {
        let body = payload("127.0.0.1:5000/a/b", DIGEST);
        let mut signatures = Signatures::default();
        for _ in 0..50 {
            let key = keys::generate().unwrap();
            signatures.add(body.clone(), &key.sign(&body));
        }
        let other = keys::public_of(&keys::generate().unwrap(), "other.pub");
        let reason = signatures
            .check("127.0.0.1:5000/a/b", DIGEST, &[other])
            .unwrap_err();
        assert!(reason.ends_with("; and 46 more"), "{reason}");
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn docker_hub_has_two_names() {
        assert!(same_repository(
            "index.docker.io/library/alpine",
            "docker.io/library/alpine"
        ));
        assert!(same_repository(
            "docker.io/library/alpine:3",
            "docker.io/library/alpine"
        ));
        assert!(same_repository(
            "registry-1.docker.io/library/alpine",
            "docker.io/library/alpine"
        ));
        assert!(same_repository(
            "Registry.Example:443/a",
            "registry.example/a"
        ));
        assert!(!same_repository("registry.example/A", "registry.example/a"));
        assert!(same_repository(
            "docker.io/alpine",
            "docker.io/library/alpine"
        ));
        assert!(!same_repository(
            "127.0.0.1:5000/alpine",
            "127.0.0.1:5000/library/alpine"
        ));
        assert!(same_repository("127.0.0.1:5000/a", "127.0.0.1:5000/a"));
        assert!(!same_repository("127.0.0.1:5000/a", "127.0.0.1:5000/b"));
        assert!(!same_repository("127.0.0.1:5000/a/b", "127.0.0.1:5000/a"));
    }
}
