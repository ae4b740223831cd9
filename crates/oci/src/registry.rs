//! Pulling images from OCI registries into the cache, with `oci-client`.
//!
//! This is the only module that talks to the network. It fetches the
//! manifest (or index, and then the manifest for the requested
//! architecture), the config and the layers, streams each into the cache
//! where it becomes visible only once its digest is verified
//! ([`crate::layout`]), downloads layers in parallel, retries transient
//! failures with backoff, and names the image in the cache. What the image
//! *means* is for [`crate::layout`] to read back.
//!
//! Credentials come from `~/.docker/config.json` (or `$DOCKER_CONFIG`) and
//! its credential helpers; plain HTTP is used only for loopback registries
//! and those named insecure.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

use crate::digest;
use crate::layout::{Layout, LayoutError, Named, choose_platform};
use crate::reference::RegistryRef;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How many blobs download at once.
const PARALLEL: usize = 4;
/// Attempts per request before a transient failure is final.
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
#[error("image {reference}: registry {registry}")]
pub struct RegistryError {
    pub reference: String,
    pub registry: String,
    #[source]
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(
        "401 unauthorized: the registry refused the credentials (set them with `docker login` or in $DOCKER_CONFIG/config.json)"
    )]
    Unauthorized,
    #[error("403 forbidden: the credentials may not read this repository")]
    Forbidden,
    #[error("404 not found: no such repository, tag or digest")]
    NotFound,
    #[error("no linux/{arch} image in its index (it has: {available})")]
    NoPlatform { arch: String, available: String },
    #[error("the manifest has digest {actual}, the reference names {expected}")]
    WrongDigest { expected: String, actual: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {message} (after {attempts} attempts)")]
    Failed {
        what: String,
        message: String,
        attempts: u32,
    },
    #[error(transparent)]
    Cache(Box<LayoutError>),
}

impl RegistryError {
    /// Makes a problem with `reference` an error naming it and its registry.
    fn at(reference: &RegistryRef) -> impl Fn(Problem) -> RegistryError + '_ {
        |problem| RegistryError {
            reference: reference.to_string(),
            registry: reference.registry.clone(),
            problem,
        }
    }
}

impl From<LayoutError> for Problem {
    fn from(error: LayoutError) -> Problem {
        Problem::Cache(Box::new(error))
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certificates: Vec<PathBuf>,
    /// How long a connection may stay silent; default 30 s.
    pub read_timeout: Option<Duration>,
}

pub struct Remote {
    options: RegistryOptions,
    runtime: tokio::runtime::Runtime,
    certificates: Vec<Certificate>,
    /// What each loopback or insecure registry answered to.
    protocols: std::sync::Mutex<std::collections::HashMap<String, ClientProtocol>>,
}

/// What one request failed with, and whether trying again may help.
struct Failure {
    message: String,
    transient: bool,
    problem: Option<Problem>,
}

impl From<OciDistributionError> for Failure {
    fn from(error: OciDistributionError) -> Failure {
        Failure::from_client(error)
    }
}

impl Failure {
    /// A failure on this side (the cache, the stream), not the registry's.
    fn local(error: impl std::error::Error, transient: bool) -> Failure {
        Failure {
            message: crate::chain::render(&error),
            transient,
            problem: None,
        }
    }

    fn from_client(error: OciDistributionError) -> Failure {
        let text = crate::chain::render(&error);
        let status = |code: u16| match code {
            401 => Some(Problem::Unauthorized),
            403 => Some(Problem::Forbidden),
            404 => Some(Problem::NotFound),
            _ => None,
        };
        let (problem, transient) = match &error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                (Some(Problem::Unauthorized), false)
            }
            OciDistributionError::ImageManifestNotFoundError(_) => (Some(Problem::NotFound), false),
            OciDistributionError::ServerError { code, .. } => {
                (status(*code), *code >= 500 || *code == 429)
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}", e.code).to_ascii_uppercase())
                    .collect();
                let problem = if codes.iter().any(|c| c.contains("UNAUTHORIZED")) {
                    Some(Problem::Unauthorized)
                } else if codes.iter().any(|c| c.contains("DENIED")) {
                    Some(Problem::Forbidden)
                } else if codes.iter().any(|c| c.contains("UNKNOWN")) {
                    Some(Problem::NotFound)
                } else {
                    None
                };
                (problem, false)
            }
            OciDistributionError::RequestError(e) => (
                e.status().and_then(|s| status(s.as_u16())),
                e.status().is_none_or(|s| s.is_server_error()),
            ),
            OciDistributionError::IoError(_) => (None, true),
            _ => (None, false),
        };
        Failure {
            message: text,
            transient,
            problem,
        }
    }
}

