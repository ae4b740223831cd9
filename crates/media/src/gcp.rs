//! Google Compute Engine's image tarball from a raw disk image
//! (`NAME.img.tar.gz`): a gzip of a tar that holds exactly one file,
//! `disk.raw`, in GNU tar's old GNU format, as GCE's image import requires
//! ("tar --format=oldgnu"). GCE also wants the disk a whole number of GiB,
//! so `disk.raw` is the raw disk with zeros up to the next GiB.
//!
//! The tar header is written here, field by field as GNU tar fills it for
//! `--format=oldgnu`: mode 0644, uid and gid 0 with no user or group names,
//! the caller's `mtime`, and sizes of 8 GiB and more in base-256 (GNU's
//! extension; octal only reaches 8 GiB). The archive ends with two zero
//! blocks and is padded to a 10240-byte record, as GNU tar does. The gzip
//! header names no file and has no timestamp; the compression level is
//! fixed, and the gzip is `archive`'s, which deflates 1 MiB blocks on
//! every core (each primed with the 32 KiB before it, so the bytes do not
//! depend on the number of cores), a run of zero blocks, the disk's
//! free space, once, and stores blocks that look incompressible (the
//! kernels and initrds a disk of berth's is made of) rather than deflate
//! them for nothing. The same raw disk and `mtime` give the same bytes.
//!
//! GNU tar's sparse extension (`-S`) is left out: gzip shrinks the zeros
//! anyway, and the import reads the plain file.

use std::io::Write;
use std::path::Path;

use archive::compress::{Encoder, ParallelGzip};

use crate::raw_image::{Error, MIB, RawImage};

const FORMAT: &str = "gcp";
const GIB: u64 = 1 << 30;
const BLOCK: usize = 512;
/// GNU tar's default record: 20 blocks.
const RECORD: u64 = 20 * BLOCK as u64;
/// zlib's default level, gzip's too.
const LEVEL: u32 = 6;
/// How much of the disk goes through the compressor at once.
const CHUNK: u64 = MIB;

/// Writes the GCE image tarball of the raw disk at `raw` to `out`.
/// Returns the size of `disk.raw` in it: the raw disk's size rounded up
/// to a GiB.
pub fn write<W: Write + Send>(raw: &Path, mtime: u64, out: &mut W) -> Result<u64, Error> {
    let mut image = RawImage::open(raw)?;
    let size = image.size().next_multiple_of(GIB);
    let failed = |source| Error::Write {
        path: raw.to_owned(),
        format: FORMAT,
        source,
    };
    let mut gzip = Box::new(ParallelGzip::new(out, LEVEL).storing_incompressible());
    gzip.write_all(&header(size, mtime)).map_err(failed)?;
    // Zeros (holes, free space, the padding to a GiB) cost next to
    // nothing: the compressor skips whole blocks of them, so a run of them
    // is given to it in one piece.
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut zeros = 0u64;
    let mut left = size;
    while left > 0 {
        let length = left.min(CHUNK) as usize;
        if image.next_block(&mut chunk[..length])? {
            zeros += length as u64;
        } else {
            gzip.write_zeros(std::mem::take(&mut zeros))
                .map_err(failed)?;
            gzip.write_all(&chunk[..length]).map_err(failed)?;
        }
        left -= length as u64;
    }
    // The file's last block padded (the header is one block, the file a
    // whole number of them), the two zero blocks that end the archive, then
    // the rest of the record.
    let written = BLOCK as u64 + size.next_multiple_of(BLOCK as u64);
    let end = (written + 2 * BLOCK as u64).next_multiple_of(RECORD);
    gzip.write_zeros(zeros + end - BLOCK as u64 - size)
        .map_err(failed)?;
    gzip.finish().map_err(failed)?;
    Ok(size)
}

/// The old GNU tar header of `disk.raw`.
fn header(size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut header = [0u8; BLOCK];
    header[0..8].copy_from_slice(b"disk.raw");
    octal(&mut header[100..108], 0o644); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    number(&mut header[124..136], size);
    number(&mut header[136..148], mtime);
    header[156] = b'0'; // a regular file
    // The old GNU magic: "ustar  \0" across the magic and version fields.
    header[257..265].copy_from_slice(b"ustar  \0");
    // The checksum counts its own field as spaces, and is written as six
    // octal digits, a NUL and a space.
    header[148..156].fill(b' ');
    let checksum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    let digits = format!("{checksum:06o}\0 ");
    header[148..156].copy_from_slice(digits.as_bytes());
    header
}

