//! The hybrid ISO: one image that boots on BIOS and UEFI firmware, both as
//! a CD and as a USB disk.
//!
//! The ISO 9660 volume, its El Torito boot catalog and the isohybrid system
//! area are written here, by hand, rather than with `hadris-iso`: the three
//! have to agree on block addresses (the boot-info table inside the BIOS
//! boot image, the MBR's boot-image address that hadris-iso 2.5 leaves out,
//! the MBR and GPT partitions over the EFI image), and laying the volume out
//! in one place makes that agreement, and deterministic bytes, easy to see.
//! Files are streamed from their sources in one pass; only the BIOS boot
//! image (isolinux.bin, tens of KiB) is read into memory, to patch its
//! boot-info table.
//!
//! The layout follows what `xorriso -as mkisofs -isohybrid-mbr …
//! -isohybrid-gpt-basdat` writes (the layout of Debian's installer images):
//!
//! - 2048-byte blocks 0-15, the system area: isohybrid's MBR (its code, the
//!   boot image's address in 512-byte sectors at offset 432, a disk
//!   signature, an active partition 1 of type 0 over the whole image from
//!   sector 0, a partition 2 of type 0xEF over the EFI image) and a GPT
//!   (header at sector 1, 248 entries in sectors 2-63) with the same two
//!   partitions, overlapping as xorriso's do. The MBR holds no 0xEE
//!   partition, so firmware and Linux use the MBR; the GPT is for readers
//!   that look for one regardless (Macs, some firmware). Where xorriso
//!   marks the EFI image as Basic Data, it is an EFI System Partition here,
//!   which is what it is.
//! - block 16 the primary volume descriptor, 17 El Torito's boot record,
//!   18 the terminator; then the path tables, the directories, the boot
//!   catalog, the EFI image and the files.
//! - padding up to a multiple of 1 MiB (64 heads × 32 sectors, the CHS
//!   geometry the MBR is written for, as isohybrid and xorriso pad), ending
//!   with the backup GPT; the volume's size counts the padding.
//!
//! El Torito counts an image's length in 512-byte sectors in 16 bits, so an
//! EFI image larger than 65535 sectors (32 MiB) gets a count of 0, as
//! xorriso records it: UEFI firmware (EDK2's El Torito reader) then takes
//! the boot image to extend to the end of the medium, and the FAT inside
//! knows its own size; from a USB disk, firmware finds the same FAT through
//! MBR partition 2, whose size is exact.
//!
//! Names are plain ISO 9660 (level 2: d-characters, upper case, `;1`), with
//! no Rock Ridge or Joliet: isolinux matches names without regard to case,
//! so a configuration that names `/boot/kernel` finds `BOOT/KERNEL;1`, and
//! Linux shows them in lower case without `;1` (its default `map=normal`).
//! The boot catalog and the EFI image are not named in the tree. Which
//! files go in, and what isolinux.cfg says, is the caller's.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::Seed;

const BLOCK: u64 = 2048;
const SECTOR: u64 = 512;
/// Blocks 0-15 are the system area, then the volume descriptors.
const PVD_BLOCK: u32 = 16;
/// isohybrid's MBR code, before the boot image's address.
const MBR_CODE_LEN: usize = 432;
/// 64 heads × 32 sectors: the MBR's geometry, and the image's size unit.
const HEADS: u64 = 64;
const SECTORS_PER_TRACK: u64 = 32;
const CYLINDER: u64 = HEADS * SECTORS_PER_TRACK * SECTOR;
/// xorriso's GPT: 248 entries fill sectors 2-63, the rest of the system area.
const GPT_ENTRIES: u64 = 248;
const GPT_ENTRY_LEN: u64 = 128;
const GPT_ENTRY_SECTORS: u64 = GPT_ENTRIES * GPT_ENTRY_LEN / SECTOR;
/// Sectors the backup GPT takes at the end: its entries and its header.
const GPT_BACKUP_SECTORS: u64 = GPT_ENTRY_SECTORS + 1;
/// The BIOS boot image as isolinux wants it loaded: 4 sectors of 512 bytes.
const BIOS_LOAD_SECTORS: u16 = 4;
/// The boot-info table's place in the BIOS boot image (El Torito as
/// mkisofs extended it): 56 bytes at offset 8, checksum from byte 64.
const BOOT_INFO_OFFSET: usize = 8;
const BOOT_INFO_END: usize = 64;
/// ISO 9660 level 2: a file's name and extension together, and a
/// directory's name, at most 30 and 31 characters; 8 directory levels.
const MAX_FILE_NAME: usize = 30;
const MAX_DIRECTORY_NAME: usize = 31;
const MAX_DEPTH: usize = 8;
/// A directory record's date holds the year as years since 1900 in a byte.
const LAST_YEAR: u64 = 1900 + 255;

