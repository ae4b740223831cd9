//! The NoCloud seed `berth run qemu --data` attaches: a FAT image labelled
//! `CIDATA`, written by `media::nocloud`, kept in the machine's state
//! directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use media::nocloud::{self, SeedFiles};

/// Writes the seed of the machine booting `artifact` with `user_data`
/// into `state` and returns its path. The instance id changes with the
/// user data, so cloud-init runs its once-per-instance steps again when
/// the data changes; the host name is the build's name.
pub fn write(state: &Path, artifact: &Path, user_data: &[u8]) -> Result<PathBuf> {
    let hostname = hostname(artifact);
    let instance = nocloud::instance_id(&[hostname.as_bytes(), user_data]);
    let files = SeedFiles {
        user_data: user_data.to_vec(),
        meta_data: nocloud::meta_data(&instance, &hostname)?.into_bytes(),
        network_config: None,
        vendor_data: None,
    };
    let file = state.join("seed.img");
    let mut out = tempfile::NamedTempFile::new_in(state)
        .with_context(|| format!("creating a file in {}", state.display()))?;
    // The seed's dates: those of an image berth makes.
    let mtime = archive::Clock::from_env()?.made();
    nocloud::write_seed(&files, mtime, out.as_file_mut())
        .with_context(|| format!("writing the NoCloud seed {}", file.display()))?;
    out.persist(&file)
        .with_context(|| format!("writing the NoCloud seed {}", file.display()))?;
    Ok(file)
}

/// The machine's host name: the build's name (the file name up to its
/// first dot, without `-kernel`), as a host name may be written.
fn hostname(artifact: &Path) -> String {
    let name = artifact
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = name.split('.').next().unwrap_or_default();
    let name = name.strip_suffix("-kernel").unwrap_or(name);
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() {
        "berth".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn host_names_come_from_the_build() {
        assert_eq!(hostname(Path::new("out/minimal")), "minimal");
        assert_eq!(hostname(Path::new("out/my_host.iso")), "my-host");
        assert_eq!(hostname(Path::new("out/host-kernel")), "host");
        assert_eq!(hostname(Path::new("..")), "berth");
    }

    #[test]
    fn the_seed_is_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let seed = write(dir.path(), Path::new("out/vm"), b"#cloud-config\n").unwrap();
        assert_eq!(seed, dir.path().join("seed.img"));
        let first = fs::read(&seed).unwrap();
        write(dir.path(), Path::new("out/vm"), b"#cloud-config\n").unwrap();
        assert_eq!(
            fs::read(&seed).unwrap(),
            first,
            "the same data, the same seed"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no scratch file left"
        );
    }
}
