//! The entry stream and the archive formats it is written in.
//!
//! Every producer in berth (image layers, bundles, the kernel, `files:`)
//! emits [`entry::Entry`] values into a [`entry::Sink`]; the sinks here write
//! them as tar ([`tar`]) or cpio newc ([`cpio`]), through a compressor
//! ([`compress`]) when asked. [`clock::Clock`] is the one reading of
//! `SOURCE_DATE_EPOCH`, the time policy every producer follows.
//!
//! This crate knows nothing of images, registries or definitions: it is
//! used by the OCI cache (export) and by the builder alike, and depends on
//! neither.

pub mod clock;
pub mod compress;
pub mod cpio;
pub mod entry;
pub mod tar;

pub use clock::Clock;
pub use entry::{Entry, Kind, Sink};
