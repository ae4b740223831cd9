//! A whole raw disk with a GUID Partition Table (UEFI 2.10, chapter 5),
//! written front to back as one stream: the protective MBR, the primary
//! header and entries, each partition's content, the backup entries and
//! header.
//!
//! [`Disk`] says what goes on the disk; [`Disk::layout`] places it (every
//! partition starts on a 1 MiB boundary) and checks it against the disk
//! size, reading no file; [`Layout`] tells the caller where each partition
//! landed (a FAT writer needs its first LBA as "hidden sectors") and writes
//! the bytes, either to any [`Write`] (every zero written, for a pipe or a
//! converter) or to a new file with its zero regions left as holes.
//!
//! The structures are written here rather than with `gptman`/`mbrman`: they
//! are a few fixed-offset fields, `gptman` generates random GUIDs for a new
//! table and writes its headers by seeking into an existing device, and the
//! partitions' contents have to be streamed between the two tables anyway.
//! Every identifier comes from the caller's [`Seed`] (the disk GUID and
//! each partition's unique GUID, with purposes of their own), so the same
//! inputs give the same bytes.
//!
//! What the partitions hold (a FAT ESP, a root filesystem) is other
//! writers' work; this module copies their bytes. The 440 bytes of BIOS
//! boot code (syslinux's `gptmbr.bin`) are the caller's too.
//!
//! The protective MBR's partition is not marked active: the UEFI
//! specification (5.2.3) asks for a boot indicator of 0, and `gptmbr.bin`
//! chooses the partition to boot by the GPT entry's "legacy BIOS bootable"
//! attribute ([`LEGACY_BIOS_BOOTABLE`]), never by the MBR's active flag.

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Seed;

/// Bytes in a logical block: the only sector size written.
pub const SECTOR: u64 = 512;
/// Partitions start on multiples of this (1 MiB), as partitioning tools
/// align them, so every partition is aligned for any underlying block size.
pub const ALIGNMENT: u64 = 1 << 20;
/// Entries in each partition entry array: the minimum the UEFI
/// specification allows, 16 KiB of entries.
pub const ENTRY_COUNT: u32 = 128;
/// Bytes per partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Attribute bit 0: the platform needs this partition to function.
pub const REQUIRED_PARTITION: u64 = 1 << 0;
/// Attribute bit 1: firmware must not produce a block I/O protocol for it.
pub const NO_BLOCK_IO_PROTOCOL: u64 = 1 << 1;
/// Attribute bit 2: the partition legacy BIOS boot code (`gptmbr.bin`)
/// boots. Exactly one partition may carry it for `gptmbr.bin` to boot.
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Characters (UTF-16 code units) a partition name may have.
pub const NAME_UNITS: usize = 36;

/// Sectors each entry array takes.
const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// The first LBA a partition may use: after the MBR, the header and the
/// entries.
const FIRST_USABLE_LBA: u64 = 2 + ENTRY_SECTORS;
/// Sectors at the end of the disk: the backup entries and header.
const BACKUP_SECTORS: u64 = ENTRY_SECTORS + 1;
/// The header's size: the fields the specification defines, the rest of
/// its sector is zero.
const HEADER_SIZE: u32 = 92;
/// A GPT header's signature, "EFI PART".
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0, the only one defined.
const REVISION: u32 = 0x0001_0000;
/// The protective MBR partition's type.
const PROTECTIVE_TYPE: u8 = 0xee;
/// The size of a read or a zero write while streaming.
const CHUNK: usize = 1 << 20;
/// Runs of zeros at least this long, aligned to it, become holes in a
/// sparse file: a file system block.
const HOLE: usize = 4096;

/// A GUID in the byte order GPT stores it: the first three fields
/// little-endian, the last eight bytes as written.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `{d1:08X}-{d2:04X}-{d3:04X}-{d4[0..2]}-{d4[2..8]}`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl fmt::Display for Guid {
    /// The usual upper-case text form, as `sgdisk` and `sfdisk` print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// The EFI System Partition, where UEFI firmware looks for boot loaders.
pub const EFI_SYSTEM_PARTITION: Guid = Guid::new(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
/// A Linux filesystem partition.
pub const LINUX_FILESYSTEM: Guid = Guid::new(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);
/// A BIOS boot partition (GRUB's core image on GPT disks).
pub const BIOS_BOOT: Guid = Guid::new(
    0x2168_6148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);

/// What a partition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The first `length` bytes of a file, read while the disk is written.
    File { path: PathBuf, length: u64 },
    /// This many zero bytes.
    Zeros(u64),
}

impl Content {
    fn length(&self) -> u64 {
        match self {
            Content::File { length, .. } => *length,
            Content::Zeros(length) => *length,
        }
    }
}

/// One partition as the caller describes it. Its size is its content's
/// length rounded up to whole sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partition's name, at most [`NAME_UNITS`] UTF-16 code units.
    pub name: String,
    pub type_guid: Guid,
    /// Attribute flags such as [`LEGACY_BIOS_BOOTABLE`].
    pub attributes: u64,
    pub content: Content,
}

