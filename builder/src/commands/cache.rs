//! `berth cache`: list, remove, clean, verify, pull, push, export and
//! import the images of the cache; a pull brings the image's cosign
//! signatures along, for offline verification, and a push takes them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use oci::{Layout, Reference, signature};

use super::{Sources, host_arch};

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List the cached images: name and digest.
    Ls,
    /// Forget an image's name (its blobs go with the next `clean`).
    Rm { reference: String },
    /// Delete blobs that no cached image uses.
    Clean,
    /// Check every blob against its digest.
    Verify,
    /// Push a cached image to a registry, under its own name or DEST, with its signatures.
    Push {
        reference: String,
        destination: Option<String>,
    },
    /// Write a cached image as an OCI archive (a tar of an OCI layout).
    Export {
        reference: String,
        #[arg(short, long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Add the images of an OCI archive to the cache.
    Import { archive: PathBuf },
    /// Pull an image into the cache (the latest one, even if cached), with its signatures.
    Pull {
        reference: String,
        #[arg(long, default_value = host_arch(), value_parser = ["amd64", "arm64"])]
        arch: String,
    },
}

pub fn run(sources: &Sources, command: CacheCommand) -> Result<()> {
    let cache = Layout::open(sources.cache_dir())?;
    let full = |reference: &str| -> Result<String> {
        match Reference::parse(reference)? {
            Reference::Registry(r) => Ok(r.to_string()),
            Reference::Package(_) => bail!("{reference}: not an image in a registry"),
        }
    };
    match command {
        CacheCommand::Ls => {
            for named in cache.list()? {
                println!("{} {}", named.name, named.digest);
            }
        }
        CacheCommand::Rm { reference } => cache.untag(&full(&reference)?)?,
        CacheCommand::Clean => {
            let (files, bytes) = cache.clean()?;
            println!("removed {files} blobs, {bytes} bytes");
        }
        CacheCommand::Verify => {
            let bad = cache.verify()?;
            if !bad.is_empty() {
                bail!("blobs that do not match their digest: {}", bad.join(", "));
            }
            println!("every blob matches its digest");
        }
        CacheCommand::Push {
            reference,
            destination,
        } => {
            if sources.offline() {
                bail!("cache push needs the network, but berth is offline");
            }
            let name = full(&reference)?;
            let destination = destination.as_deref().unwrap_or(&reference);
            let Reference::Registry(destination) = Reference::parse(destination)? else {
                bail!("{destination}: not an image in a registry");
            };
            let remote = sources.remote()?;
            let digest = remote.push(&cache, &name, &destination)?;
            println!("{destination} {digest}");
            let image = super::registry_ref(&name)?;
            if let Some(at) = signature::push(&cache, &remote, &image, &digest, &destination)? {
                eprintln!("signatures {at}");
            }
        }
        CacheCommand::Export { reference, output } => {
            let dir = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let temp = tempfile::Builder::new()
                .prefix(".berth-")
                .tempfile_in(&dir)
                .with_context(|| format!("writing {}", output.display()))?;
            cache.export(&full(&reference)?, std::io::BufWriter::new(temp.as_file()))?;
            temp.persist(&output)
                .with_context(|| format!("writing {}", output.display()))?;
        }
        CacheCommand::Import { archive } => {
            let file = std::fs::File::open(&archive)
                .with_context(|| format!("reading {}", archive.display()))?;
            let _in_use = cache.use_lock()?;
            for name in cache
                .import(std::io::BufReader::new(file))
                .with_context(|| format!("importing {}", archive.display()))?
            {
                println!("{name}");
            }
        }
        CacheCommand::Pull { reference, arch } => {
            if sources.offline() {
                bail!("cache pull needs the network, but berth is offline");
            }
            let Reference::Registry(parsed) = Reference::parse(&reference)? else {
                bail!("{reference}: not an image in a registry");
            };
            let _in_use = cache.use_lock()?;
            let remote = sources.remote()?;
            let digest = remote.pull(&cache, &parsed, &arch)?;
            println!("{parsed} {digest}");
            // The image is in the cache by now: signatures that cannot be
            // brought along are said, not fatal (a build with a trust
            // policy asks again).
            match signature::pull(&cache, &remote, &parsed, &digest) {
                Ok(Some(signatures)) => eprintln!("signatures {signatures}"),
                Ok(None) => {}
                Err(e) => eprintln!(
                    "berth: warning: {parsed}: its signatures were not brought along: {}",
                    oci::chain::render(&e)
                ),
            }
        }
    }
    Ok(())
}