/// GPT partition types, in GPT's byte order.
const GPT_BASIC_DATA: [u8; 16] = guid_bytes(0xEBD0A0A2, 0xB9E5, 0x4433, 0x87C0_68B6B72699C7);
const GPT_EFI_SYSTEM: [u8; 16] = guid_bytes(0xC12A7328, 0xF81F, 0x11D2, 0xBA4B_00A0C93EC93B);
/// GPT attributes of both partitions, as xorriso sets them: required by
/// the platform (bit 0) and read-only (bit 60).
const GPT_ATTRIBUTES: u64 = 1 << 60 | 1;

/// A bad input or a failed read or write; each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("volume label {label:?} is not valid for ISO 9660: {reason}")]
    Label { label: String, reason: &'static str },
    #[error("ISO path {path:?} is not valid for ISO 9660: {reason}")]
    Path { path: String, reason: String },
    #[error(
        "ISO path {path:?} is given twice, or as both a file and a directory (names are stored in upper case)"
    )]
    Duplicate { path: String },
    #[error("the BIOS boot image {path:?} is not one of the ISO's files")]
    NoBootImage { path: String },
    #[error("the BIOS boot image {} is {size} bytes, too small to hold a boot-info table", path.display())]
    BootImageTooSmall { path: PathBuf, size: u64 },
    #[error("the EFI boot image {} is empty", path.display())]
    EmptyEfiImage { path: PathBuf },
    #[error("isohybrid MBR code is {size} bytes; it needs at least {MBR_CODE_LEN}")]
    MbrCode { size: usize },
    #[error("{} is {size} bytes; an ISO 9660 file holds at most 4 GiB - 1", path.display())]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error("the ISO would be {size} bytes, more than ISO 9660's 32-bit block addresses reach")]
    ImageTooLarge { size: u64 },
    #[error("mtime {mtime} is after {LAST_YEAR}, the last year ISO 9660 directory records hold")]
    Mtime { mtime: u64 },
    #[error("reading {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} changed while it was written into the ISO: {expected} bytes expected", path.display())]
    Changed { path: PathBuf, expected: u64 },
    #[error("writing the ISO")]
    Write(#[source] io::Error),
}

/// One file of the ISO 9660 tree: where it goes, and where its bytes are.
#[derive(Clone, Debug)]
pub struct IsoFile {
    /// `/`-separated, e.g. `isolinux/isolinux.bin`; stored in upper case.
    pub path: String,
    pub source: PathBuf,
}

/// What a hybrid ISO is made of.
#[derive(Clone, Debug)]
pub struct HybridIso {
    /// The volume identifier: 1-32 ISO 9660 d-characters (`A-Z`, `0-9`, `_`).
    pub label: String,
    /// Where the MBR's disk signature and the GPT's GUIDs come from.
    pub seed: Seed,
    /// Every date in the volume, in Unix seconds.
    pub mtime: u64,
    pub files: Vec<IsoFile>,
    /// Which of `files` is the BIOS El Torito boot image (isolinux.bin),
    /// as its `path` is given there.
    pub bios_boot_image: String,
    /// The EFI El Torito boot image: a FAT image holding
    /// `EFI/BOOT/BOOTX64.EFI`. It is not a file of the ISO 9660 tree.
    pub efi_image: PathBuf,
    /// isohybrid's MBR code (syslinux's `isohdpfx.bin`); its first 432
    /// bytes are used.
    pub mbr_code: Vec<u8>,
}

/// Checks that `label` can be an ISO 9660 volume identifier.
pub fn check_label(label: &str) -> Result<(), IsoError> {
    let reason = if label.is_empty() {
        "it is empty"
    } else if label.len() > 32 {
        "it is longer than 32 characters"
    } else if !label.bytes().all(is_d_character) {
        "only A-Z, 0-9 and _ are allowed"
    } else {
        return Ok(());
    };
    Err(IsoError::Label {
        label: label.to_string(),
        reason,
    })
}

fn is_d_character(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
}

