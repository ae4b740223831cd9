//! `berth push DIR REF`: a finished build's files as one OCI artifact
//! (`oci::artifact`, `docs/distribution.md`); `berth build --push` comes
//! through here too, and with `--sign-key` the artifact is signed the
//! cosign way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use archive::Clock;
use builder::outputs::{build_files, build_of};
use clap::Args;
use oci::artifact::{self, ArtifactFile, GENERIC_TYPE};
use oci::keys::SigningKey;
use oci::{Layout, Reference, RegistryRef, signature};

use super::Sources;

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// The build to push (default: the only build in DIR).
    #[arg(long)]
    pub name: Option<String>,
    /// The directory the build was written to.
    pub dir: PathBuf,
    /// Where to push it: REGISTRY/REPOSITORY:TAG.
    pub reference: String,
    /// Sign the artifact's manifest digest with this private key, the cosign way.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
}

pub fn run(args: PushArgs) -> Result<()> {
    let destination = destination(&args.reference, &args.sources)?;
    let key = args
        .sign_key
        .map(|path| super::key::signing_key(&path))
        .transpose()?;
    let files = files_of_build(&args.dir, args.name.as_deref())?;
    push(&args.sources, &files, &destination, key.as_ref())
}

/// `REF` as a registry reference to push to; an error when offline.
pub fn destination(reference: &str, sources: &Sources) -> Result<RegistryRef> {
    let Reference::Registry(destination) = Reference::parse(reference)? else {
        bail!("{reference}: not a reference to a registry");
    };
    if sources.offline() {
        bail!("pushing {destination} needs the network, but berth is offline");
    }
    Ok(destination)
}

/// Pushes `files` as one artifact and prints `REF@DIGEST`; with `key`,
/// signs that digest the cosign way (`oci::signature`, in the registry and
/// the cache).
pub fn push(
    sources: &Sources,
    files: &[PathBuf],
    destination: &RegistryRef,
    key: Option<&SigningKey>,
) -> Result<()> {
    let files: Vec<ArtifactFile> = files.iter().map(|path| artifact_file(path)).collect();
    let created = Clock::from_env()?.epoch();
    let remote = sources.remote()?;
    let digest = artifact::push(&remote, &files, created, destination)?;
    let pushed = RegistryRef {
        digest: Some(digest),
        ..destination.clone()
    };
    println!("{pushed}");
    if let Some(key) = key {
        let cache = Layout::open(sources.cache_dir())?;
        let _in_use = cache.use_lock()?;
        let signed = signature::sign(&cache, Some(&remote), &pushed, key)?;
        eprintln!("signed {pushed} ({})", signed.reference);
    }
    Ok(())
}

fn artifact_file(path: &Path) -> ArtifactFile {
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let media_type = build_of(&title).map_or(GENERIC_TYPE, |(_, media_type)| media_type);
    ArtifactFile {
        media_type: media_type.to_string(),
        path: path.to_path_buf(),
        title,
    }
}

/// The files of the build `name` in `dir`, or of the only build in `dir`
/// without a name; other files of `dir` (notes, other builds, names that are
/// not UTF-8) are never pushed.
fn files_of_build(dir: &Path, name: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        // A name that is not UTF-8 belongs to no build: skipped.
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if regular && !file_name.starts_with('.') {
            files.push(file_name);
        }
    }
    files.sort();
    let name = match name {
        Some(name) => name.to_string(),
        None => {
            let mut builds: Vec<&str> = files
                .iter()
                .filter_map(|file| build_of(file).map(|(name, _)| name))
                .collect();
            builds.sort();
            builds.dedup();
            match builds.len() {
                0 => bail!(
                    "{} holds no build (no NAME-kernel, NAME.iso, NAME.raw, NAME.lock, ... file)",
                    dir.display()
                ),
                1 => builds[0].to_string(),
                _ => bail!(
                    "{} holds several builds ({}): choose one with --name",
                    dir.display(),
                    builds.join(", ")
                ),
            }
        }
    };
    let wanted: Vec<String> = build_files(&name).into_iter().map(|(n, _)| n).collect();
    files.retain(|file| wanted.contains(file));
    if files.is_empty() {
        bail!("{} holds no build named {name}", dir.display());
    }
    Ok(files.into_iter().map(|file| dir.join(file)).collect())
}
