//! berth's PID 1, as a library so that its logic is tested without booting.
//!
//! The boot sequence itself lands with issue #4; what is here is the part
//! that needs no privileges: supervision (restart policies and backoff).

pub mod supervise;
