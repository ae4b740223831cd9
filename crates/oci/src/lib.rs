//! OCI plumbing: digests, image references, the image layout on disk
//! (berth's cache), registries, lock files, and the source a build reads
//! images from.
//!
//! The modules depend on each other in one direction: [`digest`] and
//! [`reference`] at the bottom, then [`layout`] (reads and writes the cache),
//! [`registry`] (pulls into and pushes from a layout; the only network
//! code), then [`source`] (the cache, then the registry) and [`artifact`]
//! (a build's files as one OCI artifact, pushed and pulled through the
//! registry and the cache) and [`signature`] (cosign's image signatures,
//! in the registry and the cache, made and checked with [`keys`]).
//! [`lockfile`] stands alone, and [`chain`] writes any error with its
//! causes. This crate knows nothing of definitions or of
//! what a build does with an image.

pub mod artifact;
pub mod attestation;
pub mod chain;
pub mod digest;
pub mod keys;
pub mod layout;
pub mod lockfile;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod source;

pub use layout::{Layout, LayoutError, Named, ResolvedImage};
pub use reference::{Reference, RegistryRef};
pub use source::{CacheThenRegistry, ImageSource, SourceError};
