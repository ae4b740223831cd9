//! VHD from a raw disk image, after Microsoft's "Virtual Hard Disk Image
//! Format Specification" (version 1.0): the fixed kind for Azure and AWS
//! import (`-f vhd`), the dynamic kind for the rest (`-f dynamic-vhd`).
//!
//! Both round the disk up to a whole MiB, as Azure requires of every VHD,
//! by zeros at its end. A fixed VHD is that disk plus the 512-byte footer;
//! the zero parts of the disk are skipped over, so the file is sparse
//! where the raw disk was. A dynamic VHD is
//!
//! ```text
//! 0      copy of the footer
//! 512    dynamic disk header
//! 1536   block allocation table (one entry per 2 MiB block)
//! then   each 2 MiB block holding data: its sector bitmap (all set), its bytes
//! end    the footer
//! ```
//!
//! with all-zero blocks left unallocated. The footer's unique id comes from
//! the seed, its timestamp from the caller's `mtime`.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;

use crate::Seed;
use crate::raw_image::{Error, MIB, Output, RawImage, SECTOR};

const FOOTER: usize = 512;
const DYNAMIC_HEADER: usize = 1024;
const BLOCK: u64 = 2 * MIB;
/// A block's sector bitmap: one bit per sector, rounded up to a sector.
const BITMAP: usize = (BLOCK / SECTOR / 8) as usize;
/// Granularity of the holes a fixed VHD skips.
const FIXED_CHUNK: u64 = 64 << 10;
/// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;
/// QEMU refuses larger VHDs (`VHD_MAX_SECTORS`, 65535 × 255 × 255 sectors,
/// about 2040 GiB), and so does Hyper-V.
const MAX_SIZE: u64 = 65535 * 255 * 255 * SECTOR;

#[derive(Clone, Copy)]
enum Kind {
    Fixed,
    Dynamic,
}

impl Kind {
    fn format(self) -> &'static str {
        match self {
            Kind::Fixed => "vhd",
            Kind::Dynamic => "dynamic vhd",
        }
    }
}

/// Writes the fixed VHD of the raw disk at `raw` to `out`, from where `out`
/// stands; whatever followed in `out` is cut off first, so that the zero
/// parts skipped over read as zeros. Returns the disk's virtual size: the
/// raw disk's size rounded up to a MiB.
pub fn write_fixed(raw: &Path, seed: &Seed, mtime: u64, out: &mut File) -> Result<u64, Error> {
    let mut image = RawImage::open(raw)?;
    let size = virtual_size(&image, Kind::Fixed)?;
    let mut output = Output::seekable(out, Kind::Fixed.format(), &image)?;
    output.cut_here()?;
    let mut chunk = vec![0u8; FIXED_CHUNK as usize];
    for _ in 0..size / FIXED_CHUNK {
        if image.next_block(&mut chunk)? {
            output.skip(FIXED_CHUNK)?;
        } else {
            output.write(&chunk)?;
        }
    }
    output.write(&footer(Kind::Fixed, size, seed, mtime))?;
    output.flush()?;
    Ok(size)
}

/// Writes the dynamic VHD of the raw disk at `raw` to `out`, from where
/// `out` stands. Returns the disk's virtual size: the raw disk's size
/// rounded up to a MiB.
pub fn write_dynamic<W: Write + Seek>(
    raw: &Path,
    seed: &Seed,
    mtime: u64,
    out: &mut W,
) -> Result<u64, Error> {
    let mut image = RawImage::open(raw)?;
    let size = virtual_size(&image, Kind::Dynamic)?;
    let blocks = size.div_ceil(BLOCK);
    let table_offset = (FOOTER + DYNAMIC_HEADER) as u64;
    let table_bytes = (blocks * 4).next_multiple_of(SECTOR);

    let mut output = Output::seekable(out, Kind::Dynamic.format(), &image)?;
    let footer = footer(Kind::Dynamic, size, seed, mtime);
    output.write(&footer)?;
    output.write(&dynamic_header(blocks, table_offset))?;
    output.write_zeros(table_bytes)?;
    let mut table = vec![u32::MAX; blocks as usize];
    let mut block = vec![0u8; BLOCK as usize];
    for entry in &mut table {
        if image.next_block(&mut block)? {
            continue;
        }
        let sector = u32::try_from(output.position() / SECTOR)
            .map_err(|_| output.too_large(u64::from(u32::MAX) * SECTOR))?;
        *entry = sector;
        output.write(&[0xff; BITMAP])?;
        output.write(&block)?;
    }
    output.write(&footer)?;
    let table: Vec<u8> = table.iter().flat_map(|entry| entry.to_be_bytes()).collect();
    output.write_at(table_offset, &table)?;
    output.flush()?;
    Ok(size)
}

