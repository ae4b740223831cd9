//! `berth serve DIR`: the artifacts of a build directory over HTTP, with
//! the iPXE boot scripts generated from them; the server is `crates/serve`.
//! `berth serve --from REF`: the same for a build pushed as an OCI
//! artifact, pulled into the cache once (verified, through
//! `oci::artifact`) and served from the cache's blobs, so that a site's
//! server keeps no state of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use oci::{Layout, Reference, artifact};

use super::Sources;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// The build directory: artifacts at its top level, per-machine overrides under machines/MAC/.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub dir: Option<PathBuf>,
    /// Serve the build pushed as an OCI artifact at REF (see `berth push`) instead of DIR.
    #[arg(long, value_name = "REF")]
    pub from: Option<String>,
    /// Listen on this address (HOST:PORT; port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub addr: String,
    /// The build /boot.ipxe boots when DIR holds several (default: the only one).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let options = serve::Options {
        build: args.name,
        ..serve::Options::default()
    };
    // Held while serving from the cache: `berth cache clean` leaves the
    // blobs alone.
    let mut _in_use = None;
    let (served, what) = match (&args.dir, &args.from) {
        (Some(dir), None) => (serve::Served::from_dir(dir)?, dir.display().to_string()),
        (None, Some(from)) => {
            let Reference::Registry(reference) = Reference::parse(from)? else {
                bail!("--from {from}: not a reference to a registry");
            };
            let cache = Layout::open(args.sources.cache_dir())?;
            _in_use = Some(cache.use_lock()?);
            let remote = match args.sources.offline() {
                true => None,
                false => Some(args.sources.remote()?),
            };
            let files = artifact::cached_artifact(&cache, remote.as_ref(), &reference)?;
            let files: BTreeMap<String, PathBuf> = files.into_iter().collect();
            let what = format!("{from} ({} files, from the cache)", files.len());
            (serve::Served::from_files(files), what)
        }
        _ => bail!("give a build directory or --from REF"),
    };
    let server = serve::Server::bind(&args.addr, served, options)?;
    let address = server.local_addr()?;
    eprintln!("berth serve: serving {what} on http://{address}/ (boot script: /boot.ipxe)");
    server.run()?;
    Ok(())
}