/// `value` in octal, zero-padded, filling `field` but for a closing NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(digits.as_bytes());
    field[width] = 0;
}

/// A size or time field: octal while it fits, else GNU's base-256 (the
/// high bit of the first byte set, the value big-endian in the rest).
fn number(field: &mut [u8], value: u64) {
    if value < 1 << (3 * (field.len() as u32 - 1)) {
        octal(field, value);
    } else {
        field.fill(0);
        field[0] = 0x80;
        let end = field.len();
        field[end - 8..].copy_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::process::Command;

    /// 2026-11-29 00:00:00 UTC.
    const MTIME: u64 = 1_795_910_400;

    fn tar_or_skip() -> bool {
        crate::testing::tool_or_skip("tar").is_some()
    }

    #[test]
    fn gnu_tar_lists_and_extracts_disk_raw() {
        if !tar_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut bytes = crate::raw_image::tests::write_test_disk(&raw, 40 * MIB).unwrap();
        let archive = dir.path().join("host.img.tar.gz");
        let size = write(&raw, MTIME, &mut File::create(&archive).unwrap()).unwrap();
        assert_eq!(size, GIB);
        bytes.resize(GIB as usize, 0);

        // One pass over the 1 GiB: the data to stdout, and with it going
        // there, the verbose listing to stderr.
        let extracted = Command::new("tar")
            .args(["--utc", "-xvvOzf"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(extracted.status.success(), "{:?}", extracted.status);
        let listing = String::from_utf8(extracted.stderr).unwrap();
        assert_eq!(
            listing,
            format!("-rw-r--r-- 0/0      {GIB} 2026-11-29 00:00 disk.raw\n")
        );
        assert!(
            extracted.stdout == bytes,
            "disk.raw differs from the raw disk"
        );
    }

    #[test]
    fn the_same_raw_disk_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        crate::raw_image::tests::write_test_disk(&raw, 3 * MIB);
        let mut first = Vec::new();
        let mut second = Vec::new();
        write(&raw, MTIME, &mut first).unwrap();
        write(&raw, MTIME, &mut second).unwrap();
        assert!(first == second);
        // gzip: no file name flag, no timestamp, OS unknown.
        assert_eq!(first[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    /// GNU tar's own header for a `disk.raw` of `size` bytes, archived
    /// as the image import asks (`--format=oldgnu`), owned by root.
    fn gnu_tar_header(size: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        File::create(dir.path().join("disk.raw"))
            .unwrap()
            .set_len(size)
            .unwrap();
        let mut tar = Command::new("tar")
            .args([
                "--format=oldgnu",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .arg(format!("--mtime=@{MTIME}"))
            .args(["--mode=0644", "-C"])
            .arg(dir.path())
            .args(["-cf", "-", "disk.raw"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut header = vec![0; BLOCK];
        std::io::Read::read_exact(tar.stdout.as_mut().unwrap(), &mut header).unwrap();
        // The header is all that is wanted, not gigabytes of zeros.
        tar.kill().unwrap();
        tar.wait().unwrap();
        header
    }

    #[test]
    fn the_header_is_the_one_gnu_tar_writes() {
        if !tar_or_skip() {
            return;
        }
        for size in [GIB, 9 * GIB] {
            assert!(gnu_tar_header(size) == header(size, MTIME), "{size} bytes");
        }
    }

    #[test]
    fn a_failed_write_names_the_format_and_the_raw_disk() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        crate::raw_image::tests::write_test_disk(&raw, MIB);
        let error = write(&raw, MTIME, &mut Full).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "cannot write the gcp image of raw disk {}: No space left on device (os error 28)",
                raw.display()
            )
        );
    }

    #[test]
    fn large_sizes_are_base_256() {
        let header = header(10 * GIB, MTIME);
        assert_eq!(header[124], 0x80);
        assert_eq!(
            u64::from_be_bytes(header[128..136].try_into().unwrap()),
            10 * GIB
        );
        let small = super::header(GIB, MTIME);
        assert_eq!(&small[124..136], b"10000000000\0");
    }
}
