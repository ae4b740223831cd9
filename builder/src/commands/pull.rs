//! `berth pull REF -o DIR`: a build pushed as an OCI artifact, fetched
//! back into the cache and written out, verified (`oci::artifact`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use oci::{Layout, Reference, artifact};

use super::Sources;

#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Directory to write the files to (made when missing).
    #[arg(short, long = "output", default_value = ".")]
    pub output: PathBuf,
    /// The artifact: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST.
    pub reference: String,
}

/// Fetches the artifact and prints the paths of the files written.
pub fn run(args: PullArgs) -> Result<()> {
    let Reference::Registry(reference) = Reference::parse(&args.reference)? else {
        bail!("{}: not a reference to a registry", args.reference);
    };
    let cache = Layout::open(args.sources.cache_dir())?;
    let _in_use = cache.use_lock()?;
    let remote = match args.sources.offline() {
        true => None,
        false => Some(args.sources.remote()?),
    };
    let (pulled, written) = artifact::pull(&cache, remote.as_ref(), &reference, &args.output)?;
    eprintln!("artifact {} {}", pulled.reference, pulled.digest);
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
