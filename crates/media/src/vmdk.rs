//! VMDK from a raw disk image, in the stream-optimized kind that vSphere
//! (OVF/OVA) and AWS import take, after VMware's "Virtual Disk Format 5.0"
//! ("Stream-Optimized Compressed Sparse Extents"):
//!
//! ```text
//! sector 0     sparse extent header (version 3; compressed grains, markers)
//! sector 1     the embedded descriptor (20 sectors kept for it)
//! sector 128   each 64 KiB grain holding data, deflated behind its marker;
//!              after every 512 grains (32 MiB) that hold any, their grain
//!              table behind its marker
//! then         the grain directory behind its marker, the footer (marker
//!              and a copy of the header), the end-of-stream marker
//! ```
//!
//! All-zero grains, and grain tables of nothing but them, are left out.
//! The header at the start is rewritten at the end with the grain
//! directory's offset instead of "at the end", as qemu-img and VMware's
//! own open-vmdk leave it: readers that do not follow the stream find
//! everything from the header, readers that do find the markers and the
//! footer.
//!
//! Grains are deflated at a fixed level, so the same raw disk gives the same
//! bytes; the descriptor's content id comes from the seed.

use std::io::{Seek, Write};
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::Seed;
use crate::raw_image::{Error, Output, RawImage, SECTOR};

const FORMAT: &str = "vmdk";
/// A grain: 128 sectors, 64 KiB.
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table: 512, 4 sectors of 4 bytes each.
const TABLE_ENTRIES: u64 = 512;
const TABLE_SECTORS: u64 = TABLE_ENTRIES * 4 / SECTOR;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Where the first grain goes: the metadata before it, rounded up to a grain.
const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;
/// zlib's default level: what qemu-img deflates grains with.
const LEVEL: u32 = 6;
/// Header flags: valid new-line detection test, compressed grains, markers.
const FLAGS: u32 = 1 | 1 << 16 | 1 << 17;
/// Grain table entries are 32-bit sector numbers, so the file ends
/// before 2 TiB (the data compressed, the virtual disk may be larger).
const MAX_SECTOR: u64 = u32::MAX as u64;
/// vSphere's largest virtual disk, 62 TiB.
const MAX_SIZE: u64 = 62 << 40;

const MARKER_GRAIN_TABLE: u32 = 1;
const MARKER_GRAIN_DIRECTORY: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Writes the stream-optimized VMDK of the raw disk at `raw` to `out`,
/// from where `out` stands. `file_name` is the name the VMDK will have,
/// which its descriptor names as its own extent. Returns the disk's
/// virtual size (the raw disk's size).
pub fn write<W: Write + Seek>(
    raw: &Path,
    file_name: &str,
    seed: &Seed,
    out: &mut W,
) -> Result<u64, Error> {
    let mut image = RawImage::open(raw)?;
    let size = image.size_in_sectors(FORMAT)?;
    check_file_name(&image, file_name)?;
    let capacity = size / SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(TABLE_ENTRIES);
    image.at_most(size, MAX_SIZE, FORMAT)?;

    let mut output = Output::seekable(out, FORMAT, &image)?;
    let mut header = Header {
        capacity,
        directory_sector: 0,
    };
    output.write(&header.bytes())?;
    let descriptor = descriptor(file_name, capacity, seed);
    output.write(&descriptor)?;
    output.write_zeros(OVERHEAD_SECTORS * SECTOR - output.position())?;

    let mut directory = vec![0u32; tables as usize];
    let mut table = vec![0u32; TABLE_ENTRIES as usize];
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut deflaters: Vec<Deflater> = (0..workers).map(|_| Deflater::new()).collect();
    for (index, directory_entry) in directory.iter_mut().enumerate() {
        let first = index as u64 * TABLE_ENTRIES;
        let count = TABLE_ENTRIES.min(grains - first);
        table.fill(0);
        // The table's grains that hold data, read in order, then deflated
        // on every core: each grain is a zlib stream of its own, so the
        // bytes do not depend on how many cores there are.
        let mut full: Vec<(usize, Vec<u8>)> = Vec::new();
        for slot in 0..count as usize {
            let mut grain = vec![0u8; GRAIN as usize];
            if !image.next_block(&mut grain)? {
                full.push((slot, grain));
            }
        }
        let deflated = deflate_all(&mut deflaters, &full).map_err(|error| output.error(error))?;
        for ((slot, _), deflated) in full.iter().zip(deflated) {
            table[*slot] = sector_of(&output)?;
            let mut marker = Vec::with_capacity(12 + deflated.len());
            marker.extend_from_slice(&((first + *slot as u64) * GRAIN_SECTORS).to_le_bytes());
            marker.extend_from_slice(&(deflated.len() as u32).to_le_bytes());
            marker.extend_from_slice(&deflated);
            write_padded(&mut output, &marker)?;
        }
        if table.iter().any(|&entry| entry != 0) {
            output.write(&metadata_marker(TABLE_SECTORS, MARKER_GRAIN_TABLE))?;
            *directory_entry = sector_of(&output)?;
            output.write(&little_endian(&table))?;
        }
    }

    let directory = little_endian(&directory);
    let directory_sectors = (directory.len() as u64).div_ceil(SECTOR);
    output.write(&metadata_marker(directory_sectors, MARKER_GRAIN_DIRECTORY))?;
    header.directory_sector = u64::from(sector_of(&output)?);
    write_padded(&mut output, &directory)?;
    output.write(&metadata_marker(1, MARKER_FOOTER))?;
    output.write(&header.bytes())?;
    // The end-of-stream marker: a sector of zeros.
    output.write_zeros(SECTOR)?;
    output.write_at(0, &header.bytes())?;
    output.flush()?;
    Ok(size)
}

