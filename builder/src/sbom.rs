//! The software bill of materials of a build: one SPDX 2.3 JSON document
//! (<https://spdx.github.io/spdx-spec/v2.3/>) listing every image the plan
//! pinned (reference, manifest digest, signature status), the Debian
//! packages berth's own images record in their `org.berth.debian.packages`
//! label, the kernel and its release, and the `files:` entries, with
//! DESCRIBES and CONTAINS relationships between them.
//!
//! The same bytes go into the image ([`IMAGE_PATH`], written by
//! [`crate::assemble`]) and beside the artifacts as `NAME.spdx.json`
//! (staged with them by [`crate::build`]). They are deterministic: the
//! creation time is the build's [`Clock`], the namespace is derived from a
//! hash of everything else in the document, and every list is sorted.
//!
//! SPDX documents that input images carry are merged in by [`merge`]; where
//! they are found (an in-toto attestation in the image index, as LinuxKit
//! reads them) is the image source's business. Whether an image's signature
//! was verified, and by which key of the trust policy, is
//! [`signature_status`]'s answer.

use std::collections::{BTreeMap, BTreeSet};

use archive::Clock;
use oci::ResolvedImage;
use oci::reference::Reference;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{Plan, PlannedImage};

/// Where the document is inside the image.
pub const IMAGE_PATH: &str = "usr/share/berth/sbom.spdx.json";

/// The label of berth's own images listing their Debian packages as
/// space-separated `name=version` entries ([`crate::pkg`] writes it).
pub const DEBIAN_LABEL: &str = "org.berth.debian.packages";

/// What SPDX writes for a value nobody asserts.
const NOASSERTION: &str = "NOASSERTION";

const HOST: &str = "SPDXRef-Host";
const DOCUMENT: &str = "SPDXRef-DOCUMENT";

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("image {image}: label {DEBIAN_LABEL}: entry {entry:?} is not name=version")]
    DebianLabel { image: String, entry: String },
    #[error("image {image}: its SPDX document: {message}")]
    Attested { image: String, message: String },
}

/// A regular file of `files:` as it went into the image.
#[derive(Debug, Clone)]
pub struct AssembledFile {
    /// Its path in the image, without a leading `/`.
    pub path: String,
    pub sha1: String,
    pub sha256: String,
}

impl AssembledFile {
    pub fn new(path: &str, bytes: &[u8]) -> AssembledFile {
        AssembledFile {
            path: path.to_string(),
            sha1: hex(&sha1::Sha1::digest(bytes)),
            sha256: hex(&Sha256::digest(bytes)),
        }
    }
}

/// What assembly saw that the plan does not say.
#[derive(Debug, Default)]
pub struct Assembled {
    /// The kernel's release, the name of its `lib/modules/` directory.
    pub kernel_release: Option<String>,
    pub files: Vec<AssembledFile>,
    /// SPDX documents input images carry, by the image's reference.
    pub attested: BTreeMap<String, Vec<Vec<u8>>>,
}

/// The signature status of an image, written as the annotation
/// `berth.signature: STATUS` on its package: `verified by NAME (sha256:…)`
/// for each key of the trust policy that verified the digest the build
/// used, or `not required` when no rule of the policy asks for a
/// signature.
pub fn signature_status(image: &PlannedImage) -> String {
    match &image.verified_by {
        None => "not required".into(),
        Some(keys) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| format!("{} ({})", k.name, k.fingerprint))
                .collect();
            format!("verified by {}", keys.join(", "))
        }
    }
}

