//! The kernel: choosing its modules and writing its image's part of the
//! tree.
//!
//! [`modules`] knows kernel modules (names, `.modinfo`, the default set for
//! virtual machines, the catalog a choice is made from); [`image`] turns a
//! kernel image into `boot/` and `lib/modules/`.

mod image;
pub mod modules;

pub use image::KernelError;
pub(crate) use image::write_kernel;
