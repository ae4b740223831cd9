//! SPDX documents that images carry as attestations, where BuildKit stores
//! them and LinuxKit reads them (Docker's attestation storage): an entry of
//! the image index annotated `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <the image's
//! manifest digest>`, a manifest whose layers are in-toto statements, each
//! annotated with its `in-toto.io/predicate-type`; an SPDX document is the
//! `predicate` of a statement of type `https://spdx.dev/Document`.
//!
//! This module finds them in an index and reads them from the cache; the
//! registry pulls them along with the image ([`crate::registry`]); what a
//! build makes of them is the builder's business.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::layout::{Layout, LayoutError, ResolvedImage};

const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const ATTESTATION_MANIFEST: &str = "attestation-manifest";
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";

/// The attestation manifests of `index` that are about the image whose
/// manifest digest is `digest`.
pub fn manifests_for(index: &ImageIndex, digest: &str) -> Vec<Descriptor> {
    index
        .manifests()
        .iter()
        .filter(|m| {
            m.annotations().as_ref().is_some_and(|a| {
                a.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST)
                    && a.get(REFERENCE_DIGEST).map(String::as_str) == Some(digest)
            })
        })
        .cloned()
        .collect()
}

/// The layers of an attestation manifest that hold SPDX documents.
pub fn spdx_layers(manifest: &ImageManifest) -> Vec<Descriptor> {
    manifest
        .layers()
        .iter()
        .filter(|l| {
            l.annotations()
                .as_ref()
                .and_then(|a| a.get(PREDICATE_TYPE))
                .is_some_and(|t| t == SPDX_DOCUMENT)
        })
        .cloned()
        .collect()
}

/// The predicate of an in-toto statement, as JSON.
pub fn predicate(statement: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(statement).map_err(|e| format!("in-toto statement: {e}"))?;
    let predicate = value
        .get("predicate")
        .ok_or("in-toto statement without a predicate")?;
    serde_json::to_vec(predicate).map_err(|e| e.to_string())
}

impl Layout {
    /// The SPDX documents attested for `image` that the cache holds, in the
    /// order of the index it was chosen from; none for an image resolved
    /// without an index.
    pub fn spdx_documents(&self, image: &ResolvedImage) -> Result<Vec<Vec<u8>>, LayoutError> {
        let name = &image.reference;
        let invalid = |what: &str, message: String| LayoutError::Invalid {
            reference: name.clone(),
            what: what.into(),
            message,
        };
        let Some(index) = &image.index else {
            return Ok(Vec::new());
        };
        let bytes = self.read_small_blob(name, index)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| invalid("image index", e.to_string()))?;
        let mut documents = Vec::new();
        for attestation in manifests_for(&index, &image.digest) {
            let digest = attestation.digest().to_string();
            // Pulled with the image; an older cache may lack it.
            if !self.has_blob(&digest) {
                continue;
            }
            let bytes = self.read_small_blob(name, &digest)?;
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| invalid("attestation manifest", e.to_string()))?;
            for layer in spdx_layers(&manifest) {
                let statement = self.read_small_blob(name, layer.digest().as_ref())?;
                documents.push(predicate(&statement).map_err(|e| invalid("attestation", e))?);
            }
        }
        Ok(documents)
    }
}