impl Remote {
    pub fn new(options: RegistryOptions) -> Result<Remote, std::io::Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut certificates = Vec::new();
        for path in &options.ca_certificates {
            let data = std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("CA certificate {}: {e}", path.display()))
            })?;
            certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        Ok(Remote {
            options,
            runtime,
            certificates,
            protocols: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn plain_http(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                registry
            }
        });
        host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self
                .options
                .insecure
                .iter()
                .any(|i| i == registry || i == host)
    }

    /// A client for `registry`. Loopback and insecure registries get
    /// Docker's treatment: HTTPS when they answer it, plain HTTP otherwise.
    async fn client(
        &self,
        registry: &str,
        target: &oci_client::Reference,
        auth: &RegistryAuth,
    ) -> oci_client::Client {
        if !self.plain_http(registry) {
            return self.client_with(ClientProtocol::Https);
        }
        if let Some(protocol) = self
            .protocols
            .lock()
            .ok()
            .and_then(|p| p.get(registry).cloned())
        {
            return self.client_with(protocol);
        }
        let https = self.client_with(ClientProtocol::Https);
        let protocol = match https
            .auth(target, auth, oci_client::RegistryOperation::Pull)
            .await
        {
            // A certificate problem is the user's to hear about, not a
            // reason to drop TLS.
            Err(OciDistributionError::RequestError(e))
                if !crate::chain::render(&e).contains("certificate") =>
            {
                ClientProtocol::Http
            }
            _ => ClientProtocol::Https,
        };
        if let Ok(mut protocols) = self.protocols.lock() {
            protocols.insert(registry.to_string(), protocol.clone());
        }
        self.client_with(protocol)
    }

    fn client_with(&self, protocol: ClientProtocol) -> oci_client::Client {
        oci_client::Client::new(ClientConfig {
            protocol,
            extra_root_certificates: self.certificates.clone(),
            read_timeout: Some(self.options.read_timeout.unwrap_or(Duration::from_secs(30))),
            connect_timeout: Some(Duration::from_secs(15)),
            max_concurrent_download: PARALLEL,
            ..ClientConfig::default()
        })
    }

    /// Credentials for `registry` from the Docker configuration, or anonymous.
    fn auth(registry: &str) -> RegistryAuth {
        let server = if registry == "docker.io" {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        match docker_credential::get_credential(server) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                RegistryAuth::Basic(user, password)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                RegistryAuth::Bearer(token)
            }
            Err(_) => RegistryAuth::Anonymous,
        }
    }

    /// Fetches `reference` for `arch` into `cache` and names it there with
    /// its fully expanded reference. Returns the digest the name points at.
    pub fn pull(
        &self,
        cache: &Layout,
        reference: &RegistryRef,
        arch: &str,
    ) -> Result<String, RegistryError> {
        let fail = RegistryError::at(reference);
        self.runtime
            .block_on(self.pull_async(cache, reference, arch))
            .map_err(fail)
    }

    async fn pull_async(
        &self,
        cache: &Layout,
        reference: &RegistryRef,
        arch: &str,
    ) -> Result<String, Problem> {
        let auth = Self::auth(&reference.registry);
        let target = target(reference);
        let client = self.client(&reference.registry, &target, &auth).await;
        let progress = Progress::new(reference.to_string());
        let accepted: Vec<&str> = INDEX_TYPES.iter().chain(MANIFEST_TYPES).copied().collect();
        let (top, actual) = fetch_manifest(&client, &target, &auth, &accepted, reference).await?;
        let top_json: Value = serde_json::from_slice(&top)
            .map_err(|e| Problem::Invalid(format!("manifest is not JSON: {e}")))?;
        let top_type = media_type(&top_json);
        cache.write_blob(&actual, &top)?;
        let manifest = if INDEX_TYPES.contains(&top_type.as_str()) {
            let index: oci_spec::image::ImageIndex = serde_json::from_slice(&top)
                .map_err(|e| Problem::Invalid(format!("image index: {e}")))?;
            let chosen =
                choose_platform(&index, arch).map_err(|available| Problem::NoPlatform {
                    arch: arch.into(),
                    available,
                })?;
            let digest = chosen.digest().to_string();
            // The SPDX documents attested for the image come along
            // (`crate::attestation`): they are small, and read offline. One
            // that cannot be fetched is said and left out; the image is
            // what was asked for.
            for attestation in crate::attestation::manifests_for(&index, &digest) {
                let digest = attestation.digest().to_string();
                let fetched = async {
                    let bytes = manifest_by_digest(&client, &target, &auth, cache, &digest).await?;
                    let manifest: Value = serde_json::from_slice(&bytes)
                        .map_err(|e| Problem::Invalid(format!("attestation manifest: {e}")))?;
                    fetch_blobs(&client, &target, cache, &manifest, &progress).await
                };
                if let Err(problem) = fetched.await {
                    progress.warn(&format!("its attestation {digest} is left out: {problem}"));
                }
            }
            manifest_by_digest(&client, &target, &auth, cache, &digest).await?
        } else {
            top.to_vec()
        };
        let manifest: Value = serde_json::from_slice(&manifest)
            .map_err(|e| Problem::Invalid(format!("manifest is not JSON: {e}")))?;
        fetch_blobs(&client, &target, cache, &manifest, &progress).await?;
        cache.tag(&Named {
            name: reference.to_string(),
            digest: actual.clone(),
            media_type: top_type,
            size: top.len() as u64,
        })?;
        progress.done();
        Ok(actual)
    }
}

