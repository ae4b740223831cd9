//! berth's builder: LinuxKit-style YAML definitions to bootable artifacts.
//!
//! One module per stage of the pipeline (see ARCHITECTURE.md): [`spec`]
//! parses and validates, [`reference`] names images, [`store`] holds them,
//! [`flatten`] turns layers into filesystem entries, [`bundle`] writes OCI
//! runtime bundles, [`assemble`] makes the whole tree, and [`outputs`] writes
//! it in each format.

pub mod assemble;
pub mod build;
pub mod bundle;
pub mod cache;
pub mod entry;
pub mod flatten;
pub mod lock;
pub mod modules;
pub mod outputs;
pub mod pkg;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod store;