/// What goes on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Where the disk GUID and the partitions' unique GUIDs come from.
    pub seed: Seed,
    /// The MBR's 440 bytes of BIOS boot code; zeros when `None`.
    pub boot_code: Option<[u8; 440]>,
    /// The partitions, numbered from 1 in this order and placed on disk in
    /// this order.
    pub partitions: Vec<Partition>,
    /// The disk's size in bytes; when `None`, the smallest that fits,
    /// rounded up to 1 MiB.
    pub size: Option<u64>,
}

/// Why a disk cannot be laid out or written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error(
        "a disk of {given} bytes is too small for its partitions: it needs at least {needed} bytes (the default size would be {default} bytes)"
    )]
    TooSmall {
        given: u64,
        needed: u64,
        default: u64,
    },
    #[error("disk size {size} bytes is not a multiple of the {SECTOR}-byte sector")]
    UnalignedSize { size: u64 },
    #[error(
        "partition {number} ({name:?}) of {length} bytes does not fit on a disk of at most 2^64 bytes"
    )]
    PartitionTooLarge {
        number: u32,
        name: String,
        length: u64,
    },
    #[error("{count} partitions given, a GPT disk holds at most {ENTRY_COUNT}")]
    TooManyPartitions { count: usize },
    #[error("partition {number} ({name:?}) is empty: a partition needs at least one sector")]
    EmptyPartition { number: u32, name: String },
    #[error(
        "partition {number}'s name {name:?} is {units} UTF-16 units long, at most {NAME_UNITS} fit"
    )]
    NameTooLong {
        number: u32,
        name: String,
        units: usize,
    },
    #[error(
        "{count} partitions are marked legacy BIOS bootable ({names}): the BIOS boot code boots exactly one"
    )]
    SeveralBiosBootable { count: usize, names: String },
    #[error("reading partition {number}'s content {path}")]
    ReadContent {
        number: u32,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "partition {number}'s content {path} ended after {read} bytes, {expected} were expected"
    )]
    ContentShort {
        number: u32,
        path: PathBuf,
        read: u64,
        expected: u64,
    },
    #[error("writing the disk image")]
    Write(#[source] io::Error),
}

/// A partition as placed on the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its number, from 1, in the order given.
    pub number: u32,
    pub name: String,
    pub type_guid: Guid,
    /// Its unique GUID, from the disk's seed.
    pub unique_guid: Guid,
    pub attributes: u64,
    /// Its first sector: a FAT file system's "hidden sectors".
    pub first_lba: u64,
    /// Its last sector, inclusive, as GPT records it.
    pub last_lba: u64,
    pub content: Content,
}

impl Placed {
    /// Where the partition starts, in bytes from the start of the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    /// The partition's size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// A disk laid out: where everything goes, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    size: u64,
    disk_guid: Guid,
    partitions: Vec<Placed>,
    boot_code: [u8; 440],
}

impl Disk {
    /// Places the partitions and checks them against the disk's size.
    /// Reads no file: a content file's length is the one given.
    pub fn layout(&self) -> Result<Layout, GptError> {
        if self.partitions.len() > ENTRY_COUNT as usize {
            return Err(GptError::TooManyPartitions {
                count: self.partitions.len(),
            });
        }
        let bootable: Vec<&str> = self
            .partitions
            .iter()
            .filter(|partition| partition.attributes & LEGACY_BIOS_BOOTABLE != 0)
            .map(|partition| partition.name.as_str())
            .collect();
        if bootable.len() > 1 {
            return Err(GptError::SeveralBiosBootable {
                count: bootable.len(),
                names: bootable.join(", "),
            });
        }
        let mut placed = Vec::with_capacity(self.partitions.len());
        // The first sector after everything placed so far.
        let mut next_lba = FIRST_USABLE_LBA;
        for (index, partition) in self.partitions.iter().enumerate() {
            let number = index as u32 + 1;
            let units = partition.name.encode_utf16().count();
            if units > NAME_UNITS {
                return Err(GptError::NameTooLong {
                    number,
                    name: partition.name.clone(),
                    units,
                });
            }
            let length = partition.content.length();
            if length == 0 {
                return Err(GptError::EmptyPartition {
                    number,
                    name: partition.name.clone(),
                });
            }
            let too_large = || GptError::PartitionTooLarge {
                number,
                name: partition.name.clone(),
                length,
            };
            let first_lba = align_up(next_lba * SECTOR, ALIGNMENT).ok_or_else(too_large)? / SECTOR;
            let last_lba = first_lba
                .checked_add(length.div_ceil(SECTOR) - 1)
                .ok_or_else(too_large)?;
            // So that the smallest disk's size, below, is a u64 too.
            (last_lba + 1 + BACKUP_SECTORS)
                .checked_mul(SECTOR)
                .and_then(|needed| align_up(needed, ALIGNMENT))
                .ok_or_else(too_large)?;
            next_lba = last_lba + 1;
            placed.push(Placed {
                number,
                name: partition.name.clone(),
                type_guid: partition.type_guid,
                unique_guid: Guid(self.seed.guid(&format!("gpt partition {number}"))),
                attributes: partition.attributes,
                first_lba,
                last_lba,
                content: partition.content.clone(),
            });
        }
        // Checked for each partition above.
        let needed = (next_lba + BACKUP_SECTORS) * SECTOR;
        let default = needed.next_multiple_of(ALIGNMENT);
        let size = match self.size {
            None => default,
            Some(size) if size % SECTOR != 0 => return Err(GptError::UnalignedSize { size }),
            Some(given) if given < needed => {
                return Err(GptError::TooSmall {
                    given,
                    needed,
                    default,
                });
            }
            Some(size) => size,
        };
        Ok(Layout {
            size,
            disk_guid: Guid(self.seed.guid("gpt disk")),
            partitions: placed,
            boot_code: self.boot_code.unwrap_or([0; 440]),
        })
    }
}

