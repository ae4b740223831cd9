//! The `berth` command: a thin shell over the builder library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use builder::build::{BuildOptions, build};
use builder::outputs::{Compression, Format};
use builder::spec::{self, Definition, Origin};
use builder::store::{LocalLayout, default_cache};
use clap::{Parser, Subcommand};

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
  berth build examples/hello.yml                       # hello-kernel, hello-initrd.img, hello-cmdline
  berth build -f tar -f kernel+initrd -o out base.yml extra.yml
  cat image.yml | berth build --name image -

Exit status: 0 on success, 1 when the definition or the build fails, 2 on a usage error.";

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
        /// Output format; repeat for several (tar, kernel+initrd, tar-kernel-initrd).
        #[arg(short, long = "format", default_value = "kernel+initrd")]
        formats: Vec<Format>,
        /// Directory to write the artifacts to.
        #[arg(short, long = "output", default_value = ".")]
        output: PathBuf,
        /// Base name of the artifacts (default: the first file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        /// The image cache, an OCI image layout (default: $BERTH_CACHE, else ~/.cache/berth).
        #[arg(long)]
        cache: Option<PathBuf>,
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
            eprintln!("berth: {error:#}");
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
        Command::Build {
            mut formats,
            output,
            name,
            cache,
            arch,
            compress,
            files,
        } => {
            formats.sort();
            formats.dedup();
            let definition = load(&files)?;
            let name = name.unwrap_or_else(|| default_name(&files[0]));
            if name.is_empty() || name.contains('/') {
                bail!("--name {name:?}: a name must be non-empty and contain no '/'");
            }
            let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.is_empty() => Some(v.parse::<u64>().with_context(|| {
                    format!("SOURCE_DATE_EPOCH {v:?} is not a number of seconds")
                })?),
                _ => None,
            };
            let store = LocalLayout::new(cache.unwrap_or_else(default_cache));
            let options = BuildOptions {
                name,
                output_dir: output,
                formats,
                compression: compress,
                arch,
                assemble: builder::assemble::Options { source_date_epoch },
            };
            let built = build(&definition, &store, &options)?;
            for (reference, digest) in &built.images {
                eprintln!("image {reference} {digest}");
            }
            for artifact in &built.artifacts {
                println!("{}", artifact.display());
            }
            Ok(())
        }
    }
}
