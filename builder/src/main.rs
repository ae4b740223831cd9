//! The `berth` command: a thin shell over the builder library. The command
//! line is declared here; each subcommand is a file of `commands/`.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::Sources;
use commands::build::BuildArgs;
use commands::cache::CacheCommand;
use commands::key::KeyCommand;
use commands::pkg::PkgCommand;
use commands::pull::PullArgs;
use commands::push::PushArgs;
use commands::run::RunCommand;
use commands::serve::ServeArgs;
use commands::sign::{SignArgs, VerifyArgs};
use commands::verify_build::VerifyBuildArgs;

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
  berth build host.yml -o out --push registry.example/builds/host:1
  berth push out registry.example/builds/host:1      # a finished build, as one OCI artifact
  berth pull registry.example/builds/host:1 -o host  # and back, verified
  berth serve out --addr 0.0.0.0:8080                  # HTTP and iPXE boot scripts (docs/pxe.md)
  berth key generate -o release                        # release.key (0600) and release.pub
  berth sign registry.example/tools/sshd:1 --key release.key
  berth verify registry.example/tools/sshd:1 --key release.pub
  berth build host.yml -o out --sign-key release.key   # and out/host.sha256, out/host.sha256.sig
  berth verify-build out --key release.pub

Exit status: 0 on success, 1 when the definition or the build fails, 2 on a usage error.
Images are taken from the cache, and pulled into it from their registry when missing;
BERTH_OFFLINE=1 (or --offline) never touches the network.";

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
    Build(BuildArgs),
    /// Push a finished build (its files in DIR) to a registry as one OCI artifact.
    #[command(
        after_help = "Example:\n  berth push out registry.example/builds/host:1 --name host\n\nPrints REF@sha256:DIGEST. See docs/distribution.md for the artifact's format."
    )]
    Push(PushArgs),
    /// Fetch a build pushed as an OCI artifact into DIR, verified.
    #[command(after_help = "Example:\n  berth pull registry.example/builds/host:1 -o host")]
    Pull(PullArgs),
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
    /// Serve build artifacts over HTTP, with iPXE boot scripts for PXE (docs/pxe.md).
    #[command(
        after_help = "Examples:\n  berth serve out\n  berth serve out --addr 127.0.0.1:8080 --name host"
    )]
    Serve(ServeArgs),
    /// Make keys for signing images.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Sign an image's digest the cosign way, in its registry and the cache.
    #[command(
        after_help = "Example:\n  berth sign registry.example/tools/sshd:1 --key release.key\n\nThe signature is stored as cosign stores it: tag sha256-HEX.sig in the image's repository."
    )]
    Sign(SignArgs),
    /// Check that an image is signed by one of the keys (offline: from the cache).
    #[command(
        after_help = "Example:\n  berth verify registry.example/tools/sshd:1 --key release.pub --key old.pub"
    )]
    Verify(VerifyArgs),
    /// Check a signed build: the signature of NAME.sha256, then every file it lists.
    #[command(
        name = "verify-build",
        after_help = "Example:\n  berth verify-build out --key release.pub --name host\n\nNAME.sha256 is also what `sha256sum -c` reads (docs/signing.md)."
    )]
    VerifyBuild(VerifyBuildArgs),
    /// Boot a build or an artifact in a virtual machine.
    Run {
        #[command(subcommand)]
        command: RunCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("berth: {}", oci::chain::render(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let done = match cli.command {
        Command::Validate { files } => commands::validate::run(&files),
        Command::Build(args) => commands::build::run(args),
        Command::Push(args) => commands::push::run(args),
        Command::Pull(args) => commands::pull::run(args),
        Command::Cache { sources, command } => commands::cache::run(&sources, command),
        Command::Pkg { sources, command } => commands::pkg::run(&sources, command),
        Command::Serve(args) => commands::serve::run(args),
        Command::Key { command } => commands::key::run(command),
        Command::Sign(args) => commands::sign::sign(args),
        Command::Verify(args) => commands::sign::verify(args),
        Command::VerifyBuild(args) => commands::verify_build::run(args),
        Command::Run { command } => return commands::run::run(command),
    };
    done.map(|()| ExitCode::SUCCESS)
}
