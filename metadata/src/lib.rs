//! berth's metadata agent, run as an onboot container in the host's
//! network namespace (see `images/metadata`). It finds the instance's data
//! source, writes what it found into `/run/config` with LinuxKit's names,
//! and applies a documented subset of `#cloud-config` (docs/cloud-config.md).
//!
//! Like init, it shares only the on-image contract with the rest of berth.

pub mod cloudconfig;
pub mod etc;
pub mod files;
pub mod found;
pub mod http;
pub mod label;
pub mod network;
pub mod run_config;
pub mod sources;
pub mod state;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod test_support;
pub mod userdata;
pub mod yaml;
