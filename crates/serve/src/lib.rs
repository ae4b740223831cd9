//! `berth serve`: the artifacts of a build directory over HTTP/1.1, and the
//! iPXE boot scripts generated from them.
//!
//! It owns three things: what is served ([`Served`], a set of URL names each
//! naming one file, and nothing outside it), the HTTP server ([`Server`]: a
//! thread per connection, keep-alive, GET and HEAD, byte ranges, bodies sent
//! with `sendfile`, one access-log line per request) and the boot scripts
//! (`ipxe`: `/boot.ipxe` and one script per MAC address, generated from the
//! artifact names berth writes and the per-machine overrides under
//! `machines/`, see docs/pxe.md). It leaves to others where the files come
//! from (a build directory, or later the blobs of an OCI artifact) and the
//! command line; it depends on no other workspace crate.

mod http;
mod ipxe;
mod served;
mod server;

pub use ipxe::{Build, builds, normalise_mac};
pub use served::{MACHINES, Served};
pub use server::{Options, Server};

use std::io;
use std::path::PathBuf;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read directory {}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("no build {name} to boot in what is served (builds: {available})")]
    NoSuchBuild { name: String, available: String },
}