/// OCI artifacts: one manifest whose layers are files ([`crate::artifact`]
/// says what they mean).
impl Remote {
    /// Fetches the manifest `reference` names and, if `check` accepts it,
    /// every blob it lists that `cache` lacks; then names it in `cache`.
    /// Returns the manifest's digest. Nothing but the manifest is fetched
    /// when `check` refuses it, and only a verified manifest is checked.
    pub fn pull_artifact(
        &self,
        cache: &Layout,
        reference: &RegistryRef,
        check: impl Fn(&[u8]) -> Result<(), String>,
    ) -> Result<String, RegistryError> {
        self.with_client(reference, async |client, target, auth| {
            let (bytes, digest) =
                fetch_manifest(client, target, auth, &any_manifest(), reference).await?;
            check(&bytes).map_err(Problem::Invalid)?;
            let manifest: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Problem::Invalid(format!("manifest is not JSON: {e}")))?;
            let progress = Progress::new(reference.to_string());
            fetch_blobs(client, target, cache, &manifest, &progress).await?;
            cache.write_blob(&digest, &bytes)?;
            cache.tag(&Named {
                name: reference.to_string(),
                digest: digest.clone(),
                media_type: media_type(&manifest),
                size: bytes.len() as u64,
            })?;
            progress.done();
            Ok(digest)
        })
    }

    /// Uploads `blobs` that the registry lacks, then `manifest` (of
    /// `media_type`) under `destination`'s tag. Returns the manifest's
    /// digest.
    pub fn push_manifest(
        &self,
        destination: &RegistryRef,
        blobs: &[Upload],
        manifest: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let fail = RegistryError::at(destination);
        self.runtime
            .block_on(async {
                let (client, target) = self.push_client(destination).await?;
                for blob in blobs {
                    upload(&client, &target, blob).await?;
                }
                push_manifest(&client, &target, manifest, media_type).await?;
                Ok(digest::sha256(manifest))
            })
            .map_err(fail)
    }

    /// Runs `request` with a client for `reference`'s registry, the
    /// reference as oci-client names it and the credentials; a problem
    /// becomes an error naming `reference`.
    fn with_client<T>(
        &self,
        reference: &RegistryRef,
        request: impl AsyncFnOnce(
            &oci_client::Client,
            &oci_client::Reference,
            &RegistryAuth,
        ) -> Result<T, Problem>,
    ) -> Result<T, RegistryError> {
        self.runtime
            .block_on(async {
                let auth = Self::auth(&reference.registry);
                let target = target(reference);
                let client = self.client(&reference.registry, &target, &auth).await;
                request(&client, &target, &auth).await
            })
            .map_err(RegistryError::at(reference))
    }

    /// A client that has authenticated for pushing to `destination`, and
    /// the tag pushed to.
    async fn push_client(
        &self,
        destination: &RegistryRef,
    ) -> Result<(oci_client::Client, oci_client::Reference), Problem> {
        let auth = Self::auth(&destination.registry);
        let target = oci_client::Reference::with_tag(
            destination.registry.clone(),
            destination.repository.clone(),
            destination.tag_or_default().unwrap_or("latest").to_string(),
        );
        let client = self.client(&destination.registry, &target, &auth).await;
        retry("authentication", || async {
            client
                .auth(&target, &auth, oci_client::RegistryOperation::Push)
                .await
                .map(drop)
        })
        .await?;
        Ok((client, target))
    }
}

