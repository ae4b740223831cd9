//! Bootable media, written by berth itself: no external program, no root,
//! no loop device. Every writer takes its inputs as bytes or files and
//! writes one artifact; whatever varies between builds of other tools
//! (volume ids, GUIDs, serials, timestamps) is derived from the inputs, so
//! the same inputs give the same bytes.
//!
//! This crate knows nothing of definitions, images or builds: which parts
//! an artifact is made of, and where they come from, is the builder's
//! (`builder/src/outputs/`).

pub mod fat;
pub mod gcp;
pub mod gpt;
pub mod iso;
pub mod nocloud;
pub mod qcow2;
pub mod raw_image;
pub mod syslinux;
pub mod uki;
pub mod vhd;
pub mod vmdk;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Where a writer's identifiers come from: a hash of the artifact's inputs,
/// given by the caller. Each identifier (a disk GUID, a FAT volume id, an
/// ISO volume's creation serial) is derived from it with a purpose of its
/// own, so identifiers differ from each other and from build to build of
/// other inputs, and repeat for the same inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    /// A seed for `inputs`, each hashed with its length so that no two
    /// lists of inputs give the same seed by concatenation.
    pub fn of(inputs: &[&[u8]]) -> Seed {
        let mut hasher = Sha256::new();
        for input in inputs {
            hasher.update((input.len() as u64).to_le_bytes());
            hasher.update(input);
        }
        Seed(hasher.finalize().into())
    }

    /// 16 bytes for `purpose`.
    pub fn derive(&self, purpose: &str) -> [u8; 16] {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(purpose.as_bytes());
        let hash: [u8; 32] = hasher.finalize().into();
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes
    }

    /// A GUID for `purpose`, as RFC 9562's version 8 (custom) with the
    /// variant bits set, in the byte order GPT stores GUIDs in (the first
    /// three fields little-endian).
    pub fn guid(&self, purpose: &str) -> [u8; 16] {
        let mut bytes = self.derive(purpose);
        // Version 8 in the high nibble of the third field, which GPT
        // stores little-endian: its high byte is byte 7.
        bytes[7] = (bytes[7] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        bytes
    }

    /// A 32-bit serial (a FAT volume id) for `purpose`.
    pub fn serial(&self, purpose: &str) -> u32 {
        let bytes = self.derive(purpose);
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

/// How streaming a file of a known length went wrong.
#[derive(Debug)]
pub(crate) enum Streamed<E> {
    /// Opening or reading the file.
    Read(io::Error),
    /// The file is shorter than promised after `read` bytes, or (when it
    /// must be exact) longer.
    Length { read: u64 },
    /// Where the bytes went refused them.
    Put(E),
}

/// Streams the first `length` bytes of the file at `path` to `put`, a chunk
/// at a time. The file must hold them; with `exact`, nothing more either:
/// writers measure their inputs before laying an artifact out, and a file
/// that changed since is an error, never a misplaced byte.
pub(crate) fn stream_file<E>(
    path: &Path,
    length: u64,
    exact: bool,
    mut put: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), Streamed<E>> {
    let file = File::open(path).map_err(Streamed::Read)?;
    // One byte past the length tells a longer file.
    let mut limited = file.take(length + u64::from(exact));
    let mut buffer = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let count = match limited.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Streamed::Read(error)),
        };
        if read + count as u64 > length {
            return Err(Streamed::Length { read });
        }
        put(&buffer[..count]).map_err(Streamed::Put)?;
        read += count as u64;
    }
    match read == length {
        true => Ok(()),
        false => Err(Streamed::Length { read }),
    }
}

/// What the unit tests share: finding the external tools they check
/// artifacts with, and skipping visibly when one is missing.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// A skip, said on standard error; with CI=true a failure, so that a
    /// runner without the tools cannot turn the suite green.
    pub(crate) fn skip(why: &str) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}, and CI=true makes a skip a failure"
        );
        eprintln!("skipped: {why}");
    }

    /// `name` on `PATH`, or in `/usr/sbin` or `/sbin`.
    pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|directory: PathBuf| directory.join(name))
            .find(|candidate| candidate.is_file())
    }

    /// Runs `fsck.vfat -n` on `image` and fails on anything it would
    /// fix: it exits 0 even for a long name whose checksum or ordinal is
    /// wrong, and only says so, so its report must be its version and
    /// summary lines alone.
    pub(crate) fn assert_fsck_vfat_clean(fsck: &std::path::Path, image: &std::path::Path) {
        let run = std::process::Command::new(fsck)
            .arg("-n")
            .arg(image)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        let complaints: Vec<&str> = report
            .lines()
            .filter(|line| !line.starts_with("fsck.fat ") && !line.contains(" files, "))
            .collect();
        assert!(
            run.status.success() && complaints.is_empty() && run.stderr.is_empty(),
            "fsck.vfat -n {}: {report}{}",
            image.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// [`find_tool`], or `None` with a visible [`skip`].
    pub(crate) fn tool_or_skip(name: &str) -> Option<PathBuf> {
        let found = find_tool(name);
        if found.is_none() {
            skip(&format!("{name} is not installed"));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_repeat_for_the_same_inputs_and_differ_by_purpose() {
        let seed = Seed::of(&[b"kernel", b"initrd"]);
        assert_eq!(seed, Seed::of(&[b"kernel", b"initrd"]));
        assert_ne!(seed, Seed::of(&[b"kerneli", b"nitrd"]));
        assert_eq!(seed.guid("disk"), seed.guid("disk"));
        assert_ne!(seed.guid("disk"), seed.guid("esp"));
        let guid = seed.guid("disk");
        assert_eq!(guid[7] >> 4, 8, "version 8");
        assert_eq!(guid[8] >> 6, 0b10, "RFC 9562 variant");
    }

    #[test]
    fn a_file_streams_whole_and_a_changed_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, vec![7u8; 200_000]).unwrap();
        let mut got = Vec::new();
        stream_file(&path, 200_000, true, |chunk| {
            got.extend_from_slice(chunk);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(got, vec![7u8; 200_000]);
        let sink = |_: &[u8]| Ok::<(), ()>(());
        assert!(matches!(
            stream_file(&path, 200_001, true, sink),
            Err(Streamed::Length { read: 200_000 })
        ));
        assert!(matches!(
            stream_file(&path, 199_999, true, sink),
            Err(Streamed::Length { .. })
        ));
        // Not exact: the first bytes are enough.
        stream_file(&path, 199_999, false, sink).unwrap();
        assert!(matches!(
            stream_file(&dir.path().join("none"), 1, true, sink),
            Err(Streamed::Read(_))
        ));
        assert!(matches!(
            stream_file(&path, 200_000, true, |_| Err("full")),
            Err(Streamed::Put("full"))
        ));
    }
}
