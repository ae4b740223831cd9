//! The raw disk image as the formats derived from it read it (qcow2, VHD,
//! VMDK, GCE's tarball): in fixed-size blocks, in order, never the whole
//! image in memory, with all-zero blocks told apart so that the sparse
//! formats leave them out. The holes of a sparse file are found with
//! `SEEK_DATA`/`SEEK_HOLE` and not read at all, so a mostly empty disk of
//! many gigabytes costs what its data costs.
//!
//! Also the one error type of those writers, and the output they write
//! through, which knows its position and names the format in its errors.
//! Each format's layout is its own module's.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why a disk format could not be written from a raw disk image. Every
/// variant names the raw image, and the format where it matters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open raw disk {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read raw disk {} at byte {offset}: {source}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("raw disk {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "raw disk {} is {size} bytes, not a whole number of 512-byte sectors as a {format} image needs",
        path.display()
    )]
    NotWholeSectors {
        path: PathBuf,
        size: u64,
        format: &'static str,
    },
    #[error(
        "raw disk {} is {size} bytes, more than a {format} image can hold ({limit} bytes)",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        format: &'static str,
        limit: u64,
    },
    #[error("the {format} image of raw disk {} grows past {limit} bytes, more than its format can address", path.display())]
    OutputTooLarge {
        path: PathBuf,
        format: &'static str,
        limit: u64,
    },
    #[error("{format} file name {name:?} for raw disk {} {reason}", path.display())]
    BadFileName {
        path: PathBuf,
        format: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("cannot write the {format} image of raw disk {}: {source}", path.display())]
    Write {
        path: PathBuf,
        format: &'static str,
        source: io::Error,
    },
}

pub(crate) const SECTOR: u64 = 512;
pub(crate) const MIB: u64 = 1 << 20;

/// A raw disk image open for one pass from its start to its end.
pub(crate) struct RawImage {
    path: PathBuf,
    file: File,
    size: u64,
    offset: u64,
    /// Up to here the file is known to hold data (`SEEK_HOLE`'s answer).
    data_end: u64,
    /// Up to here the file is known to be a hole (`SEEK_DATA`'s answer).
    hole_end: u64,
}

impl RawImage {
    pub(crate) fn open(path: &Path) -> Result<RawImage, Error> {
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        if size == 0 {
            return Err(Error::Empty {
                path: path.to_owned(),
            });
        }
        Ok(RawImage {
            path: path.to_owned(),
            file,
            size,
            offset: 0,
            data_end: 0,
            hole_end: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The image's size in bytes, as it was when opened.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The size, once checked to be whole sectors, as `format` needs.
    pub(crate) fn size_in_sectors(&self, format: &'static str) -> Result<u64, Error> {
        if !self.size.is_multiple_of(SECTOR) {
            return Err(Error::NotWholeSectors {
                path: self.path.clone(),
                size: self.size,
                format,
            });
        }
        Ok(self.size)
    }

    /// `size` itself, or the error that it is more than `format` holds.
    pub(crate) fn at_most(
        &self,
        size: u64,
        limit: u64,
        format: &'static str,
    ) -> Result<u64, Error> {
        if size > limit {
            return Err(Error::TooLarge {
                path: self.path.clone(),
                size: self.size,
                format,
                limit,
            });
        }
        Ok(size)
    }

    /// Fills `block` with the image's next `block.len()` bytes (zeros past
    /// its end) and tells whether they are all zero.
    pub(crate) fn next_block(&mut self, block: &mut [u8]) -> Result<bool, Error> {
        let offset = self.offset;
        self.offset += block.len() as u64;
        let present = block
            .len()
            .min(usize::try_from(self.size.saturating_sub(offset)).unwrap_or(usize::MAX));
        if present == 0 || self.is_hole(offset, present as u64) {
            block.fill(0);
            return Ok(true);
        }
        let (data, beyond) = block.split_at_mut(present);
        self.file.read_exact_at(data, offset).map_err(|source| {
            let source = if source.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    source.kind(),
                    format!("the file shrank below the {} bytes it had", self.size),
                )
            } else {
                source
            };
            Error::Read {
                path: self.path.clone(),
                offset,
                source,
            }
        })?;
        beyond.fill(0);
        Ok(is_zero(data))
    }

    /// Whether `length` bytes at `offset` lie in one hole of the file.
    /// A file system that cannot tell holes says the file is all data.
    fn is_hole(&mut self, offset: u64, length: u64) -> bool {
        if offset < self.data_end {
            return false;
        }
        if offset + length <= self.hole_end {
            return true;
        }
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(data) if data >= offset + length => {
                self.hole_end = data;
                true
            }
            Ok(data) => {
                self.data_end = rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Hole(data))
                    .unwrap_or(u64::MAX);
                false
            }
            // No data after `offset`: the rest of the file is a hole.
            Err(rustix::io::Errno::NXIO) => {
                self.hole_end = u64::MAX;
                true
            }
            Err(_) => {
                self.data_end = u64::MAX;
                false
            }
        }
    }
}

