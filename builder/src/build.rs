//! One build, start to finish: plan, assemble, write every requested format,
//! commit the artifacts with the lock file, the SBOM and, for a signed
//! build, the signed digests of them all.

use std::path::PathBuf;

use archive::Clock;
use oci::ImageSource;
use oci::keys::SigningKey;
use oci::lockfile::LockFile;

use crate::assemble::{AssembleError, assemble};
use crate::outputs::{
    BootError, BootFiles, Compression, Format, MediaOptions, OutputError, Pending, Writers,
};
use crate::plan::{Plan, PlanError};
use crate::signed_build::{self, SignedBuildError};
use crate::spec::Definition;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The base name of the artifacts.
    pub name: String,
    pub output_dir: PathBuf,
    pub formats: Vec<Format>,
    pub compression: Compression,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// `SOURCE_DATE_EPOCH`, read once by the caller.
    pub clock: Clock,
    /// Build with exactly the digests of this lock.
    pub lock: Option<LockFile>,
    /// The volume label of ISOs (default `BERTH`).
    pub label: Option<String>,
    /// The size of disks in bytes (default: the smallest that fits).
    pub size: Option<u64>,
    /// Sign the build: `NAME.sha256` and `NAME.sha256.sig` with the rest.
    pub sign_key: Option<SigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The trust policy's keys could not be read.
    #[error(transparent)]
    Policy(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(
        "{0}: bootable media need a boot image (the berth key `boot:`, by default berth's own images/boot)"
    )]
    NoBootImage(Format),
    #[error(transparent)]
    Media(#[from] crate::outputs::MediaError),
    #[error(transparent)]
    Signed(#[from] SignedBuildError),
    #[error("output directory {}", dir.display())]
    Output {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a build made.
#[derive(Debug)]
pub struct Built {
    pub artifacts: Vec<PathBuf>,
    /// Every image reference and the digest it resolved to.
    pub lock: LockFile,
}

/// Builds `definition` into the requested formats. On error nothing is left
/// in the output directory.
pub fn build(
    definition: &Definition,
    source: &dyn ImageSource,
    options: &BuildOptions,
) -> Result<Built, BuildError> {
    if options.sign_key.is_some() {
        signed_build::check_name(&options.name)?;
    }
    let policy = crate::trust::Policy::load(definition)?.policy;
    let plan = Plan::resolve(
        definition,
        source,
        &options.arch,
        options.lock.as_ref(),
        &policy,
    )?;
    let output = |source| BuildError::Output {
        dir: options.output_dir.clone(),
        source,
    };
    let created = !options.output_dir.exists();
    std::fs::create_dir_all(&options.output_dir).map_err(output)?;
    let result = write(source, options, &plan);
    if result.is_err() && created {
        // Leave no trace of a failed build: not even its directory.
        let _ = std::fs::remove_dir(&options.output_dir);
    }
    let artifacts = result?;
    Ok(Built {
        artifacts,
        lock: plan.lock(),
    })
}

fn write(
    source: &dyn ImageSource,
    options: &BuildOptions,
    plan: &Plan,
) -> Result<Vec<PathBuf>, BuildError> {
    let output = |source| BuildError::Output {
        dir: options.output_dir.clone(),
        source,
    };
    let boot = match options.formats.iter().find(|f| f.needs_boot_files()) {
        None => None,
        Some(format) => {
            let image = plan.boot.as_ref().ok_or(BuildError::NoBootImage(*format))?;
            Some(BootFiles::read(source, &image.image, options.clock)?)
        }
    };
    let media = MediaOptions {
        boot,
        label: options.label.clone(),
        size: options.size,
    };
    let mut pending = Pending::new(&options.output_dir);
    let mut writers = Writers::new(
        &mut pending,
        &options.name,
        &options.formats,
        options.compression,
        options.clock.made(),
        media,
    )
    .map_err(output)?;
    let sbom = assemble(plan, source, options.clock, &options.name, writers.sink())?;
    match writers.finish(&mut pending) {
        Ok(()) => {}
        Err(OutputError::Io(source)) => return Err(output(source)),
        Err(OutputError::Media(error)) => return Err(error.into()),
    }
    pending
        .write(
            &format!("{}.lock", options.name),
            plan.lock().render().as_bytes(),
        )
        .map_err(output)?;
    pending
        .write(&format!("{}.spdx.json", options.name), &sbom)
        .map_err(output)?;
    if let Some(key) = &options.sign_key {
        signed_build::stage(&mut pending, &options.name, key).map_err(output)?;
    }
    pending.commit().map_err(output)
}