/// `value` rounded up to a multiple of `alignment`, if it fits.
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value.checked_next_multiple_of(alignment)
}

impl Layout {
    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The disk's GUID, from the seed.
    pub fn disk_guid(&self) -> Guid {
        self.disk_guid
    }

    /// The partitions, in the order given, where they landed.
    pub fn partitions(&self) -> &[Placed] {
        &self.partitions
    }

    /// The disk's size in sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }

    /// Writes the whole disk to `out`, zeros included, front to back.
    pub fn write_to<W: Write>(&self, out: W) -> Result<(), GptError> {
        self.stream(&mut Dense { out })
    }

    /// Writes the whole disk into `file`, which is truncated first, leaving
    /// runs of zeros (between partitions, and inside their contents) as
    /// holes. The file reads back exactly as [`Layout::write_to`] writes.
    pub fn write_sparse(&self, file: &mut File) -> Result<(), GptError> {
        file.set_len(0).map_err(GptError::Write)?;
        file.seek(SeekFrom::Start(0)).map_err(GptError::Write)?;
        self.stream(&mut Sparse { file })?;
        // The backup header is the last sector and is never all zeros, so
        // the file already has its full length; this only makes it certain.
        file.set_len(self.size).map_err(GptError::Write)
    }

    fn stream(&self, sink: &mut dyn Sink) -> Result<(), GptError> {
        let entries = self.entries();
        let entries_crc = crc32fast::hash(&entries);
        let last_lba = self.sectors() - 1;
        let backup_entries_lba = last_lba - ENTRY_SECTORS;

        let mut position = 0;
        sink.data(&self.protective_mbr())?;
        sink.data(&self.header(1, last_lba, 2, entries_crc))?;
        sink.data(&entries)?;
        position += FIRST_USABLE_LBA * SECTOR;
        for partition in &self.partitions {
            sink.zeros(partition.offset() - position)?;
            position = partition.offset();
            match &partition.content {
                Content::File { path, length } => {
                    copy_file(partition.number, path, *length, sink)?;
                    sink.zeros(partition.size() - length)?;
                }
                Content::Zeros(_) => sink.zeros(partition.size())?,
            }
            position += partition.size();
        }
        sink.zeros(backup_entries_lba * SECTOR - position)?;
        sink.data(&entries)?;
        sink.data(&self.header(last_lba, 1, backup_entries_lba, entries_crc))
    }

