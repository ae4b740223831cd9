//! `berth verify-build DIR --key PUB`: a signed build's `NAME.sha256`,
//! its signature and every file it lists (`builder::signed_build`).

use std::path::PathBuf;

use anyhow::Result;
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
}

/// Prints `FILE: OK` for each file verified and a summary; files of the
/// build that are not listed are named on standard error.
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