/// The document for a build named `name`, as pretty-printed JSON with a
/// trailing newline.
pub fn document(
    name: &str,
    plan: &Plan,
    assembled: &Assembled,
    clock: Clock,
) -> Result<Vec<u8>, SbomError> {
    let created = archive::clock::rfc3339(clock.made());
    let mut doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: DOCUMENT.into(),
        name: name.to_string(),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created: created.clone(),
            creators: vec![format!("Tool: berth-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages: Vec::new(),
        files: Vec::new(),
        relationships: Vec::new(),
    };
    let mut host = Package::new(HOST.into(), name.to_string());
    host.primary_package_purpose = Some("OPERATING-SYSTEM");
    doc.packages.push(host);
    doc.relate(DOCUMENT, "DESCRIBES", HOST);

    let mut images: BTreeMap<String, &PlannedImage> = BTreeMap::new();
    for image in plan.images() {
        images.insert(image.image.reference.clone(), image);
    }
    let ids = ImageIds::new(images.values().map(|p| &p.image));
    let mut listed = BTreeSet::new();
    for planned in images.values() {
        let image = &planned.image;
        let id = ids.of(image);
        // Two spellings of one repository, tag and digest are one package.
        if !listed.insert(id.clone()) {
            continue;
        }
        let mut package = image_package(&id, image);
        package.annotations.push(Annotation {
            annotation_date: created.clone(),
            annotation_type: "OTHER",
            annotator: format!("Tool: berth-{}", env!("CARGO_PKG_VERSION")),
            comment: format!("berth.signature: {}", signature_status(planned)),
        });
        doc.packages.push(package);
        doc.relate(HOST, "CONTAINS", &id);
        for (package, version) in debian_packages(image)? {
            let deb = deb_id(&package, &version);
            if !doc.packages.iter().any(|p| p.spdx_id == deb) {
                let mut p = Package::new(deb.clone(), package.clone());
                p.version_info = Some(version.clone());
                p.primary_package_purpose = Some("LIBRARY");
                let arch = image.config.architecture().to_string();
                p.external_refs.push(purl(format!(
                    "pkg:deb/debian/{}@{}?arch={}",
                    encode(&package),
                    encode(&version),
                    encode(&arch)
                )));
                doc.packages.push(p);
            }
            doc.relate(&id, "CONTAINS", &deb);
        }
        let attested = assembled.attested.get(&image.reference);
        for (n, attested) in attested.into_iter().flatten().enumerate() {
            merge(
                &mut doc,
                &id,
                &format!("{id}-{n}"),
                &image.reference,
                attested,
            )?;
        }
    }
    if let Some(kernel) = &plan.kernel {
        let mut p = Package::new("SPDXRef-Kernel".into(), "linux".into());
        p.version_info = Some(
            assembled
                .kernel_release
                .clone()
                .unwrap_or_else(|| NOASSERTION.into()),
        );
        p.primary_package_purpose = Some("OPERATING-SYSTEM");
        doc.packages.push(p);
        doc.relate(&ids.of(&kernel.image.image), "CONTAINS", "SPDXRef-Kernel");
    }
    for file in &assembled.files {
        let id = format!("SPDXRef-File-{}", &hex(&Sha256::digest(&file.path))[..16]);
        doc.files.push(FileEntry {
            spdx_id: id.clone(),
            file_name: format!("./{}", file.path),
            checksums: vec![
                Checksum::new("SHA1", &file.sha1),
                Checksum::new("SHA256", &file.sha256),
            ],
        });
        doc.relate(HOST, "CONTAINS", &id);
    }
    // The host's files are its own: SPDX then asks for their verification
    // code (SPDX 2.3, 7.9).
    if !assembled.files.is_empty() {
        let mut sha1s: Vec<&str> = assembled.files.iter().map(|f| f.sha1.as_str()).collect();
        sha1s.sort_unstable();
        let host = doc
            .packages
            .iter_mut()
            .find(|p| p.spdx_id == HOST)
            .expect("the host package is the first");
        host.files_analyzed = true;
        host.package_verification_code = Some(VerificationCode {
            package_verification_code_value: hex(&sha1::Sha1::digest(sha1s.concat())),
        });
    }
    doc.packages.sort_by(|a, b| a.spdx_id.cmp(&b.spdx_id));
    doc.files.sort_by(|a, b| a.spdx_id.cmp(&b.spdx_id));
    doc.relationships.sort();
    doc.relationships.dedup();
    // The namespace names this document uniquely, as SPDX asks, and
    // reproducibly: it is a hash of everything else in it.
    let unnamed = serde_json::to_vec(&doc).map_err(|e| SbomError::Attested {
        image: name.to_string(),
        message: e.to_string(),
    })?;
    doc.document_namespace = format!(
        "https://spdx.berth.invalid/{}-{}",
        encode(name),
        hex(&Sha256::digest(&unnamed))
    );
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|e| SbomError::Attested {
        image: name.to_string(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Merges an SPDX JSON document an image carries into `doc`: its packages
/// and files under identifiers prefixed with `prefix`, its relationships
/// between them, and the image `image_id` CONTAINS what it DESCRIBES.
fn merge(
    doc: &mut Document,
    image_id: &str,
    prefix: &str,
    reference: &str,
    attested: &[u8],
) -> Result<(), SbomError> {
    let fail = |message: String| SbomError::Attested {
        image: reference.to_string(),
        message,
    };
    let theirs: serde_json::Value =
        serde_json::from_slice(attested).map_err(|e| fail(e.to_string()))?;
    let prefix = prefix.trim_start_matches("SPDXRef-");
    let rename = |id: &str| format!("SPDXRef-{prefix}-{}", id.trim_start_matches("SPDXRef-"));
    let text = |value: &serde_json::Value, key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| fail(format!("an element without {key:?}")))
    };
    let list = |key: &str| {
        theirs
            .get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for package in list("packages") {
        let mut p = Package::new(rename(&text(&package, "SPDXID")?), text(&package, "name")?);
        p.version_info = package
            .get("versionInfo")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        // What the package says of its files holds for the files it brings.
        p.files_analyzed = package
            .get("filesAnalyzed")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        p.package_verification_code = package
            .get("packageVerificationCode")
            .and_then(|v| v.get("packageVerificationCodeValue"))
            .and_then(|v| v.as_str())
            .map(|value| VerificationCode {
                package_verification_code_value: value.to_string(),
            });
        for reference in package
            .get("externalRefs")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if reference.get("referenceType").and_then(|v| v.as_str()) == Some("purl") {
                p.external_refs
                    .push(purl(text(reference, "referenceLocator")?));
            }
        }
        doc.packages.push(p);
    }
    for file in list("files") {
        let checksums = file
            .get("checksums")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|c| {
                Ok(Checksum::new(
                    &text(c, "algorithm")?,
                    &text(c, "checksumValue")?,
                ))
            })
            .collect::<Result<Vec<_>, SbomError>>()?;
        doc.files.push(FileEntry {
            spdx_id: rename(&text(&file, "SPDXID")?),
            file_name: text(&file, "fileName")?,
            checksums,
        });
    }
    let packages: BTreeSet<String> = doc.packages.iter().map(|p| p.spdx_id.clone()).collect();
    let known: BTreeSet<String> = doc
        .files
        .iter()
        .map(|f| f.spdx_id.clone())
        .chain(packages.iter().cloned())
        .collect();
    for relationship in list("relationships") {
        let from = text(&relationship, "spdxElementId")?;
        let kind = text(&relationship, "relationshipType")?;
        let to = text(&relationship, "relatedSpdxElement")?;
        // An image's package analyses no files of its own: it contains the
        // packages the document describes.
        if from == DOCUMENT && kind == "DESCRIBES" {
            if packages.contains(&rename(&to)) {
                doc.relate(image_id, "CONTAINS", &rename(&to));
            }
        } else if known.contains(&rename(&from)) && known.contains(&rename(&to)) {
            doc.relate(&rename(&from), &kind, &rename(&to));
        }
    }
    for described in theirs
        .get("documentDescribes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        if packages.contains(&rename(described)) {
            doc.relate(image_id, "CONTAINS", &rename(described));
        }
    }
    Ok(())
}

