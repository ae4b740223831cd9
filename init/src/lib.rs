//! berth's PID 1, as a library so that its logic is tested without booting.
//!
//! The boot sequence itself lands with issue #4; what is here is the part
//! that needs no privileges: supervision (restart policies and backoff),
//! the shutdown sequence, and the seam ([`system::System`]) through which
//! every privileged call will go.

pub mod boot;
pub mod bundle;
pub mod control;
pub mod kernel;
pub mod logs;
pub mod modules;
pub mod root;
pub mod runtime;
pub mod services;
pub mod shutdown;
pub mod supervise;
pub mod system;
