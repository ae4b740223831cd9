//! berth's PID 1, as a library so that its logic is tested without booting;
//! `main.rs` is the boot sequence, in order, over these modules.
//!
//! In boot order: [`root`] (leaving the initramfs, for a tmpfs copy or,
//! with [`squashfs`], a squashfs image on a disk), [`boot`] (kernel
//! filesystems, options, hostname), [`modules`] (coldplug and `modprobe`),
//! [`bundle`] (the bundles made ready), [`events`] (the loop that runs the
//! onboot containers and supervises the services, with [`services`] and
//! [`supervise`] deciding, [`logs`] keeping their output and [`control`]
//! serving `berthctl`), and [`shutdown`] (the one way to stop).
//! Every privileged call goes through [`system::System`]: [`kernel`]
//! implements it on the real kernel, with [`runtime`] for containers, and
//! [`system::Fake`] records the calls for the tests.

// PID 1 reads what the image holds: data never panics it (issue #15).
// Tests are exempt (init/clippy.toml): a panic there is a failed assertion.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod boot;
pub mod bundle;
pub mod control;
pub mod devices;
pub mod events;
pub mod kernel;
pub mod logs;
pub mod modules;
pub mod root;
pub mod runtime;
pub mod seccomp;
pub mod services;
pub mod shutdown;
pub mod squashfs;
pub mod supervise;
pub mod sys;
pub mod system;