/// The `name=version` entries of an image's Debian label, sorted.
fn debian_packages(image: &ResolvedImage) -> Result<BTreeSet<(String, String)>, SbomError> {
    let label = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(DEBIAN_LABEL));
    label
        .into_iter()
        .flat_map(|l| l.split_whitespace())
        .map(|entry| match entry.split_once('=') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                Ok((name.to_string(), version.to_string()))
            }
            _ => Err(SbomError::DebianLabel {
                image: image.reference.clone(),
                entry: entry.to_string(),
            }),
        })
        .collect()
}

fn image_package(id: &str, image: &ResolvedImage) -> Package {
    let (repository, tag) = repository_and_tag(image);
    let mut p = Package::new(id.to_string(), repository.clone());
    p.version_info = tag.clone();
    p.primary_package_purpose = Some("CONTAINER");
    if let Some(hex) = image.digest.strip_prefix("sha256:") {
        p.checksums.push(Checksum::new("SHA256", hex));
    }
    let last = repository.rsplit('/').next().unwrap_or(&repository);
    let mut locator = format!(
        "pkg:oci/{}@{}?arch={}&repository_url={}",
        encode(&last.to_lowercase()),
        encode(&image.digest),
        encode(&image.config.architecture().to_string()),
        encode(&repository)
    );
    if let Some(tag) = &tag {
        locator.push_str(&format!("&tag={}", encode(tag)));
    }
    p.external_refs.push(purl(locator));
    p
}

