//! The kernel: everything berth knows about kernel images and what is in
//! them.
//!
//! [`modules`] knows kernel modules (names, `.modinfo`, the default set for
//! virtual machines, the catalog a choice is made from); [`image`] turns a
//! kernel image into `boot/` and `lib/modules/` during a build; [`debian`]
//! turns a Debian kernel package's files into LinuxKit's kernel-image
//! layout, for `berth pkg` (`kernel: true`).

pub mod debian;
mod image;
pub mod modules;

pub use image::KernelError;
pub(crate) use image::cut_index;
pub(crate) use image::write_kernel;
