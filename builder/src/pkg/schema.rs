//! `build.yml`, the file that says what goes into a package image: its
//! schema and the checks the schema cannot express.
//!
//! Reading and checking only: resolving the inputs it names (Debian
//! packages, binaries) is [`super::debian`]'s and [`super::Package`]'s
//! business, and making the image [`super::layer`]'s.

use std::path::Path;

use oci::reference::Reference;
use serde::Deserialize;
use serde_json::Value;

use super::PkgError;
use crate::spec::{self, Origin};

/// `build.yml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    /// The repository, as in LinuxKit's `build.yml` (`berth/getty`).
    pub image: String,
    /// Debian packages; their dependencies come along.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages left out of the dependencies, and what only they need
    /// (`adduser`, `debconf`: needed by maintainer scripts, which never
    /// run here).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Paths (files or whole directories) left out of the packages'
    /// contents, besides the documentation, which is never taken
    /// ([`super::debian::NEVER_TAKEN`]). `usr/lib/x86_64-linux-gnu/gconv` saves 8 MB.
    #[serde(default)]
    pub prune: Vec<String>,
    /// Static binaries built from this workspace.
    #[serde(default)]
    pub binaries: Vec<Binary>,
    /// Files and directories from the package directory.
    #[serde(default)]
    pub files: Vec<PkgFile>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// The `org.mobyproject.config` label, in LinuxKit's format.
    #[serde(default)]
    pub config: Option<Value>,
    /// Repackage a Debian kernel in LinuxKit's kernel-image layout:
    /// `/kernel`, `/kernel.tar` (the modules), `/System.map`, `/config`.
    /// Only the packages and the `linux-image-*` packages they depend on
    /// are taken, not the rest of their dependencies.
    #[serde(default)]
    pub kernel: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// The workspace package and binary (`init`).
    pub package: String,
    #[serde(default)]
    pub binary: Option<String>,
    /// Where it goes in the image (`/sbin/init`).
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PkgFile {
    /// Where it goes in the image.
    pub path: String,
    /// A file or directory under the package directory.
    #[serde(default)]
    pub source: Option<String>,
    /// Inline contents.
    #[serde(default)]
    pub contents: Option<String>,
    /// A symbolic link to this target.
    #[serde(default)]
    pub symlink: Option<String>,
    /// An empty directory.
    #[serde(default)]
    pub directory: bool,
    /// Octal; default 0644 for files (or the source's), 0755 for directories.
    #[serde(default)]
    pub mode: Option<String>,
}

/// Reads and checks `dir/build.yml`.
pub fn read_build_file(dir: &Path) -> Result<BuildFile, PkgError> {
    let path = dir.join("build.yml");
    let text = std::fs::read_to_string(&path).map_err(|e| PkgError::Input {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let origin = Origin::from(path.display().to_string().as_str());
    let build: BuildFile = spec::parse_as(&text, &origin)?;
    let bad = |message: String| PkgError::Input {
        path: path.display().to_string(),
        message,
    };
    Reference::parse(&build.image).map_err(|e| bad(format!("image: {e}")))?;
    // A registry's port (`HOST:PORT/...`) is not a tag.
    let name = build.image.rsplit('/').next().unwrap_or_default();
    if name.contains(':') || build.image.contains('@') {
        return Err(bad(format!(
            "image: {:?} names a repository only; the tag is the hash of the inputs",
            build.image
        )));
    }
    for (i, file) in build.files.iter().enumerate() {
        let kinds = [
            file.source.is_some(),
            file.contents.is_some(),
            file.symlink.is_some(),
            file.directory,
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(bad(format!(
                "files[{i}] ({}): give exactly one of source, contents, symlink, directory",
                file.path
            )));
        }
        if let Some(mode) = &file.mode {
            spec::mode(mode).map_err(|e| bad(format!("files[{i}].mode: {e}")))?;
        }
    }
    if let Some(config) = &build.config {
        let label = serde_json::to_string(config).map_err(|e| bad(e.to_string()))?;
        let image = spec::parse_label(&label, &build.image)?;
        spec::check_label(&image, &build.image)?;
    }
    Ok(build)
}