impl HybridIso {
    /// Writes the image to `out`; returns its size in bytes.
    pub fn write(&self, out: impl Write) -> Result<u64, IsoError> {
        check_label(&self.label)?;
        let mbr_code = self.mbr_code.get(..MBR_CODE_LEN).ok_or(IsoError::MbrCode {
            size: self.mbr_code.len(),
        })?;
        let date = Date::of(self.mtime)?;
        let mut tree = Tree::of(&self.files)?;
        let boot_key = iso_components(&self.bios_boot_image)?;
        let boot_file = tree
            .find_file(&boot_key)
            .ok_or_else(|| IsoError::NoBootImage {
                path: self.bios_boot_image.clone(),
            })?;
        let efi_size = source_size(&self.efi_image)?;
        if efi_size == 0 {
            return Err(IsoError::EmptyEfiImage {
                path: self.efi_image.clone(),
            });
        }
        let layout = Layout::of(&mut tree, efi_size, &date)?;

        let mut boot_image = read_boot_image(&tree.files[boot_file])?;
        let boot_lba = tree.files[boot_file].lba;
        patch_boot_info(&mut boot_image, boot_lba);

        let mut out = Output::new(out);
        out.write(&system_area(
            mbr_code, &self.seed, &layout, efi_size, boot_lba,
        ))?;
        out.write(&primary_volume_descriptor(
            &self.label,
            &date,
            &layout,
            &tree,
        ))?;
        out.write(&boot_record(layout.catalog))?;
        out.write(&terminator())?;
        for (lba, endian) in [
            (layout.path_table_l, Endian::Little),
            (layout.path_table_m, Endian::Big),
        ] {
            out.pad_to(u64::from(lba) * BLOCK)?;
            out.write(&path_table(&tree, endian))?;
        }
        for directory in 0..tree.directories.len() {
            out.pad_to(tree.directories[directory].lba as u64 * BLOCK)?;
            out.write(&directory_extent(&tree, directory, &date))?;
        }
        out.pad_to(layout.catalog as u64 * BLOCK)?;
        out.write(&boot_catalog(boot_lba, layout.efi, efi_size))?;
        out.pad_to(layout.efi as u64 * BLOCK)?;
        out.copy(&self.efi_image, efi_size)?;
        for (index, file) in tree.files.iter().enumerate() {
            out.pad_to(file.lba as u64 * BLOCK)?;
            if index == boot_file {
                out.write(&boot_image)?;
            } else {
                out.copy(&file.source, file.size)?;
            }
        }
        let backup_gpt = layout.size - GPT_BACKUP_SECTORS * SECTOR;
        out.pad_to(backup_gpt)?;
        out.write(&gpt_backup(&self.seed, &layout, efi_size))?;
        out.finish()
    }
}

/// The BIOS boot image, whole: its boot-info table is patched in memory.
fn read_boot_image(file: &TreeFile) -> Result<Vec<u8>, IsoError> {
    let mut image = Vec::new();
    File::open(&file.source)
        .and_then(|mut source| source.read_to_end(&mut image))
        .map_err(|source| IsoError::Read {
            path: file.source.clone(),
            source,
        })?;
    if image.len() as u64 != file.size {
        return Err(IsoError::Changed {
            path: file.source.clone(),
            expected: file.size,
        });
    }
    if image.len() < BOOT_INFO_END {
        return Err(IsoError::BootImageTooSmall {
            path: file.source.clone(),
            size: file.size,
        });
    }
    Ok(image)
}