/// The descriptor quotes the name in sectors of its own, and Glance
/// refuses extents with a path: so a file name, not too long, without
/// quotes or line breaks.
fn check_file_name(image: &RawImage, name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("contains a slash")
    } else if name.contains('"') {
        Some("contains a double quote")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::BadFileName {
            path: image.path().to_owned(),
            format: FORMAT,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The sector the output stands at, as a grain table or directory entry.
fn sector_of<W: Write>(output: &Output<'_, W>) -> Result<u32, Error> {
    u32::try_from(output.position() / SECTOR).map_err(|_| output.too_large(MAX_SECTOR * SECTOR))
}

/// Writes `bytes` and zeros up to the next sector.
fn write_padded<W: Write>(output: &mut Output<'_, W>, bytes: &[u8]) -> Result<(), Error> {
    output.write(bytes)?;
    output.write_zeros((bytes.len() as u64).next_multiple_of(SECTOR) - bytes.len() as u64)
}

/// A metadata marker: the sectors of metadata that follow, a zero size
/// (what tells it from a grain marker) and its type, in one sector.
fn metadata_marker(sectors: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut marker = [0u8; SECTOR as usize];
    marker[0..8].copy_from_slice(&sectors.to_le_bytes());
    marker[12..16].copy_from_slice(&kind.to_le_bytes());
    marker
}

fn little_endian(entries: &[u32]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect()
}

/// The sparse extent header's varying fields.
struct Header {
    capacity: u64,
    directory_sector: u64,
}

impl Header {
    /// The 512-byte `SparseExtentHeader`, little-endian.
    fn bytes(&self) -> [u8; SECTOR as usize] {
        let mut header = [0u8; SECTOR as usize];
        header[0..4].copy_from_slice(b"KDMV");
        header[4..8].copy_from_slice(&3u32.to_le_bytes()); // version
        header[8..12].copy_from_slice(&FLAGS.to_le_bytes());
        header[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        header[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        header[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        header[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        header[44..48].copy_from_slice(&(TABLE_ENTRIES as u32).to_le_bytes());
        // 48..56: no redundant grain directory.
        header[56..64].copy_from_slice(&self.directory_sector.to_le_bytes());
        header[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
        // 72: clean shutdown; then the new-line detection characters.
        header[73..77].copy_from_slice(b"\n \r\n");
        header[77..79].copy_from_slice(&1u16.to_le_bytes()); // deflate
        header
    }
}

/// The embedded descriptor, padded to its sectors. The geometry is what
/// VMware gives SCSI disks (255 heads, 63 sectors per track).
fn descriptor(file_name: &str, capacity: u64, seed: &Seed) -> Vec<u8> {
    let mut content_id = seed.serial("vmdk content id");
    // 0xffffffff means "no parent" and 0xfffffffe is read as "all zeros".
    if content_id >= 0xffff_fffe {
        content_id &= 0x7fff_ffff;
    }
    let long_content_id: String = seed
        .derive("vmdk long content id")
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let cylinders = capacity.div_ceil(255 * 63).min(65535);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={content_id:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{file_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.longContentID = \"{long_content_id}\"\n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n"
    );
    let mut bytes = text.into_bytes();
    bytes.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    bytes
}

/// Each of `grains` deflated, in order: the grains are shared out among
/// the deflaters, one thread each.
fn deflate_all(
    deflaters: &mut [Deflater],
    grains: &[(usize, Vec<u8>)],
) -> std::io::Result<Vec<Vec<u8>>> {
    let share = grains.len().div_ceil(deflaters.len()).max(1);
    let parts: Vec<std::io::Result<Vec<Vec<u8>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = deflaters
            .iter_mut()
            .zip(grains.chunks(share))
            .map(|(deflater, part)| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, grain)| deflater.deflate(grain).map(<[u8]>::to_vec))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a deflate thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(grains.len());
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// zlib streams (RFC 1950, what VMware and QEMU inflate), one per grain.
/// A grain that looks incompressible (a piece of a compressed kernel or
/// initrd) is stored: deflating it would cost much and save nothing.
struct Deflater {
    compress: Compress,
    store: Compress,
    buffer: Vec<u8>,
}

impl Deflater {
    fn new() -> Deflater {
        Deflater {
            compress: Compress::new(Compression::new(LEVEL), true),
            store: Compress::new(Compression::none(), true),
            // Deflate's worst case for a grain is a few hundred bytes over
            // it (stored blocks cost 5 bytes in 64 KiB).
            buffer: Vec::with_capacity(GRAIN as usize + 4096),
        }
    }

    fn deflate(&mut self, grain: &[u8]) -> std::io::Result<&[u8]> {
        let compress = match archive::compress::looks_incompressible(grain) {
            true => &mut self.store,
            false => &mut self.compress,
        };
        compress.reset();
        self.buffer.clear();
        let status = compress
            .compress_vec(grain, &mut self.buffer, FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        if status != Status::StreamEnd {
            return Err(std::io::Error::other("a grain did not deflate in one go"));
        }
        Ok(&self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_image::MIB;
    use crate::raw_image::tests::*;
    use std::fs::File;
    use std::io::Cursor;

    fn seed() -> Seed {
        Seed::of(&[b"vmdk test"])
    }

    #[test]
    fn qemu_img_reads_back_the_raw_disk() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        // A sector more than 40 MiB: the last grain is partly past the end.
        let bytes = write_test_disk(&raw, 40 * MIB + 512).unwrap();
        let vmdk = dir.path().join("disk.vmdk");
        let size = write(
            &raw,
            "disk.vmdk",
            &seed(),
            &mut File::create(&vmdk).unwrap(),
        )
        .unwrap();
        assert_eq!(size, 40 * MIB + 512);
        assert_qemu_check(&vmdk, "vmdk");
        assert_qemu_reads(&vmdk, "vmdk", true, &bytes);
        let info = qemu_img(&["info", "--output=json", vmdk.to_str().unwrap()]);
        assert!(
            info.contains("\"create-type\": \"streamOptimized\""),
            "{info}"
        );
        assert!(info.contains("\"compressed\": true"), "{info}");
        assert!(
            std::fs::metadata(&vmdk).unwrap().len() < MIB / 4,
            "zero grains take no room"
        );
    }

    /// A reader that streams finds the grain directory through the
    /// footer, as the header of a stream says "at the end" (`u64::MAX`):
    /// QEMU, given such a header, reads the same disk.
    #[test]
    fn qemu_img_finds_the_grain_directory_through_the_footer() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        write_test_disk(&raw, 40 * MIB);
        let vmdk = dir.path().join("stream.vmdk");
        let mut out = File::create(&vmdk).unwrap();
        write(&raw, "stream.vmdk", &seed(), &mut out).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&out, &u64::MAX.to_le_bytes(), 56).unwrap();
        assert_qemu_identical(&raw, &vmdk, "vmdk");
    }

    #[test]
    fn the_layout_ends_with_directory_footer_and_end_of_stream() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        write_test_disk(&raw, 40 * MIB);
        let mut out = Cursor::new(Vec::new());
        write(&raw, "disk.vmdk", &seed(), &mut out).unwrap();
        let bytes = out.into_inner();
        let sectors: Vec<&[u8]> = bytes.chunks(512).collect();
        let count = sectors.len();
        assert!(
            sectors[count - 1].iter().all(|&byte| byte == 0),
            "end of stream"
        );
        assert_eq!(
            sectors[count - 2],
            sectors[0],
            "the footer repeats the header"
        );
        assert_eq!(sectors[count - 3], metadata_marker(1, MARKER_FOOTER));
        // The grain directory: 40 MiB is 2 grain tables, both used.
        assert_eq!(
            sectors[count - 5],
            metadata_marker(1, MARKER_GRAIN_DIRECTORY)
        );
        let directory_sector = u64::from_le_bytes(bytes[56..64].try_into().unwrap());
        assert_eq!(directory_sector, count as u64 - 4);
        let descriptor = String::from_utf8_lossy(&bytes[512..1024]);
        assert!(
            descriptor.contains("createType=\"streamOptimized\""),
            "{descriptor}"
        );
        assert!(
            descriptor.contains("RW 81920 SPARSE \"disk.vmdk\""),
            "{descriptor}"
        );
    }

    #[test]
    fn the_same_raw_disk_gives_the_same_bytes() {
        let first = written_twice(|raw, out| write(raw, "a.vmdk", &seed(), out));
        let other = written_twice(|raw, out| write(raw, "a.vmdk", &Seed::of(&[b"other"]), out));
        assert!(first != other, "the content id follows the seed");
    }

    #[test]
    fn a_file_name_with_a_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        write_test_disk(&raw, MIB);
        let error = write(&raw, "../disk.vmdk", &seed(), &mut Cursor::new(Vec::new())).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "vmdk file name \"../disk.vmdk\" for raw disk {} contains a slash",
                raw.display()
            )
        );
    }
}
