//! `berth sign REF --key KEY` and `berth verify REF --key PUB`: cosign's
//! image signatures, in the registry and in the cache (`oci::signature`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use oci::{Layout, keys, signature};

use super::{Sources, registry_ref};

#[derive(Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// The image: a tag is resolved to its digest once, and that digest is signed.
    pub reference: String,
    /// The private key (PKCS#8 PEM; encrypted ones need $BERTH_KEY_PASSWORD).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// The image: what its tag names now must be signed.
    pub reference: String,
    /// A public key (SPKI PEM); given several times, any one of them will do.
    #[arg(long, value_name = "PUB", required = true)]
    pub key: Vec<PathBuf>,
}

/// Signs the image in its registry and in the cache (offline: in the cache
/// alone) and prints REF@DIGEST and where the signatures are.
pub fn sign(args: SignArgs) -> Result<()> {
    let image = registry_ref(&args.reference)?;
    let key = super::key::signing_key(&args.key)?;
    let cache = Layout::open(args.sources.cache_dir())?;
    let _in_use = cache.use_lock()?;
    let remote = args.sources.remote_unless_offline()?;
    let signed = signature::sign(&cache, remote.as_ref(), &image, &key)?;
    let count = signed.signatures;
    let already = if signed.added {
        ""
    } else {
        " (already signed by this key)"
    };
    println!("{image}@{} signed{already}", signed.digest);
    eprintln!("{} holds {count} signature(s)", signed.reference);
    Ok(())
}

/// Verifies the image's signature against the keys and prints REF@DIGEST
/// and the key that verified it; fails naming image, digest and keys.
pub fn verify(args: VerifyArgs) -> Result<()> {
    let image = registry_ref(&args.reference)?;
    let keys = args
        .key
        .iter()
        .map(|path| keys::read_public(path))
        .collect::<Result<Vec<_>, _>>()?;
    let cache = Layout::open(args.sources.cache_dir())?;
    let _in_use = cache.use_lock()?;
    let remote = args.sources.remote_unless_offline()?;
    let verified = signature::verify(&cache, remote.as_ref(), &image, &keys)?;
    println!("{image}@{} verified by {}", verified.digest, verified.key);
    Ok(())
}