/// Whether every byte is zero, compared 16 at a time.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<16>();
    words.iter().all(|word| u128::from_ne_bytes(*word) == 0) && rest.iter().all(|&byte| byte == 0)
}

/// The writer an image goes to, with the image's own offsets (from where
/// the writer stood when given) and errors that name format and raw disk.
pub(crate) struct Output<'a, W> {
    out: &'a mut W,
    start: u64,
    position: u64,
    format: &'static str,
    path: PathBuf,
}

impl<'a, W: Write> Output<'a, W> {
    /// An output for a writer that cannot seek: offsets start at zero.
    pub(crate) fn streaming(out: &'a mut W, format: &'static str, raw: &RawImage) -> Self {
        Output {
            out,
            start: 0,
            position: 0,
            format,
            path: raw.path().to_owned(),
        }
    }

    /// How many bytes of the image are written so far.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(bytes)
            .map_err(|source| self.error(source))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn write_zeros(&mut self, mut count: u64) -> Result<(), Error> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while count > 0 {
            let chunk = count.min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..chunk])?;
            count -= chunk as u64;
        }
        Ok(())
    }

    /// The error of a failed write, naming format and raw disk.
    pub(crate) fn error(&self, source: io::Error) -> Error {
        Error::Write {
            path: self.path.clone(),
            format: self.format,
            source,
        }
    }

    /// The error that the image outgrows what its format can address.
    pub(crate) fn too_large(&self, limit: u64) -> Error {
        Error::OutputTooLarge {
            path: self.path.clone(),
            format: self.format,
            limit,
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(|source| self.error(source))
    }
}

impl<'a, W: Write + Seek> Output<'a, W> {
    /// An output that may go back: offsets count from where `out` stands.
    pub(crate) fn seekable(
        out: &'a mut W,
        format: &'static str,
        raw: &RawImage,
    ) -> Result<Self, Error> {
        let mut output = Output::streaming(out, format, raw);
        output.start = output
            .out
            .stream_position()
            .map_err(|source| output.error(source))?;
        Ok(output)
    }

    /// Overwrites bytes already written at `offset`, then goes on at the end.
    pub(crate) fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        let end = self.start + self.position;
        self.seek(SeekFrom::Start(self.start + offset))?;
        self.out
            .write_all(bytes)
            .map_err(|source| self.error(source))?;
        self.seek(SeekFrom::Start(end))
    }

    /// Moves on by `count` bytes without writing them: on a new file they
    /// are a hole, which reads as zeros.
    pub(crate) fn skip(&mut self, count: u64) -> Result<(), Error> {
        self.position += count;
        self.seek(SeekFrom::Start(self.start + self.position))
    }

    fn seek(&mut self, to: SeekFrom) -> Result<(), Error> {
        self.out.seek(to).map_err(|source| self.error(source))?;
        Ok(())
    }
}