/// Small manifests read whole ([`crate::signature`]'s `.sig` manifests):
/// nothing is written to the cache here; the caller checks what it got
/// first.
impl Remote {
    /// The digest of the manifest or index `reference` names (pinned
    /// digests are checked against the bytes).
    pub fn resolve(&self, reference: &RegistryRef) -> Result<String, RegistryError> {
        self.with_client(reference, async |client, target, auth| {
            let (_, digest) =
                fetch_manifest(client, target, auth, &any_manifest(), reference).await?;
            Ok(digest)
        })
    }

    /// The manifest `reference` names and its config and layers, held in
    /// memory, each verified against its digest; `None` when the registry
    /// has no such manifest. The manifest and the blobs together may not
    /// exceed `limit` bytes.
    pub fn pull_small(
        &self,
        reference: &RegistryRef,
        limit: u64,
    ) -> Result<Option<SmallManifest>, RegistryError> {
        self.with_client(reference, async |client, target, auth| {
            let (manifest, digest) =
                match fetch_manifest(client, target, auth, MANIFEST_TYPES, reference).await {
                    Ok(found) => found,
                    Err(Problem::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                };
            let mut total = manifest.len() as u64;
            let document: Value = serde_json::from_slice(&manifest)
                .map_err(|e| Problem::Invalid(format!("manifest is not JSON: {e}")))?;
            let mut blobs = Vec::new();
            for descriptor in std::iter::once(&document["config"])
                .chain(document["layers"].as_array().into_iter().flatten())
            {
                let blob = descriptor["digest"].as_str().unwrap_or_default();
                let size = descriptor["size"].as_u64();
                let (true, Some(size)) = (digest::is_valid(blob), size) else {
                    return Err(Problem::Invalid(format!(
                        "manifest names a blob without a sha256 digest and size: {descriptor}"
                    )));
                };
                total = total.saturating_add(size);
                if total > limit {
                    return Err(Problem::Invalid(format!(
                        "the manifest and its blobs exceed the {limit} bytes berth reads"
                    )));
                }
                let bytes = small_blob(client, target, blob, size).await?;
                blobs.push((blob.to_string(), bytes));
            }
            Ok(Some(SmallManifest {
                manifest: manifest.to_vec(),
                digest,
                blobs,
            }))
        })
    }
}

/// A manifest and its blobs, in memory and verified.
#[derive(Debug, Clone)]
pub struct SmallManifest {
    pub manifest: Vec<u8>,
    pub digest: String,
    /// Digest and bytes: the config first, then the layers in order.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// The blob `digest` of `size` bytes, read into memory (no more than
/// `size`) and verified.
async fn small_blob(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    blob: &str,
    size: u64,
) -> Result<Vec<u8>, Problem> {
    let descriptor = OciDescriptor {
        digest: blob.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    retry(&format!("blob {blob}"), || async {
        let mut response = client
            .pull_blob_stream(target, &descriptor)
            .await
            .map_err(Failure::from_client)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| Failure::local(e, true))?);
            if bytes.len() as u64 > size {
                return Err(Failure::local(
                    std::io::Error::other(format!(
                        "the registry sent more than the {size} bytes the manifest declares"
                    )),
                    true,
                ));
            }
        }
        let actual = digest::sha256(&bytes);
        if actual != blob {
            return Err(Failure::local(
                std::io::Error::other(format!("blob {blob}: the registry sent {actual}")),
                true,
            ));
        }
        Ok(bytes)
    })
    .await
}

