//! `berth key generate`: an ed25519 key pair for signing images
//! (`oci::keys`), and reading the keys the other commands are given.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use oci::keys::{self, PASSWORD_VARIABLE, SigningKey};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a key pair: PREFIX.key (PKCS#8 PEM, mode 0600, encrypted with
    /// $BERTH_KEY_PASSWORD when it is set) and PREFIX.pub (SPKI PEM).
    /// Existing files are never overwritten.
    #[command(after_help = "Example:\n  berth key generate -o keys/release")]
    Generate {
        /// Where to write: PREFIX.key and PREFIX.pub.
        #[arg(short, long = "output", value_name = "PREFIX", default_value = "berth")]
        output: PathBuf,
    },
}

pub fn run(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { output } => {
            let key = keys::generate()?;
            let (private, public) = keys::write_pair(&key, &output, password().as_deref())?;
            println!("{}", private.display());
            println!("{}", public.display());
        }
    }
    Ok(())
}

/// The password of encrypted keys, from the environment.
fn password() -> Option<Vec<u8>> {
    std::env::var_os(PASSWORD_VARIABLE)
        .filter(|p| !p.is_empty())
        .map(|p| p.into_encoded_bytes())
}

/// The private key at `path`, decrypted with $BERTH_KEY_PASSWORD if it is
/// encrypted.
pub fn signing_key(path: &Path) -> Result<SigningKey> {
    Ok(keys::read_private(path, password().as_deref())?)
}
