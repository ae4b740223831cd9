//! `berth build`: definitions to artifacts, building the `@pkg:` images
//! they name on the way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use archive::Clock;
use builder::build::{BuildOptions, build};
use builder::outputs::{Compression, Format};
use builder::pkg::debian::Apt;
use builder::spec::Located;
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
    /// Output format; repeat for several: kernel+initrd, tar, tar-kernel-initrd, kernel+squashfs,
    /// uki, iso, raw, qcow2, vhd, dynamic-vhd, vmdk, gcp (and LinuxKit's names: iso-bios, iso-efi,
    /// iso-efi-initrd, kernel+iso, raw-bios, raw-efi, aws, qcow2-bios, qcow2-efi).
    #[arg(short, long = "format", default_value = "kernel+initrd")]
    pub formats: Vec<Format>,
    /// Disk size for raw, qcow2, vhd, vmdk and gcp: a whole number of MiB (bytes, or with
    /// K, M, G; default: the smallest that fits, rounded up to 1 MiB).
    #[arg(long, value_parser = builder::outputs::parse_size)]
    pub size: Option<u64>,
    /// Volume label of the ISO: 1 to 32 of A-Z, 0-9 and _ (default BERTH).
    #[arg(long, value_parser = iso_label)]
    pub label: Option<String>,
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
    /// Push the artifacts, once written, to this registry reference (REGISTRY/REPOSITORY:TAG) as one OCI artifact.
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,
    /// Sign the build with this private key: NAME.sha256 (every artifact's digest) and
    /// NAME.sha256.sig beside the artifacts, and the pushed artifact the cosign way.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
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
        size,
        label,
        push,
        sign_key,
    } = args;
    // A key that cannot be read stops the build before anything is made.
    let sign_key = sign_key
        .map(|path| super::key::signing_key(&path))
        .transpose()?;
    let push = push
        .map(|reference| super::push::destination(&reference, &sources))
        .transpose()?;
    formats.sort();
    formats.dedup();
    if let Some(size) = size.filter(|size| size % (1 << 20) != 0) {
        bail!(
            "--size {size}: a disk is a whole number of MiB (as VHD requires); {} would do",
            size.next_multiple_of(1 << 20)
        );
    }
    if formats.contains(&Format::Vhd) && formats.contains(&Format::DynamicVhd) {
        bail!("-f vhd and -f dynamic-vhd both write NAME.vhd: build them one at a time");
    }
    if formats.contains(&Format::KernelInitrd) && formats.contains(&Format::KernelSquashfs) {
        bail!(
            "-f kernel+initrd and -f kernel+squashfs both write NAME-initrd.img and NAME-cmdline: build them one at a time"
        );
    }
    let mut definition = load(&files)?;
    if definition.boot.is_none() && formats.iter().any(|f| f.needs_boot_files()) {
        definition.boot = Some(default_boot());
    }
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
        label,
        size,
        sign_key,
    };
    let built = build(&definition, &store, &options)?;
    for (reference, digest) in &built.lock.digests {
        eprintln!("image {reference} {digest}");
    }
    for artifact in &built.artifacts {
        println!("{}", artifact.display());
    }
    if let Some(destination) = push {
        let key = options.sign_key.as_ref();
        super::push::push(&sources, &built.artifacts, &destination, key)?;
    }
    Ok(())
}

fn iso_label(text: &str) -> Result<String, String> {
    media::iso::check_label(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
}

/// berth's own boot image, `images/boot` of berth's source tree
/// (`BERTH_IMAGES` names another directory of berth's images).
fn default_boot() -> builder::spec::Boot {
    let images = std::env::var_os("BERTH_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../images"));
    builder::spec::Boot {
        image: Located::synthetic(format!("@pkg:{}", images.join("boot").display())),
    }
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
