//! Image signatures in cosign's format, so that cosign and berth read each
//! other's (cosign's `specs/SIGNATURE_SPEC.md`).
//!
//! What is signed is the simple-signing payload ([`payload`]): JSON naming
//! the image's repository (`critical.identity.docker-reference`), the
//! digest of its manifest or index (`critical.image.docker-manifest-digest`)
//! and `critical.type` [`SIGNATURE_TYPE`]. The ed25519 signature is over
//! the payload's bytes exactly.
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

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey};
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
#[derive(Debug, Clone)]
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
        if self.layers.contains(&layer) {
            return false;
        }
        self.layers.push(layer);
        self.blobs.insert(digest, payload);
        true
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

/// Docker Hub under its two names; a tag or digest after the repository.
fn same_repository(named: &str, repository: &str) -> bool {
    let hub = |s: &str| match s.strip_prefix("index.docker.io/") {
        Some(rest) => format!("docker.io/{rest}"),
        None => s.to_string(),
    };
    let named = hub(named);
    let bare = match named.rsplit_once('@') {
        Some((name, _)) => name,
        None => &named,
    };
    let bare = match bare.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => bare,
    };
    bare == hub(repository)
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
            "is a {} layer, not a simple-signing payload",
            layer.media_type
        ));
    }
    let encoded = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| format!("has no {SIGNATURE_ANNOTATION} annotation"))?;
    let signature = BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or("is not a base64 ed25519 signature")?;
    let key = keys
        .iter()
        .find(|key| key.key.verify_strict(payload, &signature).is_ok())
        .ok_or("is by none of the keys")?;
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("(by {}) is not a simple-signing payload: {e}", key.name))?;
    let critical = parsed.critical;
    if critical.kind != SIGNATURE_TYPE {
        return Err(format!("(by {}) has type {:?}", key.name, critical.kind));
    }
    if critical.image.digest != digest {
        return Err(format!(
            "(by {}) is for {}",
            key.name, critical.image.digest
        ));
    }
    if !same_repository(&critical.identity.docker_reference, repository) {
        return Err(format!(
            "(by {}) names repository {}",
            key.name, critical.identity.docker_reference
        ));
    }
    Ok(key.name.clone())
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

/// Puts a `.sig` manifest and its blobs into the cache under `name`.
fn store(layout: &Layout, name: &str, small: &SmallManifest) -> Result<(), LayoutError> {
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

/// The signatures of `digest`: from the registry with `remote`, else from
/// the cache.
fn signatures_of(
    layout: &Layout,
    remote: Option<&Remote>,
    image: &RegistryRef,
    at: &RegistryRef,
) -> Result<Option<(SmallManifest, Signatures)>, SignatureError> {
    let small = match remote {
        Some(remote) => remote.pull_small(at, MAX_BYTES)?,
        None => cached(layout, &at.to_string())?,
    };
    let Some(small) = small else {
        return Ok(None);
    };
    let signatures = Signatures::read(&small).map_err(|reason| SignatureError::Malformed {
        image: image.to_string(),
        reference: at.to_string(),
        reason,
    })?;
    Ok(Some((small, signatures)))
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
    let mut signatures = match signatures_of(layout, remote, image, &at)? {
        Some((_, signatures)) => signatures,
        None => Signatures {
            layers: Vec::new(),
            blobs: BTreeMap::new(),
        },
    };
    let payload = payload(&repository(image), &digest);
    let signature = key.sign(&payload);
    let added = signatures.add(payload, &signature);
    let small = signatures.write();
    if let Some(remote) = remote {
        let uploads: Vec<Upload> = small
            .blobs
            .iter()
            .map(|(digest, bytes)| Upload {
                digest: digest.clone(),
                size: bytes.len() as u64,
                bytes: UploadBytes::Memory(bytes.clone()),
            })
            .collect();
        remote.push_manifest(&at, &uploads, &small.manifest, MANIFEST_TYPE)?;
    }
    store(layout, &at.to_string(), &small)?;
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
    let small = match remote {
        Some(remote) => remote.pull_small(&at, MAX_BYTES)?,
        None => cached(layout, &at.to_string())?,
    };
    let key =
        check(image, &digest, small.as_ref(), keys).map_err(|reason| SignatureError::Refused {
            image: image.to_string(),
            digest: digest.clone(),
            keys: keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            reason,
        })?;
    if let (Some(_), Some(small)) = (remote, &small) {
        store(layout, &at.to_string(), small)?;
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
/// into the cache, unverified, for offline verification later; returns
/// where they were found, if anywhere.
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
        Some((small, _)) => {
            store(layout, &at.to_string(), &small)?;
            Ok(Some(at.to_string()))
        }
        None => Ok(None),
    }
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
    fn signatures_accumulate_and_each_is_checked() {
        let one = keys::generate().unwrap();
        let two = keys::generate().unwrap();
        let mut signatures = Signatures {
            layers: Vec::new(),
            blobs: BTreeMap::new(),
        };
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
                .contains("names repository 127.0.0.1:5000/a/b")
        );
        let error = read.check("127.0.0.1:5000/a/b", &DIGEST.replace('4', "5"), &[second]);
        assert!(error.unwrap_err().contains(&format!("is for {DIGEST}")));
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
        assert!(same_repository("127.0.0.1:5000/a", "127.0.0.1:5000/a"));
        assert!(!same_repository("127.0.0.1:5000/a", "127.0.0.1:5000/b"));
        assert!(!same_repository("127.0.0.1:5000/a/b", "127.0.0.1:5000/a"));
    }
}