/// An image's repository (`registry/path`) and tag: its reference without
/// the digest a lock file pins it to, which the package has as its
/// checksum, so a build with the lock writes the same document.
fn repository_and_tag(image: &ResolvedImage) -> (String, Option<String>) {
    match Reference::parse(&image.reference) {
        Ok(Reference::Registry(r)) => (format!("{}/{}", r.registry, r.repository), r.tag),
        _ => (image.reference.clone(), None),
    }
}

/// An image's identifier: from its repository and tag, so two references
/// to one digest stay two packages.
fn image_id(image: &ResolvedImage) -> String {
    let (repository, tag) = repository_and_tag(image);
    let name = format!("{repository}:{}", tag.unwrap_or_default());
    format!("SPDXRef-Image-{}", &hex(&Sha256::digest(name))[..16])
}

/// The SPDX ID of each image: a hash of its repository and tag, so that a
/// build with a lock names its images as the build without it did; the
/// digest is added only where one repository and tag stand for two
/// images (`alpine:3@sha256:…` beside `alpine:3`), so that IDs stay
/// unique.
struct ImageIds {
    /// Each repository-and-tag ID with the digests it stands for.
    digests: BTreeMap<String, BTreeSet<String>>,
}

impl ImageIds {
    fn new<'a>(images: impl Iterator<Item = &'a ResolvedImage>) -> ImageIds {
        let mut digests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for image in images {
            digests
                .entry(image_id(image))
                .or_default()
                .insert(image.digest.clone());
        }
        ImageIds { digests }
    }

    fn of(&self, image: &ResolvedImage) -> String {
        let id = image_id(image);
        match self.digests.get(&id) {
            Some(digests) if digests.len() > 1 => {
                let hex = image
                    .digest
                    .strip_prefix("sha256:")
                    .unwrap_or(&image.digest);
                format!("{id}-{}", &hex[..hex.len().min(16)])
            }
            _ => id,
        }
    }
}

fn deb_id(name: &str, version: &str) -> String {
    let readable: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let hash = hex(&Sha256::digest(format!("{name}={version}")));
    format!("SPDXRef-Deb-{readable}-{}", &hash[..12])
}

fn purl(locator: String) -> ExternalRef {
    ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters, as package
/// URLs' versions and qualifier values are written.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The document, its fields in SPDX 2.3 JSON's names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileEntry>,
    relationships: Vec<Relationship>,
}

impl Document {
    fn relate(&mut self, from: &str, kind: &str, to: &str) {
        self.relationships.push(Relationship {
            spdx_element_id: from.to_string(),
            relationship_type: kind.to_string(),
            related_spdx_element: to.to_string(),
        });
    }
}

#[derive(Debug, Serialize)]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
}

impl Package {
    fn new(spdx_id: String, name: String) -> Package {
        Package {
            spdx_id,
            name,
            version_info: None,
            download_location: NOASSERTION,
            files_analyzed: false,
            package_verification_code: None,
            checksums: Vec::new(),
            external_refs: Vec::new(),
            primary_package_purpose: None,
            annotations: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VerificationCode {
    package_verification_code_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: String,
    checksum_value: String,
}

impl Checksum {
    fn new(algorithm: &str, value: &str) -> Checksum {
        Checksum {
            algorithm: algorithm.to_string(),
            checksum_value: value.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Annotation {
    annotation_date: String,
    annotation_type: &'static str,
    annotator: String,
    comment: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileEntry {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    file_name: String,
    checksums: Vec<Checksum>,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: String,
    related_spdx_element: String,
}