    /// Sector 0: the boot code and one partition of type 0xEE from LBA 1 to
    /// the end of the disk, or 0xFFFFFFFF sectors when the disk is larger
    /// than an MBR can say (UEFI 5.2.3).
    fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        let mut sector = [0; SECTOR as usize];
        sector[..440].copy_from_slice(&self.boot_code);
        let sectors = u32::try_from(self.sectors() - 1).unwrap_or(u32::MAX);
        let entry = &mut sector[446..462];
        entry[0] = 0; // not active: see the module's documentation
        entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        entry[4] = PROTECTIVE_TYPE;
        entry[5..8].copy_from_slice(&chs(self.sectors() - 1));
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xaa;
        sector
    }

    /// A header sector: the primary at LBA 1, the backup at the last LBA.
    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let mut sector = [0; SECTOR as usize];
        let last_usable_lba = self.sectors() - 1 - BACKUP_SECTORS;
        sector[0..8].copy_from_slice(SIGNATURE);
        sector[8..12].copy_from_slice(&REVISION.to_le_bytes());
        sector[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20: the header's CRC, computed below over the header with
        // this field zero; 20..24 reserved.
        sector[24..32].copy_from_slice(&my_lba.to_le_bytes());
        sector[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        sector[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes());
        sector[48..56].copy_from_slice(&last_usable_lba.to_le_bytes());
        sector[56..72].copy_from_slice(&self.disk_guid.0);
        sector[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        sector[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        sector[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        sector[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&sector[..HEADER_SIZE as usize]);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
        sector
    }

    /// The partition entry array; unused entries are zero.
    fn entries(&self) -> Vec<u8> {
        let mut entries = vec![0; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        for (partition, entry) in self
            .partitions
            .iter()
            .zip(entries.chunks_exact_mut(ENTRY_SIZE as usize))
        {
            entry[0..16].copy_from_slice(&partition.type_guid.0);
            entry[16..32].copy_from_slice(&partition.unique_guid.0);
            entry[32..40].copy_from_slice(&partition.first_lba.to_le_bytes());
            entry[40..48].copy_from_slice(&partition.last_lba.to_le_bytes());
            entry[48..56].copy_from_slice(&partition.attributes.to_le_bytes());
            for (unit, bytes) in partition
                .name
                .encode_utf16()
                .zip(entry[56..].chunks_exact_mut(2))
            {
                bytes.copy_from_slice(&unit.to_le_bytes());
            }
        }
        entries
    }
}

/// The CHS address of `lba` in the conventional 255-head, 63-sector
/// geometry, or the "too large" marker 0xFFFFFF past what CHS can hold.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xff, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 8) as u8) << 6),
        cylinder as u8,
    ]
}

/// Streams the first `length` bytes of a partition's content file.
fn copy_file(number: u32, path: &Path, length: u64, sink: &mut dyn Sink) -> Result<(), GptError> {
    crate::stream_file(path, length, false, |chunk| sink.data(chunk)).map_err(|error| match error {
        crate::Streamed::Read(source) => GptError::ReadContent {
            number,
            path: path.to_path_buf(),
            source,
        },
        crate::Streamed::Length { read } => GptError::ContentShort {
            number,
            path: path.to_path_buf(),
            read,
            expected: length,
        },
        crate::Streamed::Put(error) => error,
    })
}

/// Where the disk's bytes go: zeros are announced apart so that a file can
/// leave them as holes.
trait Sink {
    fn data(&mut self, bytes: &[u8]) -> Result<(), GptError>;
    fn zeros(&mut self, length: u64) -> Result<(), GptError>;
}

/// Every byte written, zeros included.
struct Dense<W> {
    out: W,
}

impl<W: Write> Sink for Dense<W> {
    fn data(&mut self, bytes: &[u8]) -> Result<(), GptError> {
        self.out.write_all(bytes).map_err(GptError::Write)
    }

    fn zeros(&mut self, mut length: u64) -> Result<(), GptError> {
        let zeros = vec![0; CHUNK.min(length as usize)];
        while length > 0 {
            let part = length.min(CHUNK as u64) as usize;
            self.data(&zeros[..part])?;
            length -= part as u64;
        }
        Ok(())
    }
}

/// A file where zeros are skipped over, leaving holes. Data written in
/// whole blocks of zeros is skipped too (a FAT image is mostly zeros).
struct Sparse<'a> {
    file: &'a mut File,
}

impl Sink for Sparse<'_> {
    fn data(&mut self, bytes: &[u8]) -> Result<(), GptError> {
        for block in bytes.chunks(HOLE) {
            if block.len() == HOLE && block.iter().all(|&byte| byte == 0) {
                self.zeros(HOLE as u64)?;
            } else {
                self.file.write_all(block).map_err(GptError::Write)?;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, length: u64) -> Result<(), GptError> {
        let length = i64::try_from(length)
            .map_err(|_| GptError::Write(io::Error::other("a run of zeros past 8 EiB")))?;
        self.file
            .seek(SeekFrom::Current(length))
            .map(drop)
            .map_err(GptError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{skip, tool_or_skip};
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;

    /// Runs `tool` with `args`, asserts that it succeeded, returns stdout.
    fn run(tool: &Path, args: &[&str], dir: &Path) -> String {
        let output = Command::new(tool)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|error| panic!("running {}: {error}", tool.display()));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{} {args:?} failed ({}):\n{stdout}\n{}",
            tool.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// `length` bytes that differ from sector to sector, so a partition
    /// read at the wrong offset cannot match.
    fn pattern(length: usize, salt: u32) -> Vec<u8> {
        let mut state = 0x9e37_79b9u32 ^ salt;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    /// An ESP (its length not a whole number of sectors, and LEGACY BIOS
    /// bootable), a root partition and a partition of zeros.
    fn sample(dir: &Path) -> Disk {
        let esp = dir.join("esp.img");
        fs::write(&esp, pattern(MIB as usize + 1000, 1)).unwrap();
        let root = dir.join("root.img");
        fs::write(&root, pattern(3 * MIB as usize, 2)).unwrap();
        Disk {
            seed: Seed::of(&[b"gpt test"]),
            boot_code: Some([0xfa; 440]),
            partitions: vec![
                Partition {
                    name: "EFI system".into(),
                    type_guid: EFI_SYSTEM_PARTITION,
                    attributes: LEGACY_BIOS_BOOTABLE,
                    content: Content::File {
                        path: esp,
                        length: MIB + 1000,
                    },
                },
                Partition {
                    name: "berth root ✓".into(),
                    type_guid: LINUX_FILESYSTEM,
                    attributes: 0,
                    content: Content::File {
                        path: root,
                        length: 3 * MIB,
                    },
                },
                Partition {
                    name: "bios".into(),
                    type_guid: BIOS_BOOT,
                    attributes: 0,
                    content: Content::Zeros(100 * SECTOR),
                },
            ],
            size: None,
        }
    }

    /// Writes `layout` sparsely to `dir/name` and returns its path.
    fn write_file(layout: &Layout, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let mut file = File::create(&path).unwrap();
        layout.write_sparse(&mut file).unwrap();
        path
    }

    /// The layout of [`sample`], written to `dir/disk.raw`.
    fn sample_on_disk(dir: &Path) -> Layout {
        let layout = sample(dir).layout().unwrap();
        write_file(&layout, dir, "disk.raw");
        layout
    }

    fn assert_sgdisk_finds_no_problems(sgdisk: &Path, dir: &Path) {
        let verify = run(sgdisk, &["-v", "disk.raw"], dir);
        assert!(verify.contains("No problems found."), "{verify}");
    }

    #[test]
    fn guid_constants_print_as_their_specifications_write_them() {
        assert_eq!(
            EFI_SYSTEM_PARTITION.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(
            LINUX_FILESYSTEM.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        assert_eq!(
            BIOS_BOOT.to_string(),
            "21686148-6449-6E6F-744E-656564454649"
        );
        // The on-disk order: "Hah!IdontNeedEFI" is how the BIOS boot GUID
        // reads as bytes.
        assert_eq!(&BIOS_BOOT.0, b"Hah!IdontNeedEFI");
    }

    #[test]
    fn partitions_start_on_mebibytes_and_the_default_size_is_the_smallest_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(dir.path()).layout().unwrap();
        let starts: Vec<(u64, u64)> = layout
            .partitions()
            .iter()
            .map(|partition| (partition.first_lba, partition.last_lba))
            .collect();
        // 1 MiB + 1000 bytes is 2050 sectors; the next partition starts on
        // the next MiB (LBA 6144 = 3 MiB).
        assert_eq!(
            starts,
            [
                (2048, 2048 + 2050 - 1),
                (6144, 6144 + 6144 - 1),
                (12288, 12387)
            ]
        );
        assert_eq!(layout.partitions()[1].offset(), 3 * MIB);
        assert_eq!(layout.partitions()[1].size(), 3 * MIB);
        // The last partition ends at 12388 sectors; with 33 backup sectors
        // that is just over 6 MiB, rounded up to 7 MiB.
        assert_eq!(layout.size(), 7 * MIB);
        assert_ne!(layout.partitions()[0].unique_guid, layout.disk_guid());
        assert_ne!(
            layout.partitions()[0].unique_guid,
            layout.partitions()[1].unique_guid
        );
    }

    #[test]
    fn sgdisk_finds_no_problems_and_reads_back_every_field() {
        let Some(sgdisk) = tool_or_skip("sgdisk") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let layout = sample_on_disk(dir.path());
        assert_sgdisk_finds_no_problems(&sgdisk, dir.path());
        let print = run(&sgdisk, &["-p", "disk.raw"], dir.path());
        assert!(
            print.contains(&format!("Disk identifier (GUID): {}", layout.disk_guid())),
            "{print}"
        );
        let names = ["EFI system", "berth root ✓", "bios"];
        let types = [
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)",
            "21686148-6449-6E6F-744E-656564454649 (BIOS boot partition)",
        ];
        let attributes = ["0000000000000004", "0000000000000000", "0000000000000000"];
        for (index, partition) in layout.partitions().iter().enumerate() {
            let info = run(
                &sgdisk,
                &["-i", &partition.number.to_string(), "disk.raw"],
                dir.path(),
            );
            for expected in [
                format!("Partition GUID code: {}", types[index]),
                format!("Partition unique GUID: {}", partition.unique_guid),
                format!("First sector: {} ", partition.first_lba),
                format!("Last sector: {} ", partition.last_lba),
                format!("Attribute flags: {}", attributes[index]),
                format!("Partition name: '{}'", names[index]),
            ] {
                assert!(info.contains(&expected), "no {expected:?} in:\n{info}");
            }
        }
    }

    #[test]
    fn sfdisk_verifies_and_dumps_the_partitions_and_fdisk_lists_them() {
        let (Some(sfdisk), Some(fdisk)) = (tool_or_skip("sfdisk"), tool_or_skip("fdisk")) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let layout = sample_on_disk(dir.path());
        let verify = run(&sfdisk, &["--verify", "disk.raw"], dir.path());
        assert!(verify.contains("No errors detected."), "{verify}");
        let dump = run(&sfdisk, &["--dump", "disk.raw"], dir.path());
        let [esp, root, bios] = layout.partitions() else {
            panic!("three partitions");
        };
        let expected = format!(
            "label: gpt
label-id: {disk}
device: disk.raw
unit: sectors
first-lba: 34
last-lba: {last_usable}
sector-size: 512

disk.raw1 : start=        2048, size=        2050, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={esp}, name=\"EFI system\", attrs=\"LegacyBIOSBootable\"
disk.raw2 : start=        6144, size=        6144, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid={root}, name=\"berth root \\xe2\\x9c\\x93\"
disk.raw3 : start=       12288, size=         100, type=21686148-6449-6E6F-744E-656564454649, uuid={bios}, name=\"bios\"
",
            disk = layout.disk_guid(),
            last_usable = layout.sectors() - 34,
            esp = esp.unique_guid,
            root = root.unique_guid,
            bios = bios.unique_guid,
        );
        // sfdisk prints the name's UTF-8 bytes escaped: ✓ is E2 9C 93.
        assert_eq!(dump, expected);
        // Columns are padded to the widest value: compared word by word.
        let list: Vec<String> = run(&fdisk, &["-l", "disk.raw"], dir.path())
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for expected in [
            "Disklabel type: gpt".to_string(),
            format!("Disk identifier: {}", layout.disk_guid()),
            "disk.raw1 2048 4097 2050 1M EFI System".into(),
            "disk.raw2 6144 12287 6144 3M Linux filesystem".into(),
            "disk.raw3 12288 12387 100 50K BIOS boot".into(),
        ] {
            assert!(list.contains(&expected), "no {expected:?} in:\n{list:#?}");
        }
    }

    #[test]
    fn contents_read_back_at_their_offsets_and_the_disk_repeats_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let disk = sample(dir.path());
        let layout = disk.layout().unwrap();
        let sparse = fs::read(write_file(&layout, dir.path(), "disk.raw")).unwrap();
        assert_eq!(sparse.len() as u64, layout.size());
        for partition in layout.partitions() {
            let on_disk = &sparse[partition.offset() as usize..][..partition.size() as usize];
            let content = match &partition.content {
                Content::File { path, .. } => fs::read(path).unwrap(),
                Content::Zeros(length) => vec![0; *length as usize],
            };
            assert_eq!(&on_disk[..content.len()], content, "{}", partition.name);
            assert!(on_disk[content.len()..].iter().all(|&byte| byte == 0));
        }
        assert_eq!(&sparse[..440], &[0xfa; 440], "boot code");
        assert_eq!(&sparse[510..512], &[0x55, 0xaa]);

        // The stream and the sparse file are the same bytes, and so are two
        // writes from the same inputs.
        let mut dense = Vec::new();
        layout.write_to(&mut dense).unwrap();
        assert!(dense == sparse, "write_to and write_sparse differ");
        let mut again = Vec::new();
        disk.layout().unwrap().write_to(&mut again).unwrap();
        assert!(again == dense, "two writes differ");

        // Another seed: other GUIDs, so other bytes.
        let other = Disk {
            seed: Seed::of(&[b"another"]),
            ..disk
        };
        let mut differs = Vec::new();
        other.layout().unwrap().write_to(&mut differs).unwrap();
        assert!(differs != dense);
    }

    #[test]
    fn zero_regions_are_holes_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = sample(dir.path());
        disk.size = Some(64 * MIB);
        let layout = disk.layout().unwrap();
        let path = write_file(&layout, dir.path(), "disk.raw");
        let metadata = fs::metadata(path).unwrap();
        assert_eq!(metadata.len(), 64 * MIB);
        // About 4 MiB of data (the two files, the tables); the rest holes.
        let allocated = metadata.blocks() * 512;
        assert!(allocated < 8 * MIB, "{allocated} bytes allocated");
    }

    #[test]
    fn the_primary_and_backup_headers_agree_and_carry_right_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(dir.path()).layout().unwrap();
        let mut bytes = Vec::new();
        layout.write_to(&mut bytes).unwrap();
        let last = layout.sectors() - 1;
        let primary = &bytes[512..1024];
        let backup = &bytes[(last * SECTOR) as usize..];
        let field =
            |header: &[u8], at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
        assert_eq!((field(primary, 24), field(primary, 32)), (1, last));
        assert_eq!((field(backup, 24), field(backup, 32)), (last, 1));
        assert_eq!(field(primary, 72), 2);
        assert_eq!(field(backup, 72), last - 32);
        for header in [primary, backup] {
            let mut zeroed = header[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(header[16..20], crc32fast::hash(&zeroed).to_le_bytes());
            let entries_lba = field(header, 72) as usize;
            let entries = &bytes[entries_lba * 512..][..16384];
            assert_eq!(header[88..92], crc32fast::hash(entries).to_le_bytes());
        }
        // The protective MBR covers the disk from LBA 1, not active.
        let entry = &bytes[446..462];
        assert_eq!(entry[0], 0);
        assert_eq!(entry[4], 0xee);
        assert_eq!(entry[8..12], 1u32.to_le_bytes());
        assert_eq!(entry[12..16], (last as u32).to_le_bytes());
    }

    #[test]
    fn a_disk_too_small_names_the_size_given_and_the_size_needed() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = sample(dir.path());
        // The last partition ends at LBA 12387; 33 backup sectors follow.
        let needed = (12388 + 33) * SECTOR;
        disk.size = Some(needed);
        assert_eq!(disk.layout().unwrap().size(), needed);
        disk.size = Some(needed - SECTOR);
        let error = disk.layout().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "a disk of {} bytes is too small for its partitions: it needs at least {needed} bytes (the default size would be {} bytes)",
                needed - SECTOR,
                7 * MIB
            )
        );
        disk.size = Some(needed + 1);
        assert_eq!(
            disk.layout().unwrap_err().to_string(),
            format!(
                "disk size {} bytes is not a multiple of the 512-byte sector",
                needed + 1
            )
        );
    }

    #[test]
    fn bad_partitions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let check = |change: &dyn Fn(&mut Disk), expected: &str| {
            let mut disk = sample(dir.path());
            change(&mut disk);
            assert_eq!(disk.layout().unwrap_err().to_string(), expected);
        };
        check(
            &|disk| disk.partitions[1].name = "x".repeat(37),
            &format!(
                "partition 2's name {:?} is 37 UTF-16 units long, at most 36 fit",
                "x".repeat(37)
            ),
        );
        check(
            &|disk| disk.partitions[2].content = Content::Zeros(0),
            "partition 3 (\"bios\") is empty: a partition needs at least one sector",
        );
        check(
            &|disk| disk.partitions[1].attributes = LEGACY_BIOS_BOOTABLE,
            "2 partitions are marked legacy BIOS bootable (EFI system, berth root ✓): the BIOS boot code boots exactly one",
        );
        check(
            &|disk| disk.partitions[2].content = Content::Zeros(u64::MAX - MIB),
            &format!(
                "partition 3 (\"bios\") of {} bytes does not fit on a disk of at most 2^64 bytes",
                u64::MAX - MIB
            ),
        );
        check(
            &|disk| {
                let partition = disk.partitions[2].clone();
                disk.partitions = vec![partition; 129];
            },
            "129 partitions given, a GPT disk holds at most 128",
        );
    }

    #[test]
    fn a_content_file_shorter_than_declared_is_named_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = sample(dir.path());
        let Content::File { path, .. } = disk.partitions[1].content.clone() else {
            panic!("a file");
        };
        disk.partitions[1].content = Content::File {
            path: path.clone(),
            length: 3 * MIB + 1,
        };
        let error = disk.layout().unwrap().write_to(io::sink()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "partition 2's content {} ended after {} bytes, {} were expected",
                path.display(),
                3 * MIB,
                3 * MIB + 1
            )
        );
        disk.partitions[1].content = Content::File {
            path: dir.path().join("missing.img"),
            length: 1,
        };
        let error = disk.layout().unwrap().write_to(io::sink()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "reading partition 2's content {}",
                dir.path().join("missing.img").display()
            )
        );
    }

    #[test]
    fn a_disk_past_2_tib_saturates_the_protective_mbr_and_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = sample(dir.path());
        let size = 3 << 40;
        disk.size = Some(size);
        let layout = disk.layout().unwrap();
        let path = write_file(&layout, dir.path(), "disk.raw");
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.len(), size);
        assert!(metadata.blocks() * 512 < 8 * MIB);
        let mut file = File::open(&path).unwrap();
        let mut mbr = [0; 512];
        file.read_exact(&mut mbr).unwrap();
        assert_eq!(mbr[458..462], [0xff; 4], "0xFFFFFFFF sectors");
        assert_eq!(mbr[451..454], [0xff; 3], "CHS past what CHS can hold");
        let mut backup = [0; 512];
        file.seek(SeekFrom::Start(size - 512)).unwrap();
        file.read_exact(&mut backup).unwrap();
        assert_eq!(&backup[..8], b"EFI PART");
        if let Some(sgdisk) = tool_or_skip("sgdisk") {
            assert_sgdisk_finds_no_problems(&sgdisk, dir.path());
            let print = run(&sgdisk, &["-p", "disk.raw"], dir.path());
            let sectors = format!("Disk disk.raw: {} sectors, 3.0 TiB", size / 512);
            assert!(print.contains(&sectors), "{print}");
        }
    }

    /// `path` inside Debian package `package`, downloaded with `apt-get
    /// download` and unpacked with `dpkg-deb -x` into `dir`; `None` with a
    /// visible skip when apt cannot give it.
    fn debian_file(package: &str, path: &str, dir: &Path) -> Option<PathBuf> {
        let (Some(apt), Some(dpkg)) = (tool_or_skip("apt-get"), tool_or_skip("dpkg-deb")) else {
            return None;
        };
        let download = Command::new(apt)
            .args(["download", package])
            .current_dir(dir)
            .output()
            .unwrap();
        if !download.status.success() {
            skip(&format!(
                "apt-get download {package} failed: {}",
                String::from_utf8_lossy(&download.stderr).trim()
            ));
            return None;
        }
        let deb = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|deb| {
                let name = deb.file_name().unwrap().to_string_lossy();
                name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
            })
            .unwrap_or_else(|| panic!("apt-get download {package} wrote no .deb"));
        let root = dir.join(package);
        run(
            &dpkg,
            &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
            dir,
        );
        let file = root.join(path);
        assert!(file.is_file(), "{package} has no {path}");
        Some(file)
    }

    /// Boots `disk` in QEMU under TCG until the serial console shows
    /// `expected`, or panics with the transcript and the command line after
    /// `limit`. `firmware` are the arguments choosing the firmware.
    fn boot_until(disk: &Path, firmware: &[String], expected: &str, limit: Duration) {
        let Some(qemu) = tool_or_skip("qemu-system-x86_64") else {
            return;
        };
        let mut command = Command::new(qemu);
        command
            .args([
                "-accel",
                "tcg",
                "-machine",
                "q35",
                "-m",
                "256",
                "-nographic",
            ])
            .args(["-no-reboot", "-nodefaults", "-serial", "stdio"])
            .args(firmware)
            .arg("-drive")
            .arg(format!("file={},format=raw", disk.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let transcript = read_until(&mut child, expected, limit);
        // Our own child, by its handle.
        child.kill().ok();
        child.wait().ok();
        assert!(
            transcript.contains(expected),
            "no {expected:?} on the serial console within {limit:?}\ncommand: {command:?}\ntranscript:\n{transcript}"
        );
        for line in transcript.lines().filter(|line| line.contains(expected)) {
            eprintln!("serial console: {line:?}");
        }
    }

    /// What `child` writes to stdout until `expected` shows or `limit`
    /// passes.
    fn read_until(child: &mut Child, expected: &str, limit: Duration) -> String {
        let mut stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = stdout.read(&mut buffer) {
                if sender.send(buffer[..read].to_vec()).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + limit;
        let mut transcript = Vec::new();
        while !String::from_utf8_lossy(&transcript).contains(expected) {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(bytes) => transcript.extend(bytes),
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&transcript).into_owned()
    }

    #[test]
    fn ovmf_starts_the_boot_loader_on_the_esp() {
        let ovmf = Path::new("/usr/share/OVMF");
        let (code, vars) = (ovmf.join("OVMF_CODE_4M.fd"), ovmf.join("OVMF_VARS_4M.fd"));
        if !code.is_file() || !vars.is_file() {
            skip("OVMF is not installed (package ovmf)");
            return;
        }
        let (Some(mkfs), Some(mmd), Some(mcopy)) = (
            tool_or_skip("mkfs.vfat"),
            tool_or_skip("mmd"),
            tool_or_skip("mcopy"),
        ) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let Some(loader) = debian_file(
            "systemd-boot-efi",
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            dir.path(),
        ) else {
            return;
        };
        // The ESP, made by the test tools: berth's own FAT writer is not
        // what this test is about.
        let esp = dir.path().join("esp.img");
        run(&mkfs, &["-C", "esp.img", "8192"], dir.path());
        let image = format!("{}", esp.display());
        run(
            &mmd,
            &[
                "-i",
                &image,
                "::EFI",
                "::EFI/BOOT",
                "::loader",
                "::loader/entries",
            ],
            dir.path(),
        );
        // An entry whose title only systemd-boot, reading it from the ESP,
        // can put on the console, and a menu shown until a key is pressed.
        fs::write(
            dir.path().join("berth.conf"),
            "title berth GPT test entry\nlinux /EFI/BOOT/BOOTX64.EFI\n",
        )
        .unwrap();
        fs::write(dir.path().join("loader.conf"), "timeout menu-force\n").unwrap();
        for (file, on_esp) in [
            ("berth.conf", "::loader/entries/berth.conf"),
            ("loader.conf", "::loader/loader.conf"),
        ] {
            run(&mcopy, &["-i", &image, file, on_esp], dir.path());
        }
        run(
            &mcopy,
            &[
                "-i",
                &image,
                loader.to_str().unwrap(),
                "::EFI/BOOT/BOOTX64.EFI",
            ],
            dir.path(),
        );
        let length = fs::metadata(&esp).unwrap().len();
        let disk = Disk {
            seed: Seed::of(&[b"ovmf boot test"]),
            boot_code: None,
            partitions: vec![Partition {
                name: "EFI system".into(),
                type_guid: EFI_SYSTEM_PARTITION,
                attributes: 0,
                content: Content::File { path: esp, length },
            }],
            size: None,
        };
        write_file(&disk.layout().unwrap(), dir.path(), "disk.raw");
        let vars_copy = dir.path().join("OVMF_VARS_4M.fd");
        fs::copy(&vars, &vars_copy).unwrap();
        let firmware = [
            "-drive".to_string(),
            format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
            "-drive".to_string(),
            format!("if=pflash,format=raw,file={}", vars_copy.display()),
        ];
        boot_until(
            &dir.path().join("disk.raw"),
            &firmware,
            "berth GPT test entry",
            Duration::from_secs(120),
        );
    }

    /// A boot sector that writes `message` to the first serial port and
    /// halts: `mov dx, 0x3f8`, then `mov al, byte; out dx, al` for each
    /// byte, then `hlt; jmp back to hlt`.
    fn serial_boot_sector(message: &str) -> Vec<u8> {
        let mut code = vec![0xba, 0xf8, 0x03];
        for byte in message.bytes() {
            code.extend([0xb0, byte, 0xee]);
        }
        code.extend([0xf4, 0xeb, 0xfd]);
        assert!(code.len() <= 510, "message too long for a boot sector");
        code.resize(510, 0);
        code.extend([0x55, 0xaa]);
        code
    }

    #[test]
    fn seabios_and_gptmbr_boot_the_legacy_bios_bootable_partition() {
        let dir = tempfile::tempdir().unwrap();
        let Some(gptmbr) = debian_file(
            "syslinux-common",
            "usr/lib/syslinux/mbr/gptmbr.bin",
            dir.path(),
        ) else {
            return;
        };
        let boot_code: [u8; 440] = fs::read(&gptmbr)
            .unwrap()
            .try_into()
            .expect("gptmbr.bin is 440 bytes");
        // Both partitions start with a boot sector, so that booting the
        // wrong one shows.
        let mut partitions = Vec::new();
        for (number, (message, attributes)) in [
            ("the partition without the attribute was booted\r\n", 0),
            (
                "berth: the legacy BIOS bootable partition was booted\r\n",
                LEGACY_BIOS_BOOTABLE,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("partition{number}.img"));
            let mut content = serial_boot_sector(message);
            content.resize(64 * 1024, 0);
            fs::write(&path, &content).unwrap();
            partitions.push(Partition {
                name: format!("partition {number}"),
                type_guid: LINUX_FILESYSTEM,
                attributes,
                content: Content::File {
                    path,
                    length: content.len() as u64,
                },
            });
        }
        let disk = Disk {
            seed: Seed::of(&[b"seabios boot test"]),
            boot_code: Some(boot_code),
            partitions,
            size: None,
        };
        write_file(&disk.layout().unwrap(), dir.path(), "disk.raw");
        boot_until(
            &dir.path().join("disk.raw"),
            &[],
            "berth: the legacy BIOS bootable partition was booted",
            Duration::from_secs(60),
        );
    }
}
