//! The `berth` command: a thin shell over the builder library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use archive::Clock;
use builder::build::{BuildOptions, build};
use builder::outputs::{Compression, Format};
use builder::pkg::debian::Apt;
use builder::spec::{self, Definition, Origin};
use clap::{Args, Parser, Subcommand};
use oci::CacheThenRegistry;
use oci::Layout;
use oci::Reference;
use oci::layout::default_cache;
use oci::lockfile::LockFile;
use oci::registry::{RegistryOptions, Remote};

/// Build minimal, immutable Linux hosts that run containers, from
/// LinuxKit-style YAML files.
#[derive(Parser)]
#[command(name = "berth", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  berth validate linuxkit.yml
  berth build examples/minimal.yml                     # minimal-kernel, minimal-initrd.img, minimal-cmdline
  berth build -f tar -f kernel+initrd -o out base.yml extra.yml
  cat image.yml | berth build --name image -

Exit status: 0 on success, 1 when the definition or the build fails, 2 on a usage error.
Images are taken from the cache, and pulled into it from their registry when missing;
BERTH_OFFLINE=1 (or --offline) never touches the network.";

/// Where images come from and how registries are reached.
#[derive(Args)]
struct Sources {
    /// The image cache, an OCI image layout (default: $BERTH_CACHE, else ~/.cache/berth).
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    /// Use only the cache, never the network (also: BERTH_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    /// Reach this registry (HOST or HOST:PORT) over plain HTTP; loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "REGISTRY", global = true)]
    insecure: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, besides the system's.
    #[arg(long = "ca-cert", value_name = "FILE", global = true)]
    ca_certificates: Vec<PathBuf>,
}

