//! `berth verify-build DIR --key PUB`: a signed build's `NAME.sha256`,
//! its signature and every file it lists (`builder::signed_build`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use builder::signed_build;
use clap::Args;
use oci::keys;

#[derive(Args)]
pub struct VerifyBuildArgs {
    /// The directory the build was written to.
    pub dir: PathBuf,
    /// A public key (SPKI PEM); given several times, any one of them will do.
    #[arg(long, value_name = "PUB", required = true)]
    pub key: Vec<PathBuf>,
    /// The build to check (default: the only NAME.sha256 in DIR).
    #[arg(long)]
    pub name: Option<String>,
    /// Files of the build that NAME.sha256 does not list (an earlier
    /// build's other formats) are named, not refused.
    #[arg(long)]
    pub allow_unlisted: bool,
}

/// Prints `FILE: OK` for each file verified and a summary. Files of the
/// build that are not listed were not signed: they are refused, or with
/// `--allow-unlisted` named on standard error.
pub fn run(args: VerifyBuildArgs) -> Result<()> {
    let keys = args
        .key
        .iter()
        .map(|path| keys::read_public(path))
        .collect::<Result<Vec<_>, _>>()?;
    let verified = signed_build::verify(&args.dir, args.name.as_deref(), &keys)?;
    for (file, _) in &verified.files {
        println!("{file}: OK");
    }
    if !verified.unlisted.is_empty() && !args.allow_unlisted {
        bail!(
            "{}: {} of build {} not listed in {}.sha256: not signed (--allow-unlisted accepts them)",
            args.dir.display(),
            verified.unlisted.join(", "),
            verified.name,
            verified.name
        );
    }
    for file in &verified.unlisted {
        eprintln!("{file}: not listed in {}.sha256", verified.name);
    }
    println!(
        "{}: {} files verified, signed by {}",
        verified.name,
        verified.files.len(),
        verified.key
    );
    Ok(())
}