/// The raw disk's size rounded up to a MiB, within what a VHD holds.
fn virtual_size(image: &RawImage, kind: Kind) -> Result<u64, Error> {
    image.at_most(image.size().next_multiple_of(MIB), MAX_SIZE, kind.format())
}

/// The hard disk footer (spec: "Hard Disk Footer Format"), big-endian.
fn footer(kind: Kind, size: u64, seed: &Seed, mtime: u64) -> [u8; FOOTER] {
    let mut footer = [0u8; FOOTER];
    let (data_offset, disk_type) = match kind {
        Kind::Fixed => (u64::MAX, 2u32),
        Kind::Dynamic => (FOOTER as u64, 3u32),
    };
    let timestamp = u32::try_from(mtime.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    footer[0..8].copy_from_slice(b"conectix");
    footer[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: "reserved", always set
    footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    footer[16..24].copy_from_slice(&data_offset.to_be_bytes());
    footer[24..28].copy_from_slice(&timestamp.to_be_bytes());
    // The creator fields are the ones `qemu-img convert -O vpc -o
    // force_size` writes, which are what LinuxKit's VHDs carry: QEMU takes a
    // VHD's size from its CHS geometry (smaller than the MiB-aligned size
    // for most disks, cutting off the backup GPT) unless the creator is one
    // it knows to mean "the current size is the size", "qem2" among them.
    // Azure, Hyper-V and AWS read the current size whatever the creator.
    footer[28..32].copy_from_slice(b"qem2");
    footer[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    footer[36..40].copy_from_slice(b"Wi2k");
    footer[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    footer[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (cylinders, heads, sectors) = geometry(size / SECTOR);
    footer[56..58].copy_from_slice(&cylinders.to_be_bytes());
    footer[58] = heads;
    footer[59] = sectors;
    footer[60..64].copy_from_slice(&disk_type.to_be_bytes());
    footer[68..84].copy_from_slice(&seed.guid("vhd unique id"));
    let checksum = checksum(&footer);
    footer[64..68].copy_from_slice(&checksum.to_be_bytes());
    footer
}

/// The dynamic disk header (spec: "Dynamic Disk Header Format"): no
/// parent, 2 MiB blocks, the allocation table at `table_offset`.
fn dynamic_header(blocks: u64, table_offset: u64) -> [u8; DYNAMIC_HEADER] {
    let mut header = [0u8; DYNAMIC_HEADER];
    header[0..8].copy_from_slice(b"cxsparse");
    header[8..16].copy_from_slice(&u64::MAX.to_be_bytes()); // no further header
    header[16..24].copy_from_slice(&table_offset.to_be_bytes());
    header[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // header version 1.0
    header[28..32].copy_from_slice(&(blocks as u32).to_be_bytes());
    header[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
    let checksum = checksum(&header);
    header[36..40].copy_from_slice(&checksum.to_be_bytes());
    header
}

/// The one's complement of the sum of the bytes, the checksum field
/// itself still zero.
fn checksum(bytes: &[u8]) -> u32 {
    !bytes
        .iter()
        .fold(0u32, |sum, &byte| sum.wrapping_add(u32::from(byte)))
}

/// The CHS geometry for `sectors`, by the spec's algorithm ("CHS
/// Calculation"): (cylinders, heads, sectors per track).
fn geometry(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (per_track, heads, cylinders_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut per_track = 17;
        let mut cylinders_times_heads = total / per_track;
        let mut heads = cylinders_times_heads.div_ceil(1024).max(4);
        if cylinders_times_heads >= heads * 1024 || heads > 16 {
            per_track = 31;
            heads = 16;
            cylinders_times_heads = total / per_track;
        }
        if cylinders_times_heads >= heads * 1024 {
            per_track = 63;
            heads = 16;
            cylinders_times_heads = total / per_track;
        }
        (per_track, heads, cylinders_times_heads)
    };
    (
        (cylinders_times_heads / heads) as u16,
        heads as u8,
        per_track as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_image::tests::*;

    fn seed() -> Seed {
        Seed::of(&[b"vhd test"])
    }

    /// 2026-11-29 00:00:00 UTC.
    const MTIME: u64 = 1_795_910_400;

    #[test]
    fn geometry_follows_the_spec() {
        // 40 MiB: 17 sectors per track, 5 heads.
        assert_eq!(geometry(40 * MIB / SECTOR), (963, 5, 17));
        // 1 GiB: 63 sectors per track, 16 heads.
        assert_eq!(geometry((1 << 30) / SECTOR), (2080, 16, 63));
        // 127 GiB and beyond: the largest geometry.
        assert_eq!(geometry((200u64 << 30) / SECTOR), (65535, 16, 255));
    }

    #[test]
    fn the_footer_carries_seed_time_and_checksum() {
        let footer = footer(Kind::Fixed, 41 * MIB, &seed(), MTIME);
        assert_eq!(&footer[0..8], b"conectix");
        assert_eq!(&footer[24..28], &((MTIME - VHD_EPOCH) as u32).to_be_bytes());
        assert_eq!(&footer[68..84], &seed().guid("vhd unique id"));
        let mut zeroed = footer;
        zeroed[64..68].fill(0);
        assert_eq!(footer[64..68], checksum(&zeroed).to_be_bytes());
        assert_ne!(
            footer,
            super::footer(Kind::Fixed, 41 * MIB, &Seed::of(&[b"other"]), MTIME)
        );
    }

    #[test]
    fn qemu_img_reads_back_the_fixed_vhd() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        // Not a whole MiB: the VHD pads it.
        let mut bytes = write_test_disk(&raw, 40 * MIB + 4096).unwrap();
        let vhd = dir.path().join("disk.vhd");
        let size = write_fixed(&raw, &seed(), MTIME, &mut File::create(&vhd).unwrap()).unwrap();
        assert_eq!(size, 41 * MIB);
        bytes.resize(size as usize, 0);
        assert_qemu_reads(&vhd, "vpc", false, &bytes);
        let file = std::fs::metadata(&vhd).unwrap();
        assert_eq!(file.len(), 41 * MIB + 512);
        use std::os::unix::fs::MetadataExt;
        assert!(file.blocks() * 512 < 2 * MIB, "the zero parts are holes");
    }

    #[test]
    fn qemu_img_reads_back_the_dynamic_vhd() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut bytes = write_test_disk(&raw, 40 * MIB + 4096).unwrap();
        let vhd = dir.path().join("disk.vhd");
        let size = write_dynamic(&raw, &seed(), MTIME, &mut File::create(&vhd).unwrap()).unwrap();
        assert_eq!(size, 41 * MIB);
        bytes.resize(size as usize, 0);
        assert_qemu_reads(&vhd, "vpc", true, &bytes);
        // Blocks 0, 1, 16 and 20 hold data.
        let blocks = 4 * (BLOCK + BITMAP as u64);
        assert_eq!(
            std::fs::metadata(&vhd).unwrap().len(),
            1536 + 512 + blocks + 512
        );
    }

    #[test]
    fn the_same_raw_disk_gives_the_same_bytes() {
        written_twice(|raw, out| write_dynamic(raw, &seed(), MTIME, out));
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        write_test_disk(&raw, 5 * MIB);
        let fixed = |name: &str| {
            let path = dir.path().join(name);
            write_fixed(&raw, &seed(), MTIME, &mut File::create(&path).unwrap()).unwrap();
            std::fs::read(path).unwrap()
        };
        assert!(fixed("first.vhd") == fixed("second.vhd"));
    }

    #[test]
    fn a_stale_file_is_cut_before_the_fixed_vhd_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut bytes = write_test_disk(&raw, 3 * MIB).unwrap();
        let vhd = dir.path().join("disk.vhd");
        std::fs::write(&vhd, vec![0x55; 8 * MIB as usize]).unwrap();
        let mut out = std::fs::OpenOptions::new().write(true).open(&vhd).unwrap();
        write_fixed(&raw, &seed(), MTIME, &mut out).unwrap();
        let written = std::fs::read(&vhd).unwrap();
        bytes.resize(3 * MIB as usize, 0);
        assert!(written[..bytes.len()] == bytes[..]);
        assert_eq!(written.len(), bytes.len() + FOOTER);
    }
}
