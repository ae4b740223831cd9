//! berth's builder: LinuxKit-style YAML definitions to bootable artifacts.
//!
//! One module per stage of the pipeline (see ARCHITECTURE.md): [`spec`]
//! parses and validates, [`plan`] pins every image (through the `oci` crate),
//! [`flatten`] turns layers into filesystem entries, [`bundle`] writes OCI
//! runtime bundles, [`assemble`] makes the whole tree, and [`outputs`] writes
//! it in each format. Beside the pipeline, [`pkg`] makes berth's own system
//! images from Debian packages (a kernel laid out by [`kernel`]),
//! [`trust`] is the definition's policy of which images must be signed by
//! which keys, [`signed_build`] lists a build's digests, signed, and checks
//! them, and [`tools`] is the one place that runs external programs.

pub mod assemble;
pub mod build;
pub mod bundle;
pub mod flatten;
pub mod kernel;
pub mod outputs;
pub mod pkg;
pub mod plan;
pub mod sbom;
pub mod signed_build;
pub mod spec;
pub mod tools;
mod tree;
pub mod trust;