/// A blob to upload: its digest and size, and where its bytes are.
#[derive(Debug, Clone)]
pub struct Upload {
    pub digest: String,
    pub size: u64,
    pub bytes: UploadBytes,
}

#[derive(Debug, Clone)]
pub enum UploadBytes {
    /// A small blob made in memory (a manifest's config).
    Memory(Vec<u8>),
    /// A file, streamed from disk.
    File(PathBuf),
}

/// Uploads `blob` unless the registry has it; a file is streamed, never
/// held whole. The registry checks the bytes against the digest.
async fn upload(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    blob: &Upload,
) -> Result<(), Problem> {
    if client
        .blob_exists(target, &blob.digest)
        .await
        .unwrap_or(false)
    {
        return Ok(());
    }
    retry(&format!("blob {}", blob.digest), || async {
        match &blob.bytes {
            UploadBytes::Memory(bytes) => {
                client.push_blob(target, bytes.clone(), &blob.digest).await
            }
            UploadBytes::File(path) => {
                let file = std::fs::File::open(path)?;
                client
                    .push_blob_stream(target, file_stream(file), &blob.digest, Some(blob.size))
                    .await
            }
        }
    })
    .await
    .map(drop)
}

async fn push_manifest(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    bytes: &[u8],
    kind: &str,
) -> Result<(), Problem> {
    let content_type = http::HeaderValue::from_str(kind)
        .map_err(|e| Problem::Invalid(format!("media type {kind}: {e}")))?;
    let digest = digest::sha256(bytes);
    retry(&format!("manifest {digest}"), || async {
        client
            .push_manifest_raw(reference, bytes.to_vec(), content_type.clone())
            .await
    })
    .await
    .map(drop)
}

/// Every manifest and index media type.
fn any_manifest() -> Vec<&'static str> {
    MANIFEST_TYPES.iter().chain(INDEX_TYPES).copied().collect()
}

