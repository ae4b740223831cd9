//! `berth build`: definitions to artifacts, building the `@pkg:` images
//! they name on the way.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use archive::Clock;
use builder::build::{BuildOptions, build};
use builder::outputs::{Compression, Format};
use builder::pkg::debian::Apt;
use clap::Args;
use oci::lockfile::LockFile;

use super::{Sources, host_arch, load};

/// What `berth build` is asked for.
#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Check every image against its registry even when it is cached.
    #[arg(long)]
    pub pull: bool,
    /// Build with exactly the digests listed in this lock file (written as NAME.lock by every build).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Output format; repeat for several (tar, kernel+initrd, tar-kernel-initrd, kernel+squashfs).
    #[arg(short, long = "format", default_value = "kernel+initrd")]
    pub formats: Vec<Format>,
    /// Directory to write the artifacts to.
    #[arg(short, long = "output", default_value = ".")]
    pub output: PathBuf,
    /// Base name of the artifacts (default: the first file's name without its extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Architecture of the images to use.
    #[arg(long, default_value = host_arch(), value_parser = ["amd64", "arm64"])]
    pub arch: String,
    /// Compression of the initrd.
    #[arg(long, default_value = "gzip")]
    pub compress: Compression,
    /// YAML files, merged in order; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
}

/// Builds the definition into the requested formats and prints the
/// artifacts' paths.
pub fn run(args: BuildArgs) -> Result<()> {
    let BuildArgs {
        sources,
        pull,
        lock,
        mut formats,
        output,
        name,
        arch,
        compress,
        files,
    } = args;
    formats.sort();
    formats.dedup();
    let mut definition = load(&files)?;
    let name = name.unwrap_or_else(|| default_name(&files[0]));
    if name.is_empty() || name.contains('/') {
        bail!("--name {name:?}: a name must be non-empty and contain no '/'");
    }
    let clock = Clock::from_env()?;
    let lock = match lock {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading lock file {}", path.display()))?;
            Some(LockFile::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let store = sources.source(pull)?;
    let _in_use = store.cache.use_lock()?;
    // `@pkg:` images: built into the cache first when missing.
    let apt = Apt::new(&sources.cache_dir(), sources.offline());
    for built in builder::pkg::resolve_templates(&mut definition, &store.cache, &apt, clock)? {
        eprintln!("built {built}");
    }
    let options = BuildOptions {
        name,
        output_dir: output,
        formats,
        compression: compress,
        arch,
        clock,
        lock,
    };
    let built = build(&definition, &store, &options)?;
    for (reference, digest) in &built.lock.digests {
        eprintln!("image {reference} {digest}");
    }
    for artifact in &built.artifacts {
        println!("{}", artifact.display());
    }
    Ok(())
}

fn default_name(first: &str) -> String {
    if first == "-" {
        // LinuxKit's name for a definition read from standard input.
        return "moby".into();
    }
    let base = first.rsplit('/').next().unwrap_or(first);
    match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => base.to_string(),
    }
}
