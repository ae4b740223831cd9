//! The NoCloud seed: the small drive that hands a VM its user data.
//!
//! cloud-init's NoCloud data source (and berth's own metadata reader)
//! finds the seed by its file system label, `cidata` in either case, and
//! reads files of fixed lower-case names from its root: `user-data`,
//! `meta-data` (at least the `instance-id`, whose change tells cloud-init
//! that this is a new instance) and, when given, `network-config` and
//! `vendor-data`. The seed is a FAT image labelled `CIDATA`, written by
//! [`crate::fat`] with VFAT long names, so those names are read back
//! exactly as they are spelt.
//!
//! The image is as small as it can be in whole MiB, 1 MiB at least: FAT12
//! for a few files of text, FAT16 when the data runs to megabytes. The
//! same files and `mtime` give the same bytes: the volume id is derived
//! from the files, every date is `mtime`.
//!
//! Where the user data comes from, which instance id and host name a VM
//! gets, and how the image is attached to it are the caller's business.

use std::io::Write;

use crate::fat::{FatError, FatImage, FatPlan};

/// The label cloud-init looks for, upper case as FAT stores labels.
pub const LABEL: &str = "CIDATA";
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NoCloudError {
    #[error(
        "NoCloud instance id {id:?}: one or more letters, digits, '.', '_' or '-', at most 255"
    )]
    InvalidInstanceId { id: String },
    #[error(
        "NoCloud host name {hostname:?}: labels of letters, digits and inner '-' (at most 63 each), joined by '.', at most 253 in all"
    )]
    InvalidHostname { hostname: String },
    #[error(transparent)]
    Fat(#[from] FatError),
}

/// The files of a seed, each under the name NoCloud reads it by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedFiles {
    /// `user-data`: a `#cloud-config` document, a script, anything.
    pub user_data: Vec<u8>,
    /// `meta-data`: YAML with `instance-id` (see [`meta_data`]).
    pub meta_data: Vec<u8>,
    /// `network-config`, left out when `None`.
    pub network_config: Option<Vec<u8>>,
    /// `vendor-data`, left out when `None`.
    pub vendor_data: Option<Vec<u8>>,
}

impl SeedFiles {
    /// The files that are given, by their NoCloud names.
    fn named(&self) -> Vec<(&'static str, &[u8])> {
        let mut files = vec![
            ("user-data", self.user_data.as_slice()),
            ("meta-data", self.meta_data.as_slice()),
        ];
        for (name, contents) in [
            ("network-config", &self.network_config),
            ("vendor-data", &self.vendor_data),
        ] {
            if let Some(contents) = contents {
                files.push((name, contents.as_slice()));
            }
        }
        files
    }
}

/// The default `meta-data`: the instance id and the host name, as YAML.
/// Both are checked, so that neither can break the YAML or the host.
pub fn meta_data(instance_id: &str, local_hostname: &str) -> Result<String, NoCloudError> {
    let id_valid = !instance_id.is_empty()
        && instance_id.len() <= 255
        && instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !id_valid {
        return Err(NoCloudError::InvalidInstanceId {
            id: instance_id.to_owned(),
        });
    }
    // RFC 1123 host names.
    let label_valid = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if local_hostname.len() > 253 || !local_hostname.split('.').all(label_valid) {
        return Err(NoCloudError::InvalidHostname {
            hostname: local_hostname.to_owned(),
        });
    }
    Ok(format!(
        "instance-id: {instance_id}\nlocal-hostname: {local_hostname}\n"
    ))
}