/// The reference as oci-client names it: by digest when pinned, else by tag.
fn target(reference: &RegistryRef) -> oci_client::Reference {
    match (&reference.digest, reference.tag_or_default()) {
        (Some(digest), _) => oci_client::Reference::with_digest(
            reference.registry.clone(),
            reference.repository.clone(),
            digest.clone(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            tag.unwrap_or("latest").to_string(),
        ),
    }
}

/// The manifest (or index) `target` names and its digest, checked against
/// the digest `reference` pins, if any.
async fn fetch_manifest(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    auth: &RegistryAuth,
    accepted: &[&str],
    reference: &RegistryRef,
) -> Result<(bytes::Bytes, String), Problem> {
    let (bytes, _) = retry("manifest", || async {
        client.pull_manifest_raw(target, auth, accepted).await
    })
    .await?;
    let actual = digest::sha256(&bytes);
    if let Some(expected) = &reference.digest
        && *expected != actual
    {
        return Err(Problem::WrongDigest {
            expected: expected.clone(),
            actual,
        });
    }
    Ok((bytes, actual))
}

/// The manifest of `target`'s repository with this digest: from the cache,
/// or fetched, checked against the digest and cached.
async fn manifest_by_digest(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    auth: &RegistryAuth,
    cache: &Layout,
    digest: &str,
) -> Result<Vec<u8>, Problem> {
    if cache.has_blob(digest) {
        return std::fs::read(cache.blob_path(digest).expect("valid digest"))
            .map_err(|e| Problem::Invalid(e.to_string()));
    }
    let by_digest = target.clone_with_digest(digest.to_string());
    let (bytes, _) = retry("manifest", || async {
        client
            .pull_manifest_raw(&by_digest, auth, MANIFEST_TYPES)
            .await
    })
    .await?;
    let got = digest::sha256(&bytes);
    if got != digest {
        return Err(Problem::WrongDigest {
            expected: digest.to_string(),
            actual: got,
        });
    }
    cache.write_blob(digest, &bytes)?;
    Ok(bytes.to_vec())
}

/// Fetches the config and layers of `manifest` that `cache` lacks, in
/// parallel, each verified on its way in.
async fn fetch_blobs(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    cache: &Layout,
    manifest: &Value,
    progress: &Progress,
) -> Result<(), Problem> {
    let mut blobs: Vec<OciDescriptor> = Vec::new();
    for descriptor in std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
    {
        let digest = descriptor["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let size = descriptor["size"].as_i64().unwrap_or(-1);
        if cache.blob_path(&digest).is_none() || size < 0 {
            return Err(Problem::Invalid(format!(
                "manifest names a blob without a sha256 digest and size: {descriptor}"
            )));
        }
        if !cache.has_blob(&digest) {
            blobs.push(OciDescriptor {
                media_type: media_type(descriptor),
                digest,
                size,
                urls: None,
                annotations: None,
                artifact_type: None,
            });
        }
    }
    stream::iter(blobs)
        .map(|blob| async move { fetch_blob(client, target, cache, &blob, progress).await })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

impl Remote {
    /// Pushes the cached image named `name` (with every platform of an
    /// index) to `destination`.
    pub fn push(
        &self,
        cache: &Layout,
        name: &str,
        destination: &RegistryRef,
    ) -> Result<String, RegistryError> {
        let fail = RegistryError::at(destination);
        let named = cache.named(name).map_err(|e| fail(e.into()))?;
        self.runtime
            .block_on(self.push_async(cache, &named, destination))
            .map_err(fail)
    }

    async fn push_async(
        &self,
        cache: &Layout,
        named: &Named,
        destination: &RegistryRef,
    ) -> Result<String, Problem> {
        let (client, target) = self.push_client(destination).await?;
        let read = |digest: &str| -> Result<Vec<u8>, Problem> {
            let path = cache
                .blob_path(digest)
                .ok_or_else(|| Problem::Invalid(format!("bad digest {digest}")))?;
            std::fs::read(&path).map_err(|e| Problem::Invalid(format!("blob {digest}: {e}")))
        };
        let top = read(&named.digest)?;
        let top_json: Value = serde_json::from_slice(&top)
            .map_err(|e| Problem::Invalid(format!("manifest is not JSON: {e}")))?;
        // Manifests to push, children of an index first.
        let mut manifests: Vec<(String, Vec<u8>, String)> = Vec::new();
        if INDEX_TYPES.contains(&named.media_type.as_str()) || top_json.get("manifests").is_some() {
            for child in top_json["manifests"].as_array().into_iter().flatten() {
                let digest = child["digest"].as_str().unwrap_or_default().to_string();
                let bytes = read(&digest)?;
                manifests.push((digest, bytes, media_type(child)));
            }
        }
        manifests.push((named.digest.clone(), top, media_type(&top_json)));
        for (digest, bytes, kind) in &manifests {
            let document: Value = serde_json::from_slice(bytes)
                .map_err(|e| Problem::Invalid(format!("manifest {digest} is not JSON: {e}")))?;
            for blob in std::iter::once(&document["config"])
                .chain(document["layers"].as_array().into_iter().flatten())
            {
                let Some(blob) = blob["digest"].as_str() else {
                    continue;
                };
                let path = cache
                    .blob_path(blob)
                    .ok_or_else(|| Problem::Invalid(format!("bad digest {blob}")))?;
                let size = std::fs::metadata(&path)
                    .map_err(|e| Problem::Invalid(format!("blob {blob}: {e}")))?
                    .len();
                let upload_blob = Upload {
                    digest: blob.to_string(),
                    size,
                    bytes: UploadBytes::File(path),
                };
                upload(&client, &target, &upload_blob).await?;
            }
            let reference = if *digest == named.digest {
                target.clone()
            } else {
                target.clone_with_digest(digest.clone())
            };
            push_manifest(&client, &reference, bytes, kind).await?;
        }
        Ok(named.digest.clone())
    }
}

/// A file as a stream of 1 MiB chunks, read as the upload asks for them.
fn file_stream(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; 1 << 20];
        match std::io::Read::read(&mut file, &mut buffer) {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), Some(file)))
            }
            Err(e) => Some((Err(OciDistributionError::IoError(e)), None)),
        }
    })
}

