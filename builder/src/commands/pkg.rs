//! `berth pkg`: system images from Debian packages, workspace binaries and
//! files, without Docker.

use std::path::PathBuf;

use anyhow::{Result, bail};
use archive::Clock;
use builder::pkg::debian::Apt;
use clap::Subcommand;
use oci::{Layout, signature};

use super::{Sources, registry_ref};

#[derive(Subcommand)]
pub enum PkgCommand {
    /// Build the image into the cache, tagged with the hash of its inputs.
    #[command(after_help = "Example:\n  berth pkg build images/getty")]
    Build {
        dir: PathBuf,
        /// Also push it to its registry.
        #[arg(long)]
        push: bool,
        /// Sign it with this private key (in the cache, and with --push in the registry too).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Print the reference the image gets (REPOSITORY:TAG).
    ShowTag { dir: PathBuf },
}

pub fn run(sources: &Sources, command: PkgCommand) -> Result<()> {
    let dir = match &command {
        PkgCommand::Build { dir, .. } | PkgCommand::ShowTag { dir } => dir.clone(),
    };
    let workspace = builder::pkg::workspace_of(&dir);
    let apt = Apt::new(&sources.cache_dir(), sources.offline());
    let package = builder::pkg::Package::resolve(&dir, &workspace, &apt, Clock::from_env()?)?;
    match command {
        PkgCommand::ShowTag { .. } => println!("{}", package.reference()?),
        PkgCommand::Build { push, sign, .. } => {
            let key = sign.as_deref().map(super::key::signing_key).transpose()?;
            if push && sources.offline() {
                bail!("--push needs the network, but berth is offline");
            }
            let cache = Layout::open(sources.cache_dir())?;
            let _in_use = cache.use_lock()?;
            let (reference, digest) = package.build(&cache, &apt)?;
            println!("{reference} {digest}");
            let image = registry_ref(&reference)?;
            let (remote, built) = if push {
                let remote = sources.remote()?;
                let pushed = remote.push(&cache, &reference, &image)?;
                println!("pushed {image} {pushed}");
                (Some(remote), pushed)
            } else {
                (None, digest)
            };
            if let Some(key) = key {
                // What was built and pushed, not whatever the tag names by
                // now.
                let pinned = oci::reference::RegistryRef {
                    digest: Some(built),
                    ..image.clone()
                };
                let signed = signature::sign(&cache, remote.as_ref(), &pinned, &key)?;
                println!("signed {image}@{}", signed.digest);
            }
        }
    }
    Ok(())
}