impl Output<'_, File> {
    /// Cuts the file where the output stands, so that whatever it held
    /// further on cannot show through the parts skipped over.
    pub(crate) fn cut_here(&mut self) -> Result<(), Error> {
        self.out
            .set_len(self.start + self.position)
            .map_err(|source| self.error(source))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! A raw disk with data in scattered places and zeros between, and the
    //! real `qemu-img` to read what the writers make of it.

    use super::*;
    use std::process::Command;

    /// Where the test disk holds data: (offset, length, fill byte seed).
    /// Within one cluster, across a cluster border, across a 2 MiB VHD
    /// block border, past 32 MiB (a second VMDK grain table), and the last
    /// sector.
    pub(crate) const TEST_DATA: &[(u64, u64)] = &[
        (0, 4096),
        (65536 + 300, 200),
        (3 * 65536 - 100, 300),
        (2 * MIB - 512, 1024),
        (33 * MIB + 12345, 70000),
    ];

    /// Writes a sparse raw disk of `size` bytes to `path`, with the test
    /// data at each offset below `size` and its last sector filled, and
    /// returns its bytes when `size` is small enough to hold them.
    pub(crate) fn write_test_disk(path: &Path, size: u64) -> Option<Vec<u8>> {
        let file = File::create(path).unwrap();
        file.set_len(size).unwrap();
        let mut regions: Vec<(u64, u64)> = TEST_DATA
            .iter()
            .copied()
            .filter(|&(offset, length)| offset + length <= size)
            .collect();
        regions.push((size - SECTOR, SECTOR));
        let mut bytes = (size <= 64 * MIB).then(|| vec![0u8; size as usize]);
        for (offset, length) in regions {
            let data: Vec<u8> = (0..length)
                .map(|index| ((offset + index) * 7 % 251) as u8 | 1)
                .collect();
            file.write_all_at(&data, offset).unwrap();
            if let Some(bytes) = &mut bytes {
                bytes[offset as usize..(offset + length) as usize].copy_from_slice(&data);
            }
        }
        bytes
    }

    /// The bytes `write` makes of a 5 MiB test disk, once it has made the
    /// same bytes twice.
    pub(crate) fn written_twice(
        write: impl Fn(&Path, &mut std::io::Cursor<Vec<u8>>) -> Result<u64, Error>,
    ) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        write_test_disk(&raw, 5 * MIB);
        let [first, second] = [(), ()].map(|()| {
            let mut out = std::io::Cursor::new(Vec::new());
            write(&raw, &mut out).unwrap();
            out.into_inner()
        });
        assert!(first == second, "two writes of the same disk differ");
        first
    }

    /// `qemu-img`, or `None` and a visible skip; with CI=true a missing
    /// `qemu-img` fails the test instead.
    pub(crate) fn qemu_img_or_skip() -> Option<&'static str> {
        if crate::testing::find_tool("qemu-img").is_some() {
            return Some("qemu-img");
        }
        crate::testing::skip("qemu-img is not installed (package qemu-utils)");
        None
    }

    /// Runs `qemu-img` with `args`, asserts success, returns its stdout.
    pub(crate) fn qemu_img(args: &[&str]) -> String {
        let output = Command::new("qemu-img").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "qemu-img {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Checks `image` as `qemu-img` sees it: its format (as `qemu-img`
    /// probes it when `probed`; a fixed VHD's footer is at its end, where
    /// no prober looks), its virtual size, and that converting it back to
    /// raw gives `expected`.
    pub(crate) fn assert_qemu_reads(image: &Path, format: &str, probed: bool, expected: &[u8]) {
        let path = image.to_str().unwrap();
        let info = |args: &[&str]| -> serde_json::Value {
            serde_json::from_str(&qemu_img(
                &[&["info", "--output=json"], args, &[path]].concat(),
            ))
            .unwrap()
        };
        if probed {
            assert_eq!(info(&[])["format"], format);
        }
        let info = info(&["-f", format]);
        assert_eq!(info["format"], format, "{info}");
        assert_eq!(info["virtual-size"], expected.len() as u64, "{info}");
        let back = image.with_extension("back.raw");
        qemu_img(&[
            "convert",
            "-f",
            format,
            "-O",
            "raw",
            image.to_str().unwrap(),
            back.to_str().unwrap(),
        ]);
        let back_bytes = std::fs::read(&back).unwrap();
        assert!(
            back_bytes == expected,
            "{} converted back differs from the raw disk",
            image.display()
        );
    }

    /// Asserts that `qemu-img check` finds no errors in `image`.
    pub(crate) fn assert_qemu_check(image: &Path, format: &str) {
        let report = qemu_img(&["check", "-f", format, image.to_str().unwrap()]);
        assert!(report.contains("No errors were found"), "{report}");
    }

    /// Asserts that `qemu-img compare` finds `image` identical to `raw`.
    pub(crate) fn assert_qemu_identical(raw: &Path, image: &Path, format: &str) {
        let report = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            format,
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        assert!(report.contains("Images are identical"), "{report}");
    }

    /// A 1.5 GiB raw disk with data past each 512 MiB qcow2 L2 span, in
    /// each format: QEMU finds each the same disk, and each takes little
    /// more room than the data.
    #[test]
    fn a_large_sparse_disk_streams_and_keeps_its_holes() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let size = 1536 * MIB;
        write_test_disk(&raw, size);
        let file = File::options().write(true).open(&raw).unwrap();
        for offset in [512 * MIB - 100, 1024 * MIB + 65536 * 3] {
            file.write_all_at(b"data across a border", offset).unwrap();
        }
        let seed = crate::Seed::of(&[b"large"]);
        let started = std::time::Instant::now();
        let path = |name: &str| dir.path().join(name);
        let create = |name: &str| File::create(path(name)).unwrap();
        assert_eq!(
            crate::qcow2::write(&raw, &mut create("disk.qcow2")).unwrap(),
            size
        );
        assert_eq!(
            crate::vmdk::write(&raw, "disk.vmdk", &seed, &mut create("disk.vmdk")).unwrap(),
            size
        );
        assert_eq!(
            crate::vhd::write_dynamic(&raw, &seed, 0, &mut create("dynamic.vhd")).unwrap(),
            size
        );
        assert_eq!(
            crate::vhd::write_fixed(&raw, &seed, 0, &mut create("fixed.vhd")).unwrap(),
            size
        );
        eprintln!(
            "four formats of a sparse 1.5 GiB raw disk in {:?}",
            started.elapsed()
        );
        for (name, format) in [
            ("disk.qcow2", "qcow2"),
            ("disk.vmdk", "vmdk"),
            ("dynamic.vhd", "vpc"),
            ("fixed.vhd", "vpc"),
        ] {
            use std::os::unix::fs::MetadataExt;
            let allocated = std::fs::metadata(path(name)).unwrap().blocks() * 512;
            assert!(allocated < 16 * MIB, "{name} takes {allocated} bytes");
            assert_qemu_identical(&raw, &path(name), format);
        }
        assert_qemu_check(&path("disk.qcow2"), "qcow2");
        assert_qemu_check(&path("disk.vmdk"), "vmdk");
    }

    #[test]
    fn holes_and_data_read_as_the_file_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let bytes = write_test_disk(&path, 40 * MIB).unwrap();
        let mut image = RawImage::open(&path).unwrap();
        let mut block = vec![0xaa; 65536];
        for expected in bytes.chunks(65536) {
            let zero = image.next_block(&mut block).unwrap();
            assert_eq!(zero, is_zero(expected));
            assert!(block == expected);
        }
        assert!(image.next_block(&mut block).unwrap(), "past the end: zeros");
    }

    #[test]
    fn errors_name_the_raw_disk() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.raw");
        let error = RawImage::open(&missing).err().unwrap().to_string();
        assert!(
            error.starts_with("cannot open raw disk ") && error.contains("missing.raw"),
            "{error}"
        );
        let empty = dir.path().join("empty.raw");
        File::create(&empty).unwrap();
        let error = RawImage::open(&empty).err().unwrap().to_string();
        assert_eq!(error, format!("raw disk {} is empty", empty.display()));
        let odd = dir.path().join("odd.raw");
        std::fs::write(&odd, [1; 1000]).unwrap();
        let error = RawImage::open(&odd)
            .unwrap()
            .size_in_sectors("qcow2")
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "raw disk {} is 1000 bytes, not a whole number of 512-byte sectors as a qcow2 image needs",
                odd.display()
            )
        );
    }
}