fn media_type(document: &Value) -> String {
    match document["mediaType"].as_str() {
        Some(t) => t.to_string(),
        None if document.get("manifests").is_some() => INDEX_TYPES[0].to_string(),
        None => MANIFEST_TYPES[0].to_string(),
    }
}

/// Runs `request` until it succeeds, fails for good, or has been tried
/// [`ATTEMPTS`] times, waiting 0.25 s, 0.5 s, 1 s between tries.
async fn retry<T, E, F, Fut>(what: &str, request: F) -> Result<T, Problem>
where
    E: Into<Failure>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    retry_with(what, |_| {}, request).await
}

/// [`retry`], telling `before_retry` why each new try is made.
async fn retry_with<T, E, F, Fut>(
    what: &str,
    before_retry: impl Fn(&str),
    mut request: F,
) -> Result<T, Problem>
where
    E: Into<Failure>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let failure: Failure = error.into();
                if let Some(problem) = failure.problem {
                    return Err(problem);
                }
                if !failure.transient || attempt >= ATTEMPTS {
                    return Err(Problem::Failed {
                        what: what.into(),
                        message: failure.message,
                        attempts: attempt,
                    });
                }
                before_retry(&failure.message);
                tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
            }
        }
    }
}

async fn fetch_blob(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    cache: &Layout,
    blob: &OciDescriptor,
    progress: &Progress,
) -> Result<(), Problem> {
    let size = u64::try_from(blob.size).unwrap_or(0);
    let before_retry = |message: &str| progress.retry(&blob.digest, message);
    retry_with(&format!("blob {}", blob.digest), before_retry, || async {
        let mut response = client
            .pull_blob_stream(target, blob)
            .await
            .map_err(Failure::from_client)?;
        let mut writer = cache
            .blob_writer(&blob.digest, size)
            .map_err(|e| Failure::local(e, false))?;
        while let Some(chunk) = response.stream.next().await {
            let chunk = chunk.map_err(|e| Failure::local(e, true))?;
            writer
                .write_all(&chunk)
                .map_err(|e| Failure::local(e, false))?;
            progress.bytes(chunk.len() as u64);
            // More than the manifest declares is wrong already: the rest is
            // not read (a flaky proxy may alter a body, so it is retried).
            if writer.written() > size {
                return Err(Failure::local(
                    std::io::Error::other(format!(
                        "the registry sent more than the {size} bytes the manifest declares"
                    )),
                    true,
                ));
            }
        }
        // A short or altered body fails here and is fetched again.
        writer.commit().map_err(|e| {
            let transient = matches!(e, LayoutError::Mismatch { .. });
            Failure::local(e, transient)
        })
    })
    .await?;
    progress.blob(&blob.digest, size);
    Ok(())
}

/// Progress of one pull: a bar on a terminal, plain lines otherwise.
struct Progress {
    reference: String,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(reference: String) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} pulling {msg}: {bytes} ({bytes_per_sec})",
                )
                .expect("valid template"),
            );
            bar.set_message(reference.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("pulling {reference}");
        }
        Progress { reference, bar }
    }

    fn bytes(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn blob(&self, digest: &str, size: u64) {
        if self.bar.is_none() {
            let _ = writeln!(
                std::io::stderr(),
                "pulled {} {digest} ({size} bytes)",
                self.reference
            );
        }
    }

    fn retry(&self, digest: &str, message: &str) {
        let line = format!("retrying {} {digest}: {message}", self.reference);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn warn(&self, message: &str) {
        let line = format!("berth: warning: {}: {message}", self.reference);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_failure_during_a_pull_keeps_its_cause() {
        let error = RegistryError {
            reference: "docker.io/a/b:1".into(),
            registry: "docker.io".into(),
            problem: Problem::from(LayoutError::Io {
                root: "/cache".into(),
                source: std::io::Error::other("no space left on device"),
            }),
        };
        assert_eq!(
            crate::chain::render(&error),
            "image docker.io/a/b:1: registry docker.io: cache /cache: no space left on device"
        );
    }
}
