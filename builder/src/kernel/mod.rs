//! The kernel: everything berth knows about kernel images and what is in
//! them.
//!
//! [`debian`] turns a Debian kernel package's files into LinuxKit's
//! kernel-image layout, for `berth pkg` (`kernel: true`). Reading a kernel
//! image during a build (its `kernel.tar`, the modules a definition asks
//! for and their index) is still done by `assemble` and `modules`, and is
//! to move here.

pub mod debian;
