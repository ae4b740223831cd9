//! The `berth` subcommands, one file each, over the builder library; what
//! they share: where images come from ([`Sources`], [`registry_ref`]) and
//! reading definition files ([`load`]).

pub mod build;
pub mod cache;
pub mod key;
pub mod pkg;
pub mod pull;
pub mod push;
pub mod run;
mod seed;
pub mod serve;
pub mod sign;
pub mod validate;
pub mod verify_build;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use builder::spec::{self, Definition, Origin};
use clap::Args;
use oci::layout::default_cache;
use oci::registry::{RegistryOptions, Remote};
use oci::{CacheThenRegistry, Layout, Reference, RegistryRef};

/// Where images come from and how registries are reached.
#[derive(Args)]
pub struct Sources {
    /// The image cache, an OCI image layout (default: $BERTH_CACHE, else ~/.cache/berth).
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
    /// Use only the cache, never the network (also: BERTH_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
    /// Reach this registry (HOST or HOST:PORT) over plain HTTP; loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "REGISTRY", global = true)]
    pub insecure: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, besides the system's.
    #[arg(long = "ca-cert", value_name = "FILE", global = true)]
    pub ca_certificates: Vec<PathBuf>,
}

impl Sources {
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(default_cache)
    }

    pub fn offline(&self) -> bool {
        self.offline || std::env::var("BERTH_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
    }

    pub fn remote(&self) -> Result<Remote> {
        Ok(Remote::new(RegistryOptions {
            insecure: self.insecure.clone(),
            ca_certificates: self.ca_certificates.clone(),
            read_timeout: std::env::var("BERTH_READ_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(std::time::Duration::from_secs),
        })?)
    }

    /// The registry client, or `None` when offline.
    pub fn remote_unless_offline(&self) -> Result<Option<Remote>> {
        match self.offline() {
            true => Ok(None),
            false => self.remote().map(Some),
        }
    }

    /// The image source of a build: the cache, then (unless offline) the registry.
    pub fn source(&self, pull: bool) -> Result<CacheThenRegistry> {
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

/// `text` as a reference to an image in a registry.
pub fn registry_ref(text: &str) -> Result<RegistryRef> {
    match Reference::parse(text)? {
        Reference::Registry(reference) => Ok(reference),
        Reference::Package(_) => bail!("{text}: not an image in a registry"),
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Reads, parses, merges and validates the definition files, and reads the
/// keys of their trust policy (warning of what it cannot check).
pub fn load(files: &[String]) -> Result<Definition> {
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
    // The trust policy's key files, read as the build will read them.
    if problems.is_empty() {
        match builder::trust::Policy::load(&definition) {
            Ok(loaded) => {
                for warning in loaded.warnings {
                    eprintln!("berth: warning: {warning}");
                }
            }
            Err(e) => problems.extend(e.problems),
        }
    }
    if !problems.is_empty() {
        bail!(spec::SpecError { problems });
    }
    Ok(definition)
}