/// An instance id for `inputs` (a state directory, the user data, what
/// the caller says makes an instance): `iid-` and 16 hex digits of their
/// hash, the same for the same inputs.
pub fn instance_id(inputs: &[&[u8]]) -> String {
    let bytes = crate::Seed::of(inputs).derive("nocloud instance-id");
    let hex: String = bytes[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("iid-{hex}")
}

/// Lays out the seed of `files`, every date `mtime` (Unix seconds).
pub fn plan(files: &SeedFiles, mtime: u64) -> Result<FatPlan, NoCloudError> {
    // Each file's name goes into the hash with it, so that the same bytes
    // under another name, or a file left out, give another volume id.
    let inputs: Vec<&[u8]> = files
        .named()
        .into_iter()
        .flat_map(|(name, contents)| [name.as_bytes(), contents])
        .collect();
    let volume_id = crate::Seed::of(&inputs).serial("nocloud volume id");
    let mut image = FatImage::new(LABEL, volume_id, mtime, 0)?;
    for (name, contents) in files.named() {
        image.add_bytes(name, contents.to_vec())?;
    }
    let mut size = image.min_size()?.div_ceil(MIB).max(1) * MIB;
    // A size above the minimum may get another FAT type or cluster size
    // than the minimum did; the next MiB then holds the files.
    loop {
        match image.clone().plan(Some(size)) {
            Err(FatError::DoesNotFit { .. }) => size += MIB,
            planned => return Ok(planned?),
        }
    }
}

/// Writes the seed of `files` to `out`, every date `mtime` (Unix
/// seconds); returns its size in bytes.
pub fn write_seed(files: &SeedFiles, mtime: u64, out: impl Write) -> Result<u64, NoCloudError> {
    let plan = plan(files, mtime)?;
    plan.write(out)?;
    Ok(plan.size())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::FatType;
    use crate::fat::tests::pattern;
    use crate::testing::{assert_fsck_vfat_clean, tool_or_skip};
    use std::path::Path;
    use std::process::Command;

    const MTIME: u64 = 1_700_000_000;

    fn seed(user_data: &[u8]) -> SeedFiles {
        SeedFiles {
            user_data: user_data.to_vec(),
            meta_data: meta_data("iid-test", "berth-vm").unwrap().into_bytes(),
            network_config: Some(b"version: 2\nethernets: {}\n".to_vec()),
            vendor_data: None,
        }
    }

    fn written(files: &SeedFiles) -> Vec<u8> {
        let mut out = Vec::new();
        let size = write_seed(files, MTIME, &mut out).unwrap();
        assert_eq!(out.len() as u64, size);
        out
    }

    #[test]
    fn meta_data_names_the_instance_and_the_host() {
        assert_eq!(
            meta_data("iid-0123abcd", "web-1.example").unwrap(),
            "instance-id: iid-0123abcd\nlocal-hostname: web-1.example\n"
        );
        for bad in ["", "two words", "a:b", "line\nbreak", &"x".repeat(256)] {
            let error = meta_data(bad, "host").unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        for bad in [
            "",
            "-lead",
            "trail-",
            "under_score",
            "a..b",
            &"x".repeat(64),
        ] {
            let error = meta_data("iid-1", bad).unwrap_err();
            assert!(
                matches!(error, NoCloudError::InvalidHostname { .. }),
                "{error}"
            );
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn the_instance_id_repeats_for_the_same_inputs() {
        let id = instance_id(&[b"state", b"user data"]);
        assert_eq!(id, instance_id(&[b"state", b"user data"]));
        assert_ne!(id, instance_id(&[b"stateu", b"ser data"]));
        assert_eq!(id.len(), "iid-".len() + 16);
        // It is valid in the meta-data it is meant for.
        meta_data(&id, "host").unwrap();
    }

    #[test]
    fn the_same_files_give_the_same_bytes_and_others_another_volume_id() {
        let first = written(&seed(b"#cloud-config\n"));
        assert!(first == written(&seed(b"#cloud-config\n")));
        assert_eq!(first.len() as u64, MIB, "a few files take 1 MiB");
        let volume_id = |image: &[u8]| image[39..43].to_vec();
        let other = written(&seed(b"#cloud-config\n\n"));
        assert_ne!(volume_id(&first), volume_id(&other));
        // The same bytes as vendor-data instead of network-config.
        let mut moved = seed(b"#cloud-config\n");
        moved.vendor_data = moved.network_config.take();
        assert_ne!(volume_id(&first), volume_id(&written(&moved)));
    }

    /// What a reader that is not berth's sees: dosfstools finds nothing
    /// to fix, blkid the label and type cloud-init looks for, mtools each
    /// file under its NoCloud name with its exact bytes.
    #[test]
    fn blkid_finds_cidata_and_mtools_reads_each_file_back() {
        let (Some(fsck), Some(blkid), Some(mdir), Some(mtype)) = (
            tool_or_skip("fsck.vfat"),
            tool_or_skip("blkid"),
            tool_or_skip("mdir"),
            tool_or_skip("mtype"),
        ) else {
            return;
        };
        let temporary = tempfile::tempdir().unwrap();
        let mut small = seed(b"#cloud-config\r\nhostname: berth\r\n\0no newline at the end");
        small.vendor_data = Some(b"#cloud-config\n".to_vec());
        // Megabytes of user data: the image grows to hold them.
        let large = seed(&pattern(5 * MIB as usize + 123, 0));
        for (files, fat_type, size) in [
            (small, FatType::Fat12, MIB),
            (large, FatType::Fat16, 6 * MIB),
        ] {
            let planned = plan(&files, MTIME).unwrap();
            assert_eq!((planned.fat_type(), planned.size()), (fat_type, size));
            let image = temporary.path().join("seed.img");
            let file = std::fs::File::create(&image).unwrap();
            write_seed(&files, MTIME, file).unwrap();
            assert_fsck_vfat_clean(&fsck, &image);
            let probe = run(&blkid, &["-p", "-o", "export"], &image, None);
            let probe: Vec<&str> = probe.lines().collect();
            for expected in ["LABEL=CIDATA", "TYPE=vfat"] {
                assert!(probe.contains(&expected), "blkid: {probe:?}");
            }
            let listing = run(&mdir, &["-i"], &image, Some("::"));
            for name in ["user-data", "meta-data", "network-config"] {
                assert!(
                    listing
                        .lines()
                        .any(|line| line.ends_with(&format!(" {name}"))),
                    "{name} not in {listing}"
                );
            }
            assert_eq!(
                listing.contains(" vendor-data"),
                files.vendor_data.is_some(),
                "{listing}"
            );
            for (name, contents) in files.named() {
                let read = Command::new(&mtype)
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-i")
                    .arg(&image)
                    .arg(format!("::{name}"))
                    .output()
                    .unwrap();
                assert!(read.status.success(), "mtype {name}: {read:?}");
                assert!(read.stdout == contents, "{name} reads back other bytes");
            }
        }
        // dosfstools's own label reader, where it is installed.
        if let Some(fatlabel) = crate::testing::find_tool("fatlabel") {
            let image = temporary.path().join("seed.img");
            assert_eq!(run(&fatlabel, &[], &image, None).trim_end(), LABEL);
        }
    }

    /// The standard output of `tool ARGS IMAGE [TARGET]`, which must
    /// succeed.
    fn run(tool: &Path, args: &[&str], image: &Path, target: Option<&str>) -> String {
        let output = Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(args)
            .arg(image)
            .args(target)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}: {output:?}", tool.display());
        String::from_utf8(output.stdout).unwrap()
    }
}