fn source_size(path: &Path) -> Result<u64, IsoError> {
    let size = std::fs::metadata(path)
        .map_err(|source| IsoError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > u64::from(u32::MAX) {
        return Err(IsoError::FileTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(size)
}

/// The caller's path as ISO 9660 identifiers, checked.
fn iso_components(path: &str) -> Result<Vec<String>, IsoError> {
    let bad = |reason: String| IsoError::Path {
        path: path.to_string(),
        reason,
    };
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.is_empty() {
        return Err(bad("it names no file".into()));
    }
    if components.len() > MAX_DEPTH {
        return Err(bad(format!("it is more than {MAX_DEPTH} levels deep")));
    }
    let last = components.len() - 1;
    components
        .iter()
        .enumerate()
        .map(|(index, component)| {
            let name = component.to_ascii_uppercase();
            let (stem, extension) = match name.split_once('.') {
                Some((stem, extension)) if index == last => (stem, extension),
                Some(_) => return Err(bad(format!("directory {component:?} has a dot"))),
                None => (name.as_str(), ""),
            };
            let max = if index == last {
                MAX_FILE_NAME
            } else {
                MAX_DIRECTORY_NAME
            };
            if stem.len() + extension.len() > max || stem.is_empty() && extension.is_empty() {
                return Err(bad(format!(
                    "{component:?} is not 1 to {max} characters long"
                )));
            }
            if !stem.bytes().chain(extension.bytes()).all(is_d_character) {
                return Err(bad(format!(
                    "{component:?} has characters other than letters, digits, _ and one dot"
                )));
            }
            Ok(name)
        })
        .collect()
}

/// The volume's dates, from one Unix time.
struct Date {
    year: u64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Date {
    fn of(mtime: u64) -> Result<Date, IsoError> {
        let days = mtime / 86400;
        let seconds = mtime % 86400;
        let (year, month, day) = archive::clock::civil_from_days(days);
        if year > LAST_YEAR {
            return Err(IsoError::Mtime { mtime });
        }
        Ok(Date {
            year,
            month: month as u8,
            day: day as u8,
            hour: (seconds / 3600) as u8,
            minute: (seconds / 60 % 60) as u8,
            second: (seconds % 60) as u8,
        })
    }

    /// ISO 9660 9.1.5: a directory record's 7 bytes, in UTC.
    fn record(&self) -> [u8; 7] {
        [
            (self.year - 1900) as u8,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            0,
        ]
    }

    /// ISO 9660 8.4.26.1: a volume descriptor's 17 bytes, digits and a
    /// zero offset from UTC.
    fn descriptor(&self) -> [u8; 17] {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        let mut bytes = [0; 17];
        bytes[..16].copy_from_slice(text.as_bytes());
        bytes
    }
}

struct TreeFile {
    identifier: String,
    source: PathBuf,
    size: u64,
    lba: u32,
}

struct Directory {
    identifier: String,
    parent: usize,
    /// Subdirectories and files, sorted by identifier as ISO 9660 9.3 sorts
    /// them (d-characters all sort after the dot, so byte order does).
    children: Vec<(String, Child)>,
    lba: u32,
    blocks: u32,
}

#[derive(Clone, Copy)]
enum Child {
    Directory(usize),
    File(usize),
}

/// The ISO 9660 tree: directories numbered in path table order (by level,
/// then parent, then name), files in the order their data is written.
struct Tree {
    directories: Vec<Directory>,
    files: Vec<TreeFile>,
}

impl Tree {
    fn of(files: &[IsoFile]) -> Result<Tree, IsoError> {
        // First a nested map, sorted by identifier, then numbered breadth
        // first for the path table.
        #[derive(Default)]
        struct Node {
            children: std::collections::BTreeMap<String, Node>,
            file: Option<(PathBuf, u64)>,
        }
        let mut root = Node::default();
        for file in files {
            let components = iso_components(&file.path)?;
            let size = source_size(&file.source)?;
            let duplicate = || IsoError::Duplicate {
                path: file.path.clone(),
            };
            let mut node = &mut root;
            for (index, component) in components.iter().enumerate() {
                if node.file.is_some() {
                    return Err(duplicate());
                }
                node = node.children.entry(component.clone()).or_default();
                if index == components.len() - 1
                    && (node.file.is_some() || !node.children.is_empty())
                {
                    return Err(duplicate());
                }
            }
            node.file = Some((file.source.clone(), size));
        }

        let mut tree = Tree {
            directories: Vec::new(),
            files: Vec::new(),
        };
        let mut queue = std::collections::VecDeque::from([(String::new(), 0, root)]);
        while let Some((identifier, parent, node)) = queue.pop_front() {
            let index = tree.directories.len();
            let mut children = Vec::new();
            for (name, child) in node.children {
                match child.file {
                    Some((source, size)) => {
                        children.push((name.clone(), Child::File(tree.files.len())));
                        tree.files.push(TreeFile {
                            identifier: format!("{name};1"),
                            source,
                            size,
                            lba: 0,
                        });
                    }
                    None => {
                        let number = index + 1 + queue.len();
                        children.push((name.clone(), Child::Directory(number)));
                        queue.push_back((name, index, child));
                    }
                }
            }
            tree.directories.push(Directory {
                identifier,
                parent,
                children,
                lba: 0,
                blocks: 0,
            });
        }
        Ok(tree)
    }

    fn find_file(&self, components: &[String]) -> Option<usize> {
        let mut directory = 0;
        for (index, component) in components.iter().enumerate() {
            let child = self.directories[directory]
                .children
                .iter()
                .find(|(name, _)| name == component)?
                .1;
            match child {
                Child::Directory(next) => directory = next,
                Child::File(file) if index == components.len() - 1 => return Some(file),
                Child::File(_) => return None,
            }
        }
        None
    }

    /// The identifier a child's directory record carries.
    fn child_identifier(&self, child: Child) -> &str {
        match child {
            Child::Directory(directory) => &self.directories[directory].identifier,
            Child::File(file) => &self.files[file].identifier,
        }
    }
}

/// Where everything is, in 2048-byte blocks, and the image's size in bytes.
struct Layout {
    path_table_size: u32,
    path_table_l: u32,
    path_table_m: u32,
    catalog: u32,
    efi: u32,
    blocks: u32,
    size: u64,
}

impl Layout {
    fn of(tree: &mut Tree, efi_size: u64, date: &Date) -> Result<Layout, IsoError> {
        let path_table_size: u64 = tree
            .directories
            .iter()
            .map(|directory| path_table_entry_len(&directory.identifier) as u64)
            .sum();
        let mut next = u64::from(PVD_BLOCK) + 3;
        let mut allocate = |bytes: u64| {
            let start = next;
            next += bytes.div_ceil(BLOCK);
            start
        };
        let path_table_l = allocate(path_table_size);
        let path_table_m = allocate(path_table_size);
        for directory in 0..tree.directories.len() {
            // Records' lengths do not depend on the addresses in them.
            let blocks = (directory_extent(tree, directory, date).len() as u64 / BLOCK) as u32;
            let entry = &mut tree.directories[directory];
            entry.blocks = blocks;
            entry.lba = allocate(u64::from(blocks) * BLOCK) as u32;
        }
        let catalog = allocate(BLOCK);
        let efi = allocate(efi_size);
        for file in &mut tree.files {
            file.lba = allocate(file.size) as u32;
        }
        let size = (next * BLOCK + GPT_BACKUP_SECTORS * SECTOR).next_multiple_of(CYLINDER);
        if size / BLOCK > u64::from(u32::MAX) {
            return Err(IsoError::ImageTooLarge { size });
        }
        Ok(Layout {
            path_table_size: path_table_size as u32,
            path_table_l: path_table_l as u32,
            path_table_m: path_table_m as u32,
            catalog: catalog as u32,
            efi: efi as u32,
            blocks: (size / BLOCK) as u32,
            size,
        })
    }
}

/// The sequential writer: every structure is written at the offset the
/// layout gave it, with zeros between.
struct Output<W: Write> {
    out: BufWriter<W>,
    position: u64,
}

impl<W: Write> Output<W> {
    fn new(out: W) -> Self {
        Output {
            out: BufWriter::with_capacity(1 << 20, out),
            position: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), IsoError> {
        self.out.write_all(bytes).map_err(IsoError::Write)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, offset: u64) -> Result<(), IsoError> {
        let zeros = offset.saturating_sub(self.position);
        io::copy(&mut io::repeat(0).take(zeros), &mut self.out).map_err(IsoError::Write)?;
        self.position += zeros;
        debug_assert_eq!(self.position, offset, "structures overlap");
        Ok(())
    }

    /// Streams `size` bytes of `path`, which must still be that long.
    fn copy(&mut self, path: &Path, size: u64) -> Result<(), IsoError> {
        crate::stream_file(path, size, true, |chunk| self.write(chunk)).map_err(|error| match error
        {
            crate::Streamed::Read(source) => IsoError::Read {
                path: path.to_path_buf(),
                source,
            },
            crate::Streamed::Length { .. } => IsoError::Changed {
                path: path.to_path_buf(),
                expected: size,
            },
            crate::Streamed::Put(error) => error,
        })
    }

    fn finish(mut self) -> Result<u64, IsoError> {
        self.out.flush().map_err(IsoError::Write)?;
        Ok(self.position)
    }
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

fn both_u32(value: u32) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&value.to_le_bytes());
    bytes[4..].copy_from_slice(&value.to_be_bytes());
    bytes
}

fn both_u16(value: u16) -> [u8; 4] {
    let mut bytes = [0; 4];
    bytes[..2].copy_from_slice(&value.to_le_bytes());
    bytes[2..].copy_from_slice(&value.to_be_bytes());
    bytes
}

/// A text field padded with spaces (ISO 9660 a- and d-character fields).
fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(len, b' ');
    bytes
}

/// The identifier bytes of a directory record or path table entry: the
/// root's is a single zero byte.
fn identifier_bytes(identifier: &str) -> &[u8] {
    if identifier.is_empty() {
        &[0]
    } else {
        identifier.as_bytes()
    }
}

fn path_table_entry_len(identifier: &str) -> usize {
    let len = identifier_bytes(identifier).len();
    8 + len + len % 2
}

/// ISO 9660 9.1: a directory record.
fn directory_record(
    identifier: &[u8],
    lba: u32,
    size: u32,
    directory: bool,
    date: &Date,
) -> Vec<u8> {
    let len = 33 + identifier.len() + (identifier.len() + 1) % 2;
    let mut record = Vec::with_capacity(len);
    record.push(len as u8);
    record.push(0);
    record.extend_from_slice(&both_u32(lba));
    record.extend_from_slice(&both_u32(size));
    record.extend_from_slice(&date.record());
    record.push(if directory { 2 } else { 0 });
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(&both_u16(1));
    record.push(identifier.len() as u8);
    record.extend_from_slice(identifier);
    record.resize(len, 0);
    record
}

/// The records of a directory: itself, its parent, then its children.
fn directory_records(tree: &Tree, directory: usize, date: &Date) -> Vec<Vec<u8>> {
    let this = &tree.directories[directory];
    let parent = &tree.directories[this.parent];
    let mut records = vec![
        directory_record(&[0], this.lba, this.blocks * BLOCK as u32, true, date),
        directory_record(&[1], parent.lba, parent.blocks * BLOCK as u32, true, date),
    ];
    for &(_, child) in &this.children {
        let identifier = tree.child_identifier(child).as_bytes();
        records.push(match child {
            Child::Directory(index) => {
                let entry = &tree.directories[index];
                directory_record(
                    identifier,
                    entry.lba,
                    entry.blocks * BLOCK as u32,
                    true,
                    date,
                )
            }
            Child::File(index) => {
                let entry = &tree.files[index];
                directory_record(identifier, entry.lba, entry.size as u32, false, date)
            }
        });
    }
    records
}

/// A directory's records packed into blocks: ISO 9660 6.8.1.1 lets no
/// record cross a block boundary.
fn pack_records(records: &[Vec<u8>]) -> Vec<u8> {
    let mut extent: Vec<u8> = Vec::new();
    for record in records {
        let used = extent.len() as u64 % BLOCK;
        if used + record.len() as u64 > BLOCK {
            extent.resize(extent.len().next_multiple_of(BLOCK as usize), 0);
        }
        extent.extend_from_slice(record);
    }
    extent.resize(extent.len().next_multiple_of(BLOCK as usize), 0);
    extent
}

fn directory_extent(tree: &Tree, directory: usize, date: &Date) -> Vec<u8> {
    pack_records(&directory_records(tree, directory, date))
}

/// ISO 9660 9.4: the path table, directories numbered from 1.
fn path_table(tree: &Tree, endian: Endian) -> Vec<u8> {
    let mut table = Vec::new();
    for directory in &tree.directories {
        let identifier = identifier_bytes(&directory.identifier);
        let parent = (directory.parent + 1) as u16;
        table.push(identifier.len() as u8);
        table.push(0);
        match endian {
            Endian::Little => {
                table.extend_from_slice(&directory.lba.to_le_bytes());
                table.extend_from_slice(&parent.to_le_bytes());
            }
            Endian::Big => {
                table.extend_from_slice(&directory.lba.to_be_bytes());
                table.extend_from_slice(&parent.to_be_bytes());
            }
        }
        table.extend_from_slice(identifier);
        if identifier.len() % 2 == 1 {
            table.push(0);
        }
    }
    table
}

fn volume_descriptor(kind: u8) -> Vec<u8> {
    let mut descriptor = vec![0; BLOCK as usize];
    descriptor[0] = kind;
    descriptor[1..6].copy_from_slice(b"CD001");
    descriptor[6] = 1;
    descriptor
}

/// ISO 9660 8.4: the primary volume descriptor.
fn primary_volume_descriptor(label: &str, date: &Date, layout: &Layout, tree: &Tree) -> Vec<u8> {
    let mut pvd = volume_descriptor(1);
    pvd[8..40].copy_from_slice(&padded("", 32));
    pvd[40..72].copy_from_slice(&padded(label, 32));
    pvd[80..88].copy_from_slice(&both_u32(layout.blocks));
    pvd[120..124].copy_from_slice(&both_u16(1));
    pvd[124..128].copy_from_slice(&both_u16(1));
    pvd[128..132].copy_from_slice(&both_u16(BLOCK as u16));
    pvd[132..140].copy_from_slice(&both_u32(layout.path_table_size));
    pvd[140..144].copy_from_slice(&layout.path_table_l.to_le_bytes());
    pvd[148..152].copy_from_slice(&layout.path_table_m.to_be_bytes());
    let root = &tree.directories[0];
    pvd[156..190].copy_from_slice(&directory_record(
        &[0],
        root.lba,
        root.blocks * BLOCK as u32,
        true,
        date,
    ));
    // Volume set, publisher, preparer, application; copyright, abstract
    // and bibliographic file: all unnamed.
    pvd[190..702].copy_from_slice(&padded("", 4 * 128));
    pvd[702..813].copy_from_slice(&padded("", 3 * 37));
    let stamp = date.descriptor();
    pvd[813..830].copy_from_slice(&stamp);
    pvd[830..847].copy_from_slice(&stamp);
    // No expiration; effective from creation.
    pvd[847..863].copy_from_slice(b"0000000000000000");
    pvd[864..881].copy_from_slice(&stamp);
    pvd[881] = 1;
    pvd
}

/// El Torito 2.0: the boot record volume descriptor, naming the catalog.
fn boot_record(catalog: u32) -> Vec<u8> {
    let mut record = volume_descriptor(0);
    record[7..7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    record[0x47..0x4B].copy_from_slice(&catalog.to_le_bytes());
    record
}

fn terminator() -> Vec<u8> {
    volume_descriptor(255)
}

/// El Torito 2.0 section 2: the validation entry, the default (BIOS)
/// entry, and one final section of platform 0xEF (UEFI) with one entry.
fn boot_catalog(bios_lba: u32, efi_lba: u32, efi_size: u64) -> Vec<u8> {
    let mut catalog = vec![0; BLOCK as usize];
    // Validation entry: header 1, platform 0 (x86), a checksum making the
    // entry's 16-bit words sum to zero, key 55 AA.
    catalog[0] = 1;
    catalog[30] = 0x55;
    catalog[31] = 0xAA;
    let sum = catalog[..32].chunks(2).fold(0u16, |sum, word| {
        sum.wrapping_add(u16::from_le_bytes([word[0], word[1]]))
    });
    catalog[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    catalog[32..64].copy_from_slice(&boot_entry(BIOS_LOAD_SECTORS, bios_lba));

    catalog[64] = 0x91;
    catalog[65] = 0xEF;
    catalog[66..68].copy_from_slice(&1u16.to_le_bytes());
    // 0 where the image's 512-byte sectors do not fit in 16 bits: the
    // firmware then reads to the end of the medium (see the module doc).
    let efi_sectors = u16::try_from(efi_size.div_ceil(SECTOR)).unwrap_or(0);
    catalog[96..128].copy_from_slice(&boot_entry(efi_sectors, efi_lba));
    catalog
}

/// A bootable, no-emulation entry loaded at the default segment.
fn boot_entry(sectors: u16, lba: u32) -> [u8; 32] {
    let mut entry = [0; 32];
    entry[0] = 0x88;
    entry[6..8].copy_from_slice(&sectors.to_le_bytes());
    entry[8..12].copy_from_slice(&lba.to_le_bytes());
    entry
}

/// The boot-info table isolinux reads to find itself: the primary volume
/// descriptor's block, the image's block, its length and the sum of its
/// 32-bit little-endian words from byte 64.
fn patch_boot_info(image: &mut [u8], lba: u32) {
    let checksum = image[BOOT_INFO_END..].chunks(4).fold(0u32, |sum, word| {
        let mut bytes = [0; 4];
        bytes[..word.len()].copy_from_slice(word);
        sum.wrapping_add(u32::from_le_bytes(bytes))
    });
    let len = image.len() as u32;
    let table = &mut image[BOOT_INFO_OFFSET..BOOT_INFO_END];
    table.fill(0);
    table[0..4].copy_from_slice(&PVD_BLOCK.to_le_bytes());
    table[4..8].copy_from_slice(&lba.to_le_bytes());
    table[8..12].copy_from_slice(&len.to_le_bytes());
    table[12..16].copy_from_slice(&checksum.to_le_bytes());
}

/// A 512-byte sector's CHS address in the MBR's geometry, or the usual
/// "beyond CHS" value past cylinder 1023.
fn chs(sector: u64) -> [u8; 3] {
    let cylinder = sector / (HEADS * SECTORS_PER_TRACK);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = sector / SECTORS_PER_TRACK % HEADS;
    let sector_in_track = sector % SECTORS_PER_TRACK + 1;
    [
        head as u8,
        (sector_in_track as u8) | ((cylinder >> 2) as u8 & 0xC0),
        cylinder as u8,
    ]
}

fn mbr_partition(active: bool, kind: u8, start: u64, sectors: u64) -> [u8; 16] {
    let mut entry = [0; 16];
    entry[0] = if active { 0x80 } else { 0 };
    entry[1..4].copy_from_slice(&chs(start));
    entry[4] = kind;
    entry[5..8].copy_from_slice(&chs(start + sectors - 1));
    entry[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    entry
}

/// The EFI image's partition, in 512-byte sectors.
fn efi_partition(layout: &Layout, efi_size: u64) -> (u64, u64) {
    (
        u64::from(layout.efi) * BLOCK / SECTOR,
        efi_size.div_ceil(SECTOR).max(1),
    )
}

/// Blocks 0-15: isohybrid's MBR and the primary GPT.
fn system_area(
    mbr_code: &[u8],
    seed: &Seed,
    layout: &Layout,
    efi_size: u64,
    boot_lba: u32,
) -> Vec<u8> {
    let mut area = vec![0; (u64::from(PVD_BLOCK) * BLOCK) as usize];
    area[..MBR_CODE_LEN].copy_from_slice(mbr_code);
    // isohdpfx loads the boot image from this 512-byte sector address
    // (isohybrid writes the El Torito block address × 4 as 64 bits).
    area[432..440].copy_from_slice(&(u64::from(boot_lba) * BLOCK / SECTOR).to_le_bytes());
    area[440..444].copy_from_slice(&seed.serial("iso mbr disk signature").to_le_bytes());
    let total_sectors = layout.size / SECTOR;
    area[446..462].copy_from_slice(&mbr_partition(true, 0x00, 0, total_sectors));
    let (efi_start, efi_sectors) = efi_partition(layout, efi_size);
    area[462..478].copy_from_slice(&mbr_partition(false, 0xEF, efi_start, efi_sectors));
    area[510] = 0x55;
    area[511] = 0xAA;

    let entries = gpt_entries(seed, layout, efi_size);
    let header = gpt_header(seed, layout, &entries, false);
    area[512..1024].copy_from_slice(&header);
    area[1024..1024 + entries.len()].copy_from_slice(&entries);
    area
}

/// The backup GPT at the image's end: the entries, then the header.
fn gpt_backup(seed: &Seed, layout: &Layout, efi_size: u64) -> Vec<u8> {
    let mut backup = gpt_entries(seed, layout, efi_size);
    let header = gpt_header(seed, layout, &backup, true);
    backup.extend_from_slice(&header);
    backup
}

fn gpt_entries(seed: &Seed, layout: &Layout, efi_size: u64) -> Vec<u8> {
    let mut entries = vec![0; (GPT_ENTRIES * GPT_ENTRY_LEN) as usize];
    // The backup GPT starts GPT_BACKUP_SECTORS + 1 = 64 sectors (16
    // blocks) before the end: the ISO partition stops at that block.
    let iso_end = layout.size / SECTOR - GPT_BACKUP_SECTORS - 1;
    let (efi_start, efi_sectors) = efi_partition(layout, efi_size);
    // As xorriso's: the ISO from sector 0 (so the partition holds a
    // mountable ISO 9660 volume), overlapping the EFI image.
    let partitions = [
        (GPT_BASIC_DATA, "ISO9660", 0, iso_end - 1),
        (
            GPT_EFI_SYSTEM,
            "EFI",
            efi_start,
            efi_start + efi_sectors - 1,
        ),
    ];
    for (entry, (kind, name, first, last)) in
        entries.chunks_mut(GPT_ENTRY_LEN as usize).zip(partitions)
    {
        entry[..16].copy_from_slice(&kind);
        entry[16..32].copy_from_slice(&seed.guid(&format!("iso gpt partition {name}")));
        entry[32..40].copy_from_slice(&first.to_le_bytes());
        entry[40..48].copy_from_slice(&last.to_le_bytes());
        entry[48..56].copy_from_slice(&GPT_ATTRIBUTES.to_le_bytes());
        for (slot, unit) in entry[56..].chunks_mut(2).zip(name.encode_utf16()) {
            slot.copy_from_slice(&unit.to_le_bytes());
        }
    }
    entries
}

/// UEFI 2.10 5.3.2: a GPT header, primary (at sector 1) or backup (at the
/// last sector), as one 512-byte sector.
fn gpt_header(seed: &Seed, layout: &Layout, entries: &[u8], backup: bool) -> Vec<u8> {
    let last = layout.size / SECTOR - 1;
    let (current, other, entries_at) = if backup {
        (last, 1, last - GPT_ENTRY_SECTORS)
    } else {
        (1, last, 2)
    };
    let mut header = vec![0; SECTOR as usize];
    header[..8].copy_from_slice(b"EFI PART");
    header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[24..32].copy_from_slice(&current.to_le_bytes());
    header[32..40].copy_from_slice(&other.to_le_bytes());
    header[40..48].copy_from_slice(&(2 + GPT_ENTRY_SECTORS).to_le_bytes());
    header[48..56].copy_from_slice(&(last - GPT_BACKUP_SECTORS).to_le_bytes());
    header[56..72].copy_from_slice(&seed.guid("iso gpt disk"));
    header[72..80].copy_from_slice(&entries_at.to_le_bytes());
    header[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
    header[84..88].copy_from_slice(&(GPT_ENTRY_LEN as u32).to_le_bytes());
    header[88..92].copy_from_slice(&crc32fast::hash(entries).to_le_bytes());
    let crc = crc32fast::hash(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A GUID's text fields in GPT's byte order (the first three little-endian).
const fn guid_bytes(first: u32, second: u16, third: u16, rest: u64) -> [u8; 16] {
    let a = first.to_le_bytes();
    let b = second.to_le_bytes();
    let c = third.to_le_bytes();
    let d = rest.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(mtime: u64) -> String {
        String::from_utf8(Date::of(mtime).unwrap().descriptor()[..16].to_vec()).unwrap()
    }

    #[test]
    fn unix_times_become_civil_dates() {
        assert_eq!(date(0), "1970010100000000");
        // Leap days: a year divisible by 400, by 4, and the day after.
        assert_eq!(date(951_782_400), "2000022900000000");
        assert_eq!(date(1_709_210_096), "2024022912345600");
        assert_eq!(date(1_709_251_200), "2024030100000000");
        // 2100 is not a leap year.
        assert_eq!(date(4_107_542_400), "2100030100000000");
        assert_eq!(
            Date::of(1_709_210_096).unwrap().record(),
            [124, 2, 29, 12, 34, 56, 0]
        );
    }

    #[test]
    fn chs_addresses_follow_64_heads_and_32_sectors() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(100), [3, 5, 0]);
        // The last sector of cylinder 1023: the cylinder's top bits
        // go in the sector byte.
        assert_eq!(chs(1024 * 2048 - 1), [63, 32 | 0xC0, 0xFF]);
        assert_eq!(chs(1024 * 2048), [0xFE, 0xFF, 0xFF]);
    }
}