impl Sources {
    fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(default_cache)
    }

    fn offline(&self) -> bool {
        self.offline || std::env::var("BERTH_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
    }

    fn remote(&self) -> Result<Remote> {
        Ok(Remote::new(RegistryOptions {
            insecure: self.insecure.clone(),
            ca_certificates: self.ca_certificates.clone(),
            read_timeout: std::env::var("BERTH_READ_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(std::time::Duration::from_secs),
        })?)
    }

    /// The image source of a build: the cache, then (unless offline) the registry.
    fn source(&self, pull: bool) -> Result<CacheThenRegistry> {
        let cache = Layout::open(self.cache_dir())?;
        let remote = if self.offline() {
            None
        } else {
            Some(self.remote()?)
        };
        if pull && remote.is_none() {
            bail!("--pull needs the network, but berth is offline");
        }
        Ok(CacheThenRegistry {
            cache,
            remote,
            pull,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check definitions without building anything.
    #[command(after_help = "Example:\n  berth validate base.yml overlay.yml")]
    Validate {
        /// YAML files, merged in order; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Build a definition into bootable artifacts.
    #[command(after_help = EXAMPLES)]
    Build {
        #[command(flatten)]
        sources: Sources,
        /// Check every image against its registry even when it is cached.
        #[arg(long)]
        pull: bool,
        /// Build with exactly the digests listed in this lock file (written as NAME.lock by every build).
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Output format; repeat for several (tar, kernel+initrd, tar-kernel-initrd).
        #[arg(short, long = "format", default_value = "kernel+initrd")]
        formats: Vec<Format>,
        /// Directory to write the artifacts to.
        #[arg(short, long = "output", default_value = ".")]
        output: PathBuf,
        /// Base name of the artifacts (default: the first file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        /// Architecture of the images to use.
        #[arg(long, default_value = host_arch(), value_parser = ["amd64", "arm64"])]
        arch: String,
        /// Compression of the initrd.
        #[arg(long, default_value = "gzip")]
        compress: Compression,
        /// YAML files, merged in order; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Look after the image cache.
    Cache {
        #[command(flatten)]
        sources: Sources,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Build system images without Docker (DIR/build.yml).
    Pkg {
        #[command(flatten)]
        sources: Sources,
        #[command(subcommand)]
        command: PkgCommand,
    },
}

#[derive(Subcommand)]
enum PkgCommand {
    /// Build the image into the cache, tagged with the hash of its inputs.
    #[command(after_help = "Example:\n  berth pkg build images/getty")]
    Build {
        dir: PathBuf,
        /// Also push it to its registry.
        #[arg(long)]
        push: bool,
    },
    /// Print the reference the image gets (REPOSITORY:TAG).
    ShowTag { dir: PathBuf },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the cached images: name and digest.
    Ls,
    /// Forget an image's name (its blobs go with the next `clean`).
    Rm { reference: String },
    /// Delete blobs that no cached image uses.
    Clean,
    /// Check every blob against its digest.
    Verify,
    /// Push a cached image to a registry, under its own name or DEST.
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
    /// Pull an image into the cache (the latest one, even if cached).
    Pull {
        reference: String,
        #[arg(long, default_value = host_arch(), value_parser = ["amd64", "arm64"])]
        arch: String,
    },
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("berth: {}", oci::chain::render(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Reads, parses, merges and validates the definition files.
fn load(files: &[String]) -> Result<Definition> {
    let mut definition = Definition::default();
    let mut problems = Vec::new();
    for file in files {
        let (origin, text): (Origin, String) = if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the definition from standard input")?;
            ("<stdin>".into(), text)
        } else {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            (file.as_str().into(), text)
        };
        match spec::parse(&text, &origin) {
            Ok(parsed) => definition.merge(parsed),
            Err(e) => problems.extend(e.problems),
        }
    }
    if problems.is_empty()
        && let Err(e) = spec::validate(&definition)
    {
        problems.extend(e.problems);
    }
    if !problems.is_empty() {
        bail!(spec::SpecError { problems });
    }
    Ok(definition)
}

fn pkg_command(sources: &Sources, command: PkgCommand) -> Result<()> {
    let dir = match &command {
        PkgCommand::Build { dir, .. } | PkgCommand::ShowTag { dir } => dir.clone(),
    };
    let workspace = builder::pkg::workspace_of(&dir);
    let apt = Apt::new(&sources.cache_dir(), sources.offline());
    let package = builder::pkg::Package::resolve(&dir, &workspace, &apt, Clock::from_env()?)?;
    match command {
        PkgCommand::ShowTag { .. } => println!("{}", package.reference()?),
        PkgCommand::Build { push, .. } => {
            let cache = Layout::open(sources.cache_dir())?;
            let _in_use = cache.use_lock()?;
            let (reference, digest) = package.build(&cache, &apt)?;
            println!("{reference} {digest}");
            if push {
                if sources.offline() {
                    bail!("--push needs the network, but berth is offline");
                }
                let Reference::Registry(destination) = Reference::parse(&reference)? else {
                    bail!("{reference}: not an image in a registry");
                };
                let pushed = sources.remote()?.push(&cache, &reference, &destination)?;
                println!("pushed {destination} {pushed}");
            }
        }
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Validate { files } => {
            load(&files)?;
            println!("{}: valid", files.join(", "));
            Ok(())
        }
        Command::Cache { sources, command } => cache_command(&sources, command),
        Command::Pkg { sources, command } => pkg_command(&sources, command),
        Command::Build {
            sources,
            pull,
            lock,
            mut formats,
            output,
            name,
            arch,
            compress,
            files,
        } => {
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
            for built in
                builder::pkg::resolve_templates(&mut definition, &store.cache, &apt, clock)?
            {
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
    }
}

fn cache_command(sources: &Sources, command: CacheCommand) -> Result<()> {
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
            let digest = sources.remote()?.push(&cache, &name, &destination)?;
            println!("{destination} {digest}");
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
            let digest = sources.remote()?.pull(&cache, &parsed, &arch)?;
            println!("{parsed} {digest}");
        }
    }
    Ok(())
}
