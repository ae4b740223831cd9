//! A FAT file system image for a fixed list of files: the EFI system
//! partition of a GPT disk, the El Torito EFI image of an ISO, the BIOS
//! boot partition that syslinux boots from.
//!
//! The format is written here rather than through a FAT library because
//! what the callers need is what a general-purpose, mutable file system
//! does not promise: every file stored in one contiguous run of clusters
//! whose byte offset is known before a byte is written (syslinux patches
//! the sector list of `LDLINUX.SYS` into the file itself; an ISO points an
//! El Torito entry at a file), identical bytes for identical inputs, and
//! file contents streamed from disk straight into the image.
//! An image is written once, front to back, into any [`Write`].
//!
//! The FAT type follows from the cluster count, as Microsoft's FAT
//! specification defines it: fewer than 4085 clusters is FAT12, fewer than
//! 65525 is FAT16, anything more is FAT32. Clusters are one sector up to
//! 260 MiB (the smallest image for the files), larger beyond.
//! A name that is upper-case 8.3 (what EFI firmware and syslinux look up)
//! is stored as it is, in one directory entry, so such images are what
//! they were before long names existed. Any other name (lower case,
//! longer, other characters: a NoCloud seed's `user-data`) gets VFAT long
//! name entries in UTF-16 before a generated 8.3 alias (`USER-D~1`), as
//! Microsoft's FAT specification (fatgen103, "FAT Long Directory Entries")
//! lays them out; aliases are numbered in name order, so they repeat for
//! the same files. Names are compared without regard to case, as FAT
//! drivers look them up.
//!
//! What the files are, and where the image goes (a partition, an ISO), is
//! the caller's business.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
/// Entries of the fixed root directory of FAT12 and FAT16.
const ROOT_ENTRIES: u64 = 512;
/// Reserved sectors of FAT32: boot sector, FSInfo, backup boot sector at 6.
const FAT32_RESERVED: u64 = 32;
const FAT32_BACKUP_BOOT: u64 = 6;
/// The BPB and extended BPB of all three FAT types fit in bytes 11..90;
/// boot code lives in 0..11 (the jump and OEM name) and 90..510.
const BPB_START: usize = 11;
const BPB_END: usize = 90;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_HIDDEN: u8 = 0x02;
const ATTR_SYSTEM: u8 = 0x04;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
/// The attributes that mark a long name entry.
const ATTR_LONG_NAME: u8 = 0x0F;
/// UTF-16 units of a long name, and per long name entry.
const LONG_NAME_MAX: usize = 255;
const LONG_NAME_PER_ENTRY: usize = 13;
/// Where an entry's 13 UTF-16 units go (fatgen103: LDIR_Name1, 2 and 3).
const LONG_NAME_OFFSETS: [usize; LONG_NAME_PER_ENTRY] =
    [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/// The ordinal flag of the last (first stored) long name entry.
const LONG_NAME_LAST: u8 = 0x40;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("FAT path {path:?}: {reason}")]
    InvalidName { path: String, reason: &'static str },
    #[error("FAT volume label {label:?}: at most 11 upper-case letters, digits, spaces or _-")]
    InvalidLabel { label: String },
    #[error("FAT path {path:?} is given twice")]
    Duplicate { path: String },
    #[error("FAT path {path:?} clashes with {existing:?}: FAT names ignore case")]
    CaseClash { path: String, existing: String },
    #[error("FAT path {path:?} is both a file and a directory")]
    FileAndDirectory { path: String },
    #[error("FAT image of {size} bytes is too small: the files need at least {minimum} bytes")]
    TooSmall { size: u64, minimum: u64 },
    #[error("FAT image size {size} is not a multiple of 512 bytes")]
    NotSectorMultiple { size: u64 },
    #[error("FAT image of {size} bytes is larger than FAT32 allows")]
    TooLarge { size: u64 },
    #[error("FAT file {path:?} is {length} bytes, more than the 4 GiB - 1 a FAT file can hold")]
    FileTooLarge { path: String, length: u64 },
    #[error(
        "the files do not fit the geometry a FAT image of {size} bytes gets (the smallest that holds them is {minimum} bytes); try a larger size"
    )]
    DoesNotFit { size: u64, minimum: u64 },
    #[error("reading {path}: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error("{path} changed while the FAT image was written: {expected} bytes expected")]
    SourceChanged { path: PathBuf, expected: u64 },
    #[error("no file {path:?} in the FAT image")]
    NoSuchFile { path: String },
    #[error("new contents of {path:?} are {actual} bytes, the planned file is {expected}")]
    LengthChanged {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing the FAT image: {0}")]
    Write(#[source] io::Error),
}

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
enum Contents {
    Bytes(Vec<u8>),
    /// A file streamed into the image when it is written; its length is
    /// taken when it is added.
    File(PathBuf),
}

#[derive(Clone, Debug)]
struct FileEntry {
    contents: Contents,
    length: u64,
    attributes: u8,
}

/// The files of a FAT image and its volume fields; [`FatImage::plan`]
/// fixes the layout.
#[derive(Clone, Debug)]
pub struct FatImage {
    label: [u8; 11],
    volume_id: u32,
    mtime: u64,
    hidden_sectors: u32,
    /// '/'-separated paths, with their contents.
    files: BTreeMap<String, FileEntry>,
    /// Every file and directory path, in lower case, with the spelling
    /// it was given and whether it is a directory.
    spellings: BTreeMap<String, (String, bool)>,
}

/// Which of the three FAT types an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// Where a file's bytes are in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileExtent {
    pub path: String,
    /// Byte offset in the image (a multiple of 512); 0 for an empty file.
    pub offset: u64,
    pub length: u64,
}

/// The geometry of an image: sizes in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    fat_type: FatType,
    total: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fat_sectors: u64,
    root_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn data_start(&self) -> u64 {
        self.reserved + 2 * self.fat_sectors + self.root_sectors
    }

    fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    /// The geometry of `total` sectors as `fat_type`, if the cluster
    /// count it gives is one that type allows.
    fn of(fat_type: FatType, total: u64, sectors_per_cluster: u64) -> Option<Geometry> {
        let (reserved, root_sectors, bits) = match fat_type {
            FatType::Fat12 => (1, ROOT_ENTRIES * 32 / SECTOR, 12),
            FatType::Fat16 => (1, ROOT_ENTRIES * 32 / SECTOR, 16),
            FatType::Fat32 => (FAT32_RESERVED, 0, 32),
        };
        // The FAT must hold an entry for each cluster plus the two
        // reserved ones; its size and the cluster count depend on each
        // other, so grow the FAT until it holds what remains.
        let mut fat_sectors = 1;
        let clusters = loop {
            let data = total.checked_sub(reserved + root_sectors + 2 * fat_sectors)?;
            let clusters = data / sectors_per_cluster;
            let needed = ((clusters + 2) * bits).div_ceil(8).div_ceil(SECTOR);
            if needed <= fat_sectors {
                break clusters;
            }
            fat_sectors = needed;
        };
        let allowed = match fat_type {
            FatType::Fat12 => (1..4085).contains(&clusters),
            FatType::Fat16 => (4085..65525).contains(&clusters),
            FatType::Fat32 => (65525..0x0FFF_FFF5).contains(&clusters),
        };
        allowed.then_some(Geometry {
            fat_type,
            total,
            sectors_per_cluster,
            reserved,
            fat_sectors,
            root_sectors,
            clusters,
        })
    }

    /// The one geometry an image of `total` sectors gets: FAT32 where the
    /// cluster count reaches it, else FAT16, else FAT12, each with the
    /// smallest cluster that gives its type a valid count.
    fn choose(total: u64) -> Option<Geometry> {
        let fat32_cluster = match total * SECTOR {
            size if size <= 260 << 20 => 1,
            size if size <= 8 << 30 => 8,
            size if size <= 16 << 30 => 16,
            size if size <= 32 << 30 => 32,
            _ => 64,
        };
        Geometry::of(FatType::Fat32, total, fat32_cluster)
            .or_else(|| {
                [1, 2, 4, 8, 16, 32, 64, 128]
                    .into_iter()
                    .find_map(|spc| Geometry::of(FatType::Fat16, total, spc))
            })
            .or_else(|| {
                [1, 2, 4, 8, 16, 32, 64, 128]
                    .into_iter()
                    .find_map(|spc| Geometry::of(FatType::Fat12, total, spc))
            })
    }
}

/// One directory of the image and what it holds, in name order.
#[derive(Debug)]
struct Directory {
    path: String,
    /// (name, child path, is a directory)
    children: Vec<(String, String, bool)>,
}

/// The entries of each directory and the length of each file: what
/// decides whether a geometry holds an image.
struct Needs {
    root_entries: u64,
    /// Of every directory but the root.
    directory_entries: Vec<u64>,
    file_lengths: Vec<u64>,
}

impl Needs {
    /// Whether `geometry` has room: the root in the fixed root directory
    /// of FAT12 and FAT16 or in clusters of FAT32's, every other
    /// directory and every file in clusters.
    fn fit(&self, geometry: &Geometry) -> bool {
        let cluster = geometry.cluster_bytes();
        let directory_clusters = |entries: u64| (entries * 32).div_ceil(cluster).max(1);
        let root = match geometry.fat_type {
            FatType::Fat32 => directory_clusters(self.root_entries),
            _ if self.root_entries <= ROOT_ENTRIES => 0,
            _ => return false,
        };
        let directories: u64 = self
            .directory_entries
            .iter()
            .map(|&entries| directory_clusters(entries))
            .sum();
        let files: u64 = self
            .file_lengths
            .iter()
            .map(|length| length.div_ceil(cluster))
            .sum();
        root + directories + files <= geometry.clusters
    }
}

/// An image whose layout is fixed: every file has its place, and only
/// contents of the same length and the boot code may still change.
#[derive(Clone, Debug)]
pub struct FatPlan {
    image: FatImage,
    geometry: Geometry,
    /// First cluster of each directory but the FAT12/16 root, by path
    /// ("" is the root).
    directory_clusters: BTreeMap<String, (u64, u64)>,
    /// First cluster and cluster count of each non-empty file.
    file_clusters: BTreeMap<String, (u64, u64)>,
    /// The 8.3 alias of each file and directory with a long name, by path.
    aliases: BTreeMap<String, [u8; 11]>,
    boot_code: Option<[u8; 512]>,
}

impl FatImage {
    /// An empty image. `label` is the volume label (upper case, at most 11
    /// characters, may be empty), `volume_id` its serial, `mtime` (Unix
    /// seconds) the time of every entry, `hidden_sectors` the first LBA of
    /// the partition that holds it (0 for a bare image).
    pub fn new(
        label: &str,
        volume_id: u32,
        mtime: u64,
        hidden_sectors: u32,
    ) -> Result<FatImage, FatError> {
        let valid = label.len() <= 11
            && label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b" _-".contains(&b));
        if !valid {
            return Err(FatError::InvalidLabel {
                label: label.to_owned(),
            });
        }
        let mut padded = [b' '; 11];
        padded[..label.len()].copy_from_slice(label.as_bytes());
        Ok(FatImage {
            label: padded,
            volume_id,
            mtime,
            hidden_sectors,
            files: BTreeMap::new(),
            spellings: BTreeMap::new(),
        })
    }

    /// Adds a file held in memory at `path` ("EFI/BOOT/BOOTX64.EFI").
    pub fn add_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), FatError> {
        let length = bytes.len() as u64;
        self.insert(path, Contents::Bytes(bytes), length)
    }

    /// Adds the file at `source` as `path`; it is read when the image is
    /// written, and must not change length in between.
    pub fn add_file(&mut self, path: &str, source: &Path) -> Result<(), FatError> {
        let length = std::fs::metadata(source)
            .map_err(|source_error| FatError::Source {
                path: source.to_owned(),
                source: source_error,
            })?
            .len();
        self.insert(path, Contents::File(source.to_owned()), length)
    }

    /// Marks `path` hidden, system and read-only, as syslinux's installer
    /// leaves `LDLINUX.SYS`.
    pub fn set_system(&mut self, path: &str) -> Result<(), FatError> {
        let entry = self
            .files
            .get_mut(path)
            .ok_or_else(|| FatError::NoSuchFile {
                path: path.to_owned(),
            })?;
        entry.attributes |= ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM;
        Ok(())
    }

    fn insert(&mut self, path: &str, contents: Contents, length: u64) -> Result<(), FatError> {
        for component in path.split('/') {
            check_name(component).map_err(|reason| FatError::InvalidName {
                path: path.to_owned(),
                reason,
            })?;
        }
        if length > u64::from(u32::MAX) {
            return Err(FatError::FileTooLarge {
                path: path.to_owned(),
                length,
            });
        }
        // Each of the path's directories and the file itself must be
        // what it is in any earlier path (a directory, a file not given
        // yet), and spelt the same way: FAT ignores case.
        let mut prefixes = Vec::new();
        for (end, _) in path.match_indices('/').chain([(path.len(), "")]) {
            let prefix = &path[..end];
            let is_directory = end < path.len();
            if let Some((spelling, was_directory)) = self.spellings.get(&fold_case(prefix)) {
                let error = if spelling != prefix {
                    FatError::CaseClash {
                        path: path.to_owned(),
                        existing: spelling.clone(),
                    }
                } else if is_directory != *was_directory {
                    FatError::FileAndDirectory {
                        path: path.to_owned(),
                    }
                } else if is_directory {
                    continue;
                } else {
                    FatError::Duplicate {
                        path: path.to_owned(),
                    }
                };
                return Err(error);
            }
            prefixes.push((prefix, is_directory));
        }
        for (prefix, is_directory) in prefixes {
            self.spellings
                .insert(fold_case(prefix), (prefix.to_owned(), is_directory));
        }
        self.files.insert(
            path.to_owned(),
            FileEntry {
                contents,
                length,
                attributes: ATTR_ARCHIVE,
            },
        );
        Ok(())
    }

    /// Every directory, parents before children, each with its children.
    fn directories(&self) -> Vec<Directory> {
        let mut directories: BTreeMap<String, BTreeSet<(String, String, bool)>> = BTreeMap::new();
        directories.insert(String::new(), BTreeSet::new());
        for path in self.files.keys() {
            let components: Vec<&str> = path.split('/').collect();
            let mut parent = String::new();
            for (index, component) in components.iter().enumerate() {
                let child = if parent.is_empty() {
                    (*component).to_owned()
                } else {
                    format!("{parent}/{component}")
                };
                let is_directory = index + 1 < components.len();
                directories.entry(parent.clone()).or_default().insert((
                    (*component).to_owned(),
                    child.clone(),
                    is_directory,
                ));
                if is_directory {
                    directories.entry(child.clone()).or_default();
                }
                parent = child;
            }
        }
        // Breadth-first: by depth, then by path.
        let mut list: Vec<Directory> = directories
            .into_iter()
            .map(|(path, children)| Directory {
                path,
                children: children.into_iter().collect(),
            })
            .collect();
        list.sort_by_key(|directory| {
            let depth = if directory.path.is_empty() {
                0
            } else {
                directory.path.matches('/').count() + 1
            };
            (depth, directory.path.clone())
        });
        list
    }

    /// Entries (32 bytes each) of a directory: "." and ".." in all but
    /// the root, the volume label in the root, and each child's long name
    /// entries before its 8.3 entry.
    fn entry_count(&self, directory: &Directory) -> u64 {
        let own = if directory.path.is_empty() {
            u64::from(self.label != [b' '; 11])
        } else {
            2
        };
        let children: usize = directory
            .children
            .iter()
            .map(|(name, _, _)| 1 + long_name_entries(name))
            .sum();
        own + children as u64
    }

    /// The 8.3 alias of every child with a long name, by path. A name
    /// that is 8.3 but for its case keeps its letters (`readme.txt` is
    /// `README.TXT`); any other gets a basis and the first `~N` tail that
    /// no other entry of its directory has, in name order.
    fn aliases(&self) -> Result<BTreeMap<String, [u8; 11]>, FatError> {
        let mut aliases = BTreeMap::new();
        for directory in self.directories() {
            let mut taken = BTreeSet::new();
            let mut generated = Vec::new();
            for (name, path, _) in &directory.children {
                if let Ok(short) = short_name(name) {
                    taken.insert(short);
                } else if let Ok(short) = short_name(&name.to_ascii_uppercase()) {
                    taken.insert(short);
                    aliases.insert(path.clone(), short);
                } else {
                    generated.push((name, path));
                }
            }
            // The next tail to try for each basis, so that many names of
            // one basis take linear time.
            let mut next_tail: BTreeMap<(Vec<u8>, Vec<u8>), u32> = BTreeMap::new();
            for (name, path) in generated {
                let (basis, extension) = alias_basis(name);
                let tail = next_tail
                    .entry((basis.clone(), extension.clone()))
                    .or_insert(1);
                let alias = (*tail..1_000_000)
                    .map(|number| (number, alias_with_tail(&basis, &extension, number)))
                    .find(|(_, alias)| !taken.contains(alias));
                let Some((number, alias)) = alias else {
                    return Err(FatError::InvalidName {
                        path: path.clone(),
                        reason: "no 8.3 alias is left for it in its directory",
                    });
                };
                *tail = number + 1;
                taken.insert(alias);
                aliases.insert(path.clone(), alias);
            }
        }
        Ok(aliases)
    }

    /// What the image must hold, counted once for every geometry tried.
    fn needs(&self) -> Needs {
        let mut directories = self.directories().into_iter();
        let root_entries = directories.next().map_or(0, |root| self.entry_count(&root));
        Needs {
            root_entries,
            directory_entries: directories
                .map(|directory| self.entry_count(&directory))
                .collect(),
            file_lengths: self.files.values().map(|file| file.length).collect(),
        }
    }

    /// The smallest image, in bytes, that holds the files.
    pub fn min_size(&self) -> Result<u64, FatError> {
        let needs = self.needs();
        let payload: u64 = needs
            .file_lengths
            .iter()
            .map(|length| length.div_ceil(SECTOR))
            .sum();
        // No geometry has less overhead than a FAT12 with one sector
        // clusters; from there, the first size whose geometry holds it.
        let mut total = payload + 1 + 2 + ROOT_ENTRIES * 32 / SECTOR;
        // A root that outgrows the fixed one of FAT12 and FAT16 needs
        // FAT32, which starts at 65525 clusters.
        if needs.root_entries > ROOT_ENTRIES {
            total = total.max(FAT32_RESERVED + 65_525);
        }
        loop {
            if total > u64::from(u32::MAX) {
                return Err(FatError::TooLarge {
                    size: total * SECTOR,
                });
            }
            if Geometry::choose(total).is_some_and(|geometry| needs.fit(&geometry)) {
                return Ok(total * SECTOR);
            }
            total += 1;
        }
    }

    /// Fixes the layout of an image of `size` bytes (the smallest if
    /// `None`).
    pub fn plan(self, size: Option<u64>) -> Result<FatPlan, FatError> {
        let minimum = self.min_size()?;
        let size = size.unwrap_or(minimum);
        if !size.is_multiple_of(SECTOR) {
            return Err(FatError::NotSectorMultiple { size });
        }
        if size < minimum {
            return Err(FatError::TooSmall { size, minimum });
        }
        if size / SECTOR > u64::from(u32::MAX) {
            return Err(FatError::TooLarge { size });
        }
        let geometry = Geometry::choose(size / SECTOR)
            .filter(|geometry| self.needs().fit(geometry))
            .ok_or(FatError::DoesNotFit { size, minimum })?;
        // Clusters in order: directories parents first, then files in
        // path order, each run contiguous.
        let cluster = geometry.cluster_bytes();
        let mut next = 2;
        let mut directory_clusters = BTreeMap::new();
        for directory in self.directories() {
            if directory.path.is_empty() && geometry.fat_type != FatType::Fat32 {
                continue;
            }
            let count = (self.entry_count(&directory) * 32).div_ceil(cluster).max(1);
            directory_clusters.insert(directory.path, (next, count));
            next += count;
        }
        let mut file_clusters = BTreeMap::new();
        for (path, file) in &self.files {
            let count = file.length.div_ceil(cluster);
            if count > 0 {
                file_clusters.insert(path.clone(), (next, count));
                next += count;
            }
        }
        let aliases = self.aliases()?;
        Ok(FatPlan {
            image: self,
            geometry,
            directory_clusters,
            file_clusters,
            aliases,
            boot_code: None,
        })
    }
}

impl FatPlan {
    pub fn size(&self) -> u64 {
        self.geometry.total * SECTOR
    }

    pub fn fat_type(&self) -> FatType {
        self.geometry.fat_type
    }

    fn cluster_offset(&self, cluster: u64) -> u64 {
        (self.geometry.data_start() + (cluster - 2) * self.geometry.sectors_per_cluster) * SECTOR
    }

    /// Where each file is, in path order.
    pub fn files(&self) -> Vec<FileExtent> {
        self.image
            .files
            .iter()
            .map(|(path, file)| FileExtent {
                path: path.clone(),
                offset: self
                    .file_clusters
                    .get(path)
                    .map_or(0, |&(first, _)| self.cluster_offset(first)),
                length: file.length,
            })
            .collect()
    }

    /// Where `path` is.
    pub fn file(&self, path: &str) -> Result<FileExtent, FatError> {
        self.files()
            .into_iter()
            .find(|extent| extent.path == path)
            .ok_or_else(|| FatError::NoSuchFile {
                path: path.to_owned(),
            })
    }

    /// Replaces the contents of `path` with `bytes` of the same length.
    pub fn replace_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), FatError> {
        let file = self
            .image
            .files
            .get_mut(path)
            .ok_or_else(|| FatError::NoSuchFile {
                path: path.to_owned(),
            })?;
        if bytes.len() as u64 != file.length {
            return Err(FatError::LengthChanged {
                path: path.to_owned(),
                expected: file.length,
                actual: bytes.len() as u64,
            });
        }
        file.contents = Contents::Bytes(bytes);
        Ok(())
    }

    /// Takes the boot code of `sector` (its bytes 0..11, the jump and OEM
    /// name, and 90..510) around this image's own BPB, as a boot loader's
    /// installer does; the FAT32 backup boot sector gets the same.
    pub fn set_boot_code(&mut self, sector: &[u8; 512]) {
        self.boot_code = Some(*sector);
    }

    /// Writes the image, front to back.
    pub fn write(&self, out: impl Write) -> Result<(), FatError> {
        let mut out = Counting {
            inner: BufWriter::with_capacity(1 << 16, out),
            written: 0,
        };
        self.write_all(&mut out)?;
        out.inner.flush().map_err(FatError::Write)
    }

    fn write_all<W: Write>(&self, out: &mut Counting<W>) -> Result<(), FatError> {
        let geometry = &self.geometry;
        let boot = self.boot_sector();
        out.put(&boot)?;
        if geometry.fat_type == FatType::Fat32 {
            let info = self.fs_info();
            out.put(&info)?;
            out.zeros(SECTOR * (FAT32_BACKUP_BOOT - 2))?;
            out.put(&boot)?;
            out.put(&info)?;
        }
        out.zeros(geometry.reserved * SECTOR - out.written)?;
        let fat = self.fat();
        for _ in 0..2 {
            out.put(&fat)?;
            out.zeros(geometry.fat_sectors * SECTOR - fat.len() as u64)?;
        }
        let directories = self.image.directories();
        if geometry.fat_type != FatType::Fat32 {
            let root = self.directory_bytes(&directories[0]);
            out.put(&root)?;
            out.zeros(geometry.root_sectors * SECTOR - root.len() as u64)?;
        }
        let cluster = geometry.cluster_bytes();
        for directory in &directories {
            if let Some(&(_, count)) = self.directory_clusters.get(&directory.path) {
                let bytes = self.directory_bytes(directory);
                out.put(&bytes)?;
                out.zeros(count * cluster - bytes.len() as u64)?;
            }
        }
        for (path, file) in &self.image.files {
            let Some(&(_, count)) = self.file_clusters.get(path) else {
                continue;
            };
            match &file.contents {
                Contents::Bytes(bytes) => out.put(bytes)?,
                Contents::File(source) => copy_exactly(source, file.length, out)?,
            }
            out.zeros(count * cluster - file.length)?;
        }
        out.zeros(geometry.total * SECTOR - out.written)
    }

    fn boot_sector(&self) -> [u8; 512] {
        let geometry = &self.geometry;
        let image = &self.image;
        let mut sector = [0u8; 512];
        let fat32 = geometry.fat_type == FatType::Fat32;
        // A jump over the BPB to an endless loop, for an image nobody
        // gave boot code: JMP SHORT to 0x5A (FAT32) or 0x3E, then NOP.
        sector[..3].copy_from_slice(if fat32 {
            &[0xEB, 0x58, 0x90]
        } else {
            &[0xEB, 0x3C, 0x90]
        });
        sector[3..11].copy_from_slice(b"BERTH   ");
        put16(&mut sector, 11, SECTOR as u16);
        sector[13] = geometry.sectors_per_cluster as u8;
        put16(&mut sector, 14, geometry.reserved as u16);
        sector[16] = 2;
        put16(&mut sector, 17, if fat32 { 0 } else { ROOT_ENTRIES as u16 });
        if geometry.total < 0x10000 {
            put16(&mut sector, 19, geometry.total as u16);
        } else {
            put32(&mut sector, 32, geometry.total as u32);
        }
        sector[21] = 0xF8;
        if !fat32 {
            put16(&mut sector, 22, geometry.fat_sectors as u16);
        }
        put16(&mut sector, 24, 63);
        put16(&mut sector, 26, 255);
        put32(&mut sector, 28, image.hidden_sectors);
        let extended = if fat32 {
            put32(&mut sector, 36, geometry.fat_sectors as u32);
            put32(&mut sector, 44, 2);
            put16(&mut sector, 48, 1);
            put16(&mut sector, 50, FAT32_BACKUP_BOOT as u16);
            64
        } else {
            36
        };
        sector[extended] = 0x80;
        sector[extended + 2] = 0x29;
        put32(&mut sector, extended + 3, image.volume_id);
        sector[extended + 7..extended + 18].copy_from_slice(&image.label);
        sector[extended + 18..extended + 26].copy_from_slice(match geometry.fat_type {
            FatType::Fat12 => b"FAT12   ",
            FatType::Fat16 => b"FAT16   ",
            FatType::Fat32 => b"FAT32   ",
        });
        let code_start = extended + 26;
        // INT 18h: "no bootable disk here", let the firmware try the next.
        sector[code_start..code_start + 4].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
        if let Some(code) = &self.boot_code {
            sector[..BPB_START].copy_from_slice(&code[..BPB_START]);
            sector[BPB_END..510].copy_from_slice(&code[BPB_END..510]);
        }
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector
    }

    fn fs_info(&self) -> [u8; 512] {
        let mut sector = [0u8; 512];
        put32(&mut sector, 0, 0x4161_5252);
        put32(&mut sector, 484, 0x6141_7272);
        let used = self.used_clusters();
        put32(&mut sector, 488, (self.geometry.clusters - used) as u32);
        put32(&mut sector, 492, (used + 2) as u32);
        put32(&mut sector, 508, 0xAA55_0000);
        sector
    }

    fn used_clusters(&self) -> u64 {
        self.directory_clusters
            .values()
            .chain(self.file_clusters.values())
            .map(|&(_, count)| count)
            .sum()
    }

    /// The FAT up to its last used entry; the rest is zeros (free).
    fn fat(&self) -> Vec<u8> {
        let (end_of_chain, media) = match self.geometry.fat_type {
            FatType::Fat12 => (0xFFF, 0xFF8),
            FatType::Fat16 => (0xFFFF, 0xFFF8),
            FatType::Fat32 => (0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        let mut entries: Vec<u32> = vec![media, end_of_chain];
        let mut runs: Vec<(u64, u64)> = self
            .directory_clusters
            .values()
            .chain(self.file_clusters.values())
            .copied()
            .collect();
        runs.sort();
        for (first, count) in runs {
            for cluster in first..first + count {
                let last = cluster + 1 == first + count;
                entries.push(if last {
                    end_of_chain
                } else {
                    (cluster + 1) as u32
                });
            }
        }
        match self.geometry.fat_type {
            FatType::Fat12 => {
                let mut bytes = vec![0u8; (entries.len() * 3).div_ceil(2)];
                for (index, &entry) in entries.iter().enumerate() {
                    let at = index * 3 / 2;
                    if index % 2 == 0 {
                        bytes[at] = entry as u8;
                        bytes[at + 1] |= (entry >> 8) as u8 & 0x0F;
                    } else {
                        bytes[at] |= (entry << 4) as u8;
                        bytes[at + 1] = (entry >> 4) as u8;
                    }
                }
                bytes
            }
            FatType::Fat16 => entries
                .iter()
                .flat_map(|&entry| (entry as u16).to_le_bytes())
                .collect(),
            FatType::Fat32 => entries
                .iter()
                .flat_map(|&entry| entry.to_le_bytes())
                .collect(),
        }
    }

    fn first_cluster(&self, path: &str, is_directory: bool) -> u64 {
        let clusters = if is_directory {
            &self.directory_clusters
        } else {
            &self.file_clusters
        };
        clusters.get(path).map_or(0, |&(first, _)| first)
    }

    fn directory_bytes(&self, directory: &Directory) -> Vec<u8> {
        let (date, time) = fat_date_time(self.image.mtime);
        let entry = |name: [u8; 11], attributes: u8, cluster: u64, size: u64| {
            let mut bytes = [0u8; 32];
            bytes[..11].copy_from_slice(&name);
            bytes[11] = attributes;
            put16(&mut bytes, 14, time);
            put16(&mut bytes, 16, date);
            put16(&mut bytes, 18, date);
            put16(&mut bytes, 20, (cluster >> 16) as u16);
            put16(&mut bytes, 22, time);
            put16(&mut bytes, 24, date);
            put16(&mut bytes, 26, cluster as u16);
            put32(&mut bytes, 28, size as u32);
            bytes
        };
        let mut bytes = Vec::new();
        if directory.path.is_empty() {
            if self.image.label != [b' '; 11] {
                bytes.extend(entry(self.image.label, ATTR_VOLUME_ID, 0, 0));
            }
        } else {
            let own = self.first_cluster(&directory.path, true);
            let parent_path = directory
                .path
                .rsplit_once('/')
                .map_or("", |(parent, _)| parent);
            // ".." of a directory in the root points at cluster 0, even on
            // FAT32 where the root has a cluster of its own.
            let parent = if parent_path.is_empty() {
                0
            } else {
                self.first_cluster(parent_path, true)
            };
            bytes.extend(entry(*b".          ", ATTR_DIRECTORY, own, 0));
            bytes.extend(entry(*b"..         ", ATTR_DIRECTORY, parent, 0));
        }
        for (name, path, is_directory) in &directory.children {
            // Names were checked when the file was added: a name with no
            // alias is 8.3.
            let short = match self.aliases.get(path) {
                Some(alias) => {
                    bytes.extend(long_name_entries_bytes(name, alias));
                    *alias
                }
                None => short_name(name).unwrap_or([b' '; 11]),
            };
            let cluster = self.first_cluster(path, *is_directory);
            if *is_directory {
                bytes.extend(entry(short, ATTR_DIRECTORY, cluster, 0));
            } else {
                let file = &self.image.files[path];
                bytes.extend(entry(short, file.attributes, cluster, file.length));
            }
        }
        bytes
    }
}

/// Counts what is written, so padding can be computed from the position.
struct Counting<W: Write> {
    inner: BufWriter<W>,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), FatError> {
        self.inner.write_all(bytes).map_err(FatError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut count: u64) -> Result<(), FatError> {
        let block = [0u8; 8192];
        while count > 0 {
            let step = count.min(block.len() as u64) as usize;
            self.put(&block[..step])?;
            count -= step as u64;
        }
        Ok(())
    }
}

/// Streams exactly `length` bytes of `source` into `out`.
fn copy_exactly<W: Write>(
    source: &Path,
    length: u64,
    out: &mut Counting<W>,
) -> Result<(), FatError> {
    crate::stream_file(source, length, true, |chunk| out.put(chunk)).map_err(|error| match error {
        crate::Streamed::Read(error) => FatError::Source {
            path: source.to_owned(),
            source: error,
        },
        crate::Streamed::Length { .. } => FatError::SourceChanged {
            path: source.to_owned(),
            expected: length,
        },
        crate::Streamed::Put(error) => error,
    })
}

/// The 11-byte directory name of an upper-case 8.3 name.
fn short_name(name: &str) -> Result<[u8; 11], &'static str> {
    if name.is_empty() {
        return Err("empty path component (a leading, trailing or double '/')");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not names");
    }
    let (base, extension) = name.split_once('.').unwrap_or((name, ""));
    if base.is_empty() || base.len() > 8 || extension.len() > 3 || extension.contains('.') {
        return Err("not an 8.3 name (at most 8 characters, a dot, at most 3)");
    }
    let allowed =
        |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b);
    if !name.bytes().filter(|&b| b != b'.').all(allowed) {
        return Err("8.3 names are upper-case letters, digits and !#$%&'()-@^_`{}~ only");
    }
    let mut short = [b' '; 11];
    short[..base.len()].copy_from_slice(base.as_bytes());
    short[8..8 + extension.len()].copy_from_slice(extension.as_bytes());
    Ok(short)
}

/// Why `name` can be neither an 8.3 name nor a long name.
fn check_name(name: &str) -> Result<(), &'static str> {
    match short_name(name) {
        Ok(_) => Ok(()),
        // Empty and dot names are no names at all.
        Err(reason) if name.is_empty() || name == "." || name == ".." => Err(reason),
        Err(_) if name.encode_utf16().count() > LONG_NAME_MAX => {
            Err("longer than the 255 UTF-16 units of a FAT long name")
        }
        Err(_) if name.chars().any(|c| c < ' ' || "\"*:<>?\\|".contains(c)) => {
            Err("FAT names hold no control characters and none of \"*:<>?\\|")
        }
        // Windows and Linux strip these when a name is looked up, so the
        // file could not be found by its own name.
        Err(_) if name.ends_with(['.', ' ']) => Err("a FAT name does not end in '.' or ' '"),
        Err(_) => Ok(()),
    }
}

/// How FAT drivers compare names: without regard to case.
fn fold_case(name: &str) -> String {
    name.to_lowercase()
}

/// Long name entries `name` needs: none for an upper-case 8.3 name.
fn long_name_entries(name: &str) -> usize {
    match short_name(name) {
        Ok(_) => 0,
        Err(_) => name.encode_utf16().count().div_ceil(LONG_NAME_PER_ENTRY),
    }
}

/// The basis and extension of a long name's alias (fatgen103, "Basis-Name
/// Generation Algorithm"): upper case, spaces and leading dots dropped,
/// the part before the last dot (its own dots dropped) cut to 8 and the
/// part after it to 3, any character an 8.3 name cannot hold as '_'.
fn alias_basis(name: &str) -> (Vec<u8>, Vec<u8>) {
    let kept: String = name.chars().filter(|&c| c != ' ').collect();
    let kept = kept.trim_start_matches('.');
    let (primary, extension) = kept.rsplit_once('.').unwrap_or((kept, ""));
    let oem = |part: &str, length: usize| -> Vec<u8> {
        part.chars()
            .filter(|&c| c != '.')
            .map(|c| match c.to_ascii_uppercase() {
                c if c.is_ascii_uppercase() || c.is_ascii_digit() => c as u8,
                c if "!#$%&'()-@^_`{}~".contains(c) => c as u8,
                _ => b'_',
            })
            .take(length)
            .collect()
    };
    let mut basis = oem(primary, 8);
    if basis.is_empty() {
        basis.push(b'_');
    }
    (basis, oem(extension, 3))
}

/// `basis~number.extension` as an 11-byte directory name, the basis cut
/// so that it and the tail fit 8 characters.
fn alias_with_tail(basis: &[u8], extension: &[u8], number: u32) -> [u8; 11] {
    let tail = format!("~{number}");
    let kept = basis.len().min(8 - tail.len());
    let mut short = [b' '; 11];
    short[..kept].copy_from_slice(&basis[..kept]);
    short[kept..kept + tail.len()].copy_from_slice(tail.as_bytes());
    short[8..8 + extension.len()].copy_from_slice(extension);
    short
}

/// The checksum of an 8.3 name that each of its long name entries holds.
fn alias_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &byte| sum.rotate_right(1).wrapping_add(byte))
}

/// The long name entries of `name`, in the order they are stored: the
/// last part (its ordinal flagged) first, the first part just before the
/// 8.3 entry. The name ends in a 0 unit unless it fills its last entry,
/// and the rest is 0xFFFF.
fn long_name_entries_bytes(name: &str, alias: &[u8; 11]) -> Vec<u8> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(LONG_NAME_PER_ENTRY);
    if units.len() < count * LONG_NAME_PER_ENTRY {
        units.push(0);
    }
    units.resize(count * LONG_NAME_PER_ENTRY, 0xFFFF);
    let checksum = alias_checksum(alias);
    let mut bytes = Vec::with_capacity(count * 32);
    for (index, part) in units.chunks(LONG_NAME_PER_ENTRY).enumerate().rev() {
        let mut entry = [0u8; 32];
        // Ordinals count from 1; at most 20, so they fit below the flag.
        entry[0] = (index + 1) as u8;
        if index + 1 == count {
            entry[0] |= LONG_NAME_LAST;
        }
        entry[11] = ATTR_LONG_NAME;
        entry[13] = checksum;
        for (&unit, &at) in part.iter().zip(&LONG_NAME_OFFSETS) {
            put16(&mut entry, at, unit);
        }
        bytes.extend(entry);
    }
    bytes
}

/// FAT's date and time fields for Unix seconds, in UTC: the date from
/// 1980 to 2107, the time in 2-second steps.
fn fat_date_time(mtime: u64) -> (u16, u16) {
    // 1980-01-01 and 2107-12-31 23:59:58.
    let mtime = mtime.clamp(315_532_800, 4_354_819_198);
    let days = mtime / 86_400;
    let seconds = mtime % 86_400;
    let (year, month, day) = archive::clock::civil_from_days(days);
    let date = (((year - 1980) << 9) | (month << 5) | day) as u16;
    let time =
        (((seconds / 3600) << 11) | ((seconds / 60 % 60) << 5) | ((seconds % 60) / 2)) as u16;
    (date, time)
}

fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{assert_fsck_vfat_clean, tool_or_skip};
    use std::fs::File;
    use std::process::Command;

    const MTIME: u64 = 1_700_000_000;

    /// Bytes that differ from sector to sector, so a misplaced sector shows.
    pub(crate) fn pattern(length: usize, seed: u8) -> Vec<u8> {
        (0..length)
            .map(|index| (index as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    fn sample(big: &Path) -> FatImage {
        let mut image = FatImage::new("BERTH ESP", 0x1234_abcd, MTIME, 2048).unwrap();
        image
            .add_bytes("EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1))
            .unwrap();
        image
            .add_bytes("SYSLINUX.CFG", b"DEFAULT x\n".to_vec())
            .unwrap();
        image.add_bytes("EMPTY", Vec::new()).unwrap();
        image.add_bytes("A/B/C/DEEP.TXT", pattern(513, 2)).unwrap();
        image.add_file("INITRD.IMG", big).unwrap();
        image
    }

    fn big_file(directory: &Path) -> (PathBuf, Vec<u8>) {
        let path = directory.join("big");
        let bytes = pattern(5 * 1024 * 1024 + 123, 3);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    fn write(plan: &FatPlan) -> Vec<u8> {
        let mut out = Vec::new();
        plan.write(&mut out).unwrap();
        assert_eq!(out.len() as u64, plan.size());
        out
    }

    #[test]
    fn files_sit_at_the_offsets_the_plan_reports() {
        let temporary = tempfile::tempdir().unwrap();
        let (big, big_bytes) = big_file(temporary.path());
        let plan = sample(&big).plan(None).unwrap();
        let image = write(&plan);
        for extent in plan.files() {
            let range = extent.offset as usize..(extent.offset + extent.length) as usize;
            let expected = match extent.path.as_str() {
                "INITRD.IMG" => big_bytes.clone(),
                "EFI/BOOT/BOOTX64.EFI" => pattern(70_000, 1),
                "SYSLINUX.CFG" => b"DEFAULT x\n".to_vec(),
                "EMPTY" => Vec::new(),
                "A/B/C/DEEP.TXT" => pattern(513, 2),
                other => panic!("unexpected {other}"),
            };
            assert!(image[range] == expected[..], "{}", extent.path);
            assert_eq!(extent.offset % 512, 0);
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let temporary = tempfile::tempdir().unwrap();
        let (big, _) = big_file(temporary.path());
        let first = write(&sample(&big).plan(None).unwrap());
        let second = write(&sample(&big).plan(None).unwrap());
        assert!(first == second);
    }

    #[test]
    fn a_size_below_the_minimum_names_both() {
        let temporary = tempfile::tempdir().unwrap();
        let (big, _) = big_file(temporary.path());
        let image = sample(&big);
        let minimum = image.min_size().unwrap();
        assert_eq!(minimum % 512, 0);
        let error = image.plan(Some(minimum - 512)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "FAT image of {} bytes is too small: the files need at least {minimum} bytes",
                minimum - 512
            )
        );
    }

    #[test]
    fn a_large_image_gets_fat32_with_larger_clusters() {
        let temporary = tempfile::tempdir().unwrap();
        let sparse = temporary.path().join("sparse");
        File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
        let mut image = FatImage::new("", 1, MTIME, 0).unwrap();
        image.add_file("BIG.IMG", &sparse).unwrap();
        image.add_bytes("SMALL", vec![1]).unwrap();
        let plan = image.plan(None).unwrap();
        assert_eq!(plan.fat_type(), FatType::Fat32);
        assert_eq!(plan.geometry.sectors_per_cluster, 8);
        let files = plan.files();
        assert_eq!(files[0].path, "BIG.IMG");
        assert_eq!(files[1].offset, files[0].offset + (3 << 30));
        assert!(plan.size() < (3 << 30) + (8 << 20), "{}", plan.size());

        File::create(&sparse).unwrap().set_len(4 << 30).unwrap();
        let mut image = FatImage::new("", 1, MTIME, 0).unwrap();
        let error = image.add_file("HUGE.IMG", &sparse).unwrap_err();
        assert!(matches!(error, FatError::FileTooLarge { .. }), "{error}");
    }

    #[test]
    fn names_no_fat_entry_holds_are_refused_and_case_is_ignored() {
        let mut image = FatImage::new("", 1, MTIME, 0).unwrap();
        let too_long = "x".repeat(256);
        for bad in [
            "/ROOT",
            "A//B",
            "A/./B",
            "A/../B",
            "a:b",
            "what?",
            "tab\tname",
            "back\\slash",
            "ends-in-a-dot.",
            "ends-in-a-space ",
            too_long.as_str(),
        ] {
            let error = image.add_bytes(bad, Vec::new()).unwrap_err();
            assert!(matches!(error, FatError::InvalidName { .. }), "{error}");
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        for good in [
            "efi/boot/bootx64.efi",
            "LONGNAME9.EFI",
            "A.TEXT",
            "A.B.C",
            "x".repeat(255).as_str(),
        ] {
            image.add_bytes(good, Vec::new()).unwrap();
        }
        image.add_bytes("A/B", Vec::new()).unwrap();
        for (path, message) in [
            ("A/B", "FAT path \"A/B\" is given twice"),
            ("A/B/C", "FAT path \"A/B/C\" is both a file and a directory"),
            ("A", "FAT path \"A\" is both a file and a directory"),
            (
                "a.text",
                "FAT path \"a.text\" clashes with \"A.TEXT\": FAT names ignore case",
            ),
            (
                "a/b/c",
                "FAT path \"a/b/c\" clashes with \"A\": FAT names ignore case",
            ),
            (
                "EFI/BOOT/OTHER.EFI",
                "FAT path \"EFI/BOOT/OTHER.EFI\" clashes with \"efi\": FAT names ignore case",
            ),
        ] {
            let error = image.add_bytes(path, Vec::new()).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
        image.add_bytes("efi/boot/other.efi", Vec::new()).unwrap();
    }

    /// The aliases of one directory's names, by name.
    fn aliases_of(names: &[&str]) -> BTreeMap<String, String> {
        let mut image = FatImage::new("", 1, MTIME, 0).unwrap();
        for name in names {
            image.add_bytes(name, Vec::new()).unwrap();
        }
        let plan = image.plan(None).unwrap();
        names
            .iter()
            .map(|&name| {
                let short = plan.aliases.get(name).copied();
                let short = short.map_or("(8.3)".to_owned(), |short| {
                    String::from_utf8_lossy(&short).into_owned()
                });
                (name.to_owned(), short)
            })
            .collect()
    }

    #[test]
    fn long_names_get_unique_aliases_in_name_order() {
        let aliases = aliases_of(&[
            "user-data",
            "user-data2",
            "USER-D~3",
            "user-datum",
            "meta-data",
            "network-config",
            "readme.txt",
            "a.b.c",
            ".hidden file.tar.gz",
            "Ünïcode+name",
            "x",
        ]);
        let expected = [
            ("user-data", "USER-D~1   "),
            ("user-data2", "USER-D~2   "),
            ("USER-D~3", "(8.3)"),
            ("user-datum", "USER-D~4   "),
            ("meta-data", "META-D~1   "),
            ("network-config", "NETWOR~1   "),
            ("readme.txt", "README  TXT"),
            ("a.b.c", "AB~1    C  "),
            (".hidden file.tar.gz", "HIDDEN~1GZ "),
            ("Ünïcode+name", "_N_COD~1   "),
            ("x", "X          "),
        ];
        for (name, alias) in expected {
            assert_eq!(aliases[name], alias, "{name}");
        }
        // Ten thousand names of one basis: the tail grows and cuts it.
        let names: Vec<String> = (0..10_000).map(|n| format!("long name {n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let aliases = aliases_of(&names);
        let distinct: BTreeSet<&String> = aliases.values().collect();
        assert_eq!(distinct.len(), 10_000);
        assert_eq!(aliases["long name 0"], "LONGNA~1   ");
        assert!(distinct.contains(&"LO~10000   ".to_owned()));
    }

    #[test]
    fn long_name_entries_are_laid_out_as_fatgen103_says() {
        let alias = *b"NETWOR~1   ";
        // The checksum rotates right and adds, byte by byte.
        let expected = alias.iter().fold(0u8, |sum, &byte| {
            ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(byte)
        });
        assert_eq!(alias_checksum(&alias), expected);
        let entries = long_name_entries_bytes("network-config", &alias);
        assert_eq!(entries.len(), 64);
        let (last, first) = entries.split_at(32);
        assert_eq!((last[0], first[0]), (0x42, 0x01));
        for entry in [last, first] {
            assert_eq!((entry[11], entry[12], entry[13]), (0x0F, 0, expected));
            assert_eq!(&entry[26..28], &[0, 0], "no cluster");
        }
        let units = |entry: &[u8]| -> Vec<u16> {
            LONG_NAME_OFFSETS
                .iter()
                .map(|&at| u16::from_le_bytes([entry[at], entry[at + 1]]))
                .collect()
        };
        let name: Vec<u16> = "network-config".encode_utf16().collect();
        assert_eq!(units(first), name[..13]);
        assert_eq!(units(last)[..2], [u16::from(b'g'), 0]);
        assert!(units(last)[2..].iter().all(|&unit| unit == 0xFFFF));
        // A name that fills its entry has no terminating 0.
        let thirteen = long_name_entries_bytes("thirteen-char", &alias);
        assert_eq!(thirteen.len(), 32);
        assert_eq!(thirteen[0], 0x41);
        assert_eq!(units(&thirteen).last(), Some(&u16::from(b'r')));
    }

    /// Images of upper-case 8.3 names are what they were before long
    /// names existed: the ESPs and boot partitions of earlier builds are
    /// reproduced byte for byte.
    #[test]
    fn images_of_8_3_names_keep_their_bytes() {
        use sha2::{Digest, Sha256};
        let temporary = tempfile::tempdir().unwrap();
        let (big, _) = big_file(temporary.path());
        let mut small = FatImage::new("SMALL", 7, MTIME, 0).unwrap();
        small
            .add_bytes("EFI/BOOT/BOOTX64.EFI", pattern(300_000, 4))
            .unwrap();
        let mut digests = Vec::new();
        for plan in [
            small.plan(None).unwrap(),
            sample(&big).plan(None).unwrap(),
            sample(&big).plan(Some(64 << 20)).unwrap(),
        ] {
            let digest: [u8; 32] = Sha256::digest(write(&plan)).into();
            digests.push(
                digest
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>(),
            );
        }
        assert_eq!(
            digests,
            [
                "51d77f8d574abdb5fb6f4e0670873f78b35ca846d48684a045629f9c53b19a0a",
                "81c95867e8c96c659443b3377aa173899ff2c2bfe31dab8d7cca8d8479dd32b1",
                "2fb7dda5363191b54316b21be0bce0dc6e7f6d7a91890937e022ec6ea3885c46",
            ]
        );
    }

    #[test]
    fn dates_are_utc_in_two_second_steps() {
        // 2023-11-14 22:13:20 UTC.
        let (date, time) = fat_date_time(MTIME);
        assert_eq!((date >> 9, date >> 5 & 15, date & 31), (43, 11, 14));
        assert_eq!((time >> 11, time >> 5 & 63, time & 31), (22, 13, 10));
        assert_eq!(fat_date_time(0), (1 << 5 | 1, 0), "clamped to 1980-01-01");
    }

    /// Each FAT type, checked by dosfstools and read back by mtools.
    #[test]
    fn fsck_passes_and_mtools_reads_the_files_back() {
        let (Some(fsck), Some(mdir), Some(mtype)) = (
            tool_or_skip("fsck.vfat"),
            tool_or_skip("mdir"),
            tool_or_skip("mtype"),
        ) else {
            return;
        };
        let temporary = tempfile::tempdir().unwrap();
        let (big, big_bytes) = big_file(temporary.path());
        let minimum = sample(&big).min_size().unwrap();
        for (size, fat_type) in [
            (None, FatType::Fat16),
            (Some(64 << 20), FatType::Fat32),
            (Some(300 << 20), FatType::Fat32),
        ] {
            let plan = sample(&big).plan(size).unwrap();
            assert_eq!(
                plan.fat_type(),
                fat_type,
                "size {size:?} (minimum {minimum})"
            );
            check_with_tools(&plan, temporary.path(), &fsck, &mdir, &mtype, &big_bytes);
        }
        // Small enough for FAT12.
        let mut small = FatImage::new("SMALL", 7, MTIME, 0).unwrap();
        small
            .add_bytes("EFI/BOOT/BOOTX64.EFI", pattern(300_000, 4))
            .unwrap();
        let plan = small.plan(None).unwrap();
        assert_eq!(plan.fat_type(), FatType::Fat12);
        let image = temporary.path().join("small.img");
        plan.write(File::create(&image).unwrap()).unwrap();
        let status = Command::new(&fsck).arg("-n").arg(&image).output().unwrap();
        assert!(status.status.success(), "{status:?}");
        let read = Command::new(&mtype)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i"])
            .arg(&image)
            .arg("::/EFI/BOOT/BOOTX64.EFI")
            .output()
            .unwrap();
        assert!(read.stdout == pattern(300_000, 4));
    }

    /// Long names in every FAT type, in the root and in a directory
    /// of many clusters: dosfstools finds nothing to fix (a wrong
    /// checksum, ordinal or alias would be), and mtools lists and copies
    /// out every file under its long name.
    #[test]
    fn long_names_pass_fsck_and_mtools_reads_them_back() {
        let (Some(fsck), Some(mdir), Some(mcopy)) = (
            tool_or_skip("fsck.vfat"),
            tool_or_skip("mdir"),
            tool_or_skip("mcopy"),
        ) else {
            return;
        };
        let mut names: Vec<String> = [
            "user-data",
            "meta-data",
            "network-config",
            "vendor-data",
            "readme.txt",
            "USER-D~1",
            "Mixed Case Name.Text",
            ".hidden",
            "a.b.c",
            "Ünïcode ☃ name",
            "dir with spaces/nested-file.json",
            "EFI/BOOT/BOOTX64.EFI",
        ]
        .map(str::to_owned)
        .to_vec();
        names.extend((0..100).map(|n| format!("file {n} with a long name")));
        names.extend((0..100).map(|n| format!("many/lower-case-{n}.conf")));
        let temporary = tempfile::tempdir().unwrap();
        for (size, fat_type) in [
            (None, FatType::Fat12),
            (Some(16 << 20), FatType::Fat16),
            (Some(64 << 20), FatType::Fat32),
        ] {
            let mut image = FatImage::new("LONG NAMES", 9, MTIME, 0).unwrap();
            for name in &names {
                image.add_bytes(name, name.as_bytes().to_vec()).unwrap();
            }
            let plan = image.plan(size).unwrap();
            assert_eq!(plan.fat_type(), fat_type);
            let path = temporary.path().join("long.img");
            plan.write(File::create(&path).unwrap()).unwrap();
            assert_fsck_vfat_clean(&fsck, &path);
            let listing = Command::new(&mdir)
                .env("MTOOLS_SKIP_CHECK", "1")
                .env("LC_ALL", "C.UTF-8")
                .args(["-/", "-b", "-i"])
                .arg(&path)
                .arg("::")
                .output()
                .unwrap();
            assert!(listing.status.success(), "{listing:?}");
            let listed: BTreeSet<&str> = std::str::from_utf8(&listing.stdout)
                .unwrap()
                .lines()
                .filter_map(|line| line.strip_prefix("::/"))
                .collect();
            for name in &names {
                assert!(
                    listed.contains(name.as_str()),
                    "{fat_type:?}: {name} not in {listed:?}"
                );
            }
            let out = temporary.path().join(format!("{fat_type:?}"));
            std::fs::create_dir(&out).unwrap();
            let copy = Command::new(&mcopy)
                .env("MTOOLS_SKIP_CHECK", "1")
                .env("LC_ALL", "C.UTF-8")
                .args(["-s", "-n", "-i"])
                .arg(&path)
                .arg("::/")
                .arg(&out)
                .output()
                .unwrap();
            assert!(copy.status.success(), "{copy:?}");
            for name in &names {
                let read = std::fs::read(out.join(name)).unwrap_or_default();
                assert!(
                    read == name.as_bytes(),
                    "{fat_type:?}: {name} reads back {read:?}"
                );
            }
        }
    }

    fn check_with_tools(
        plan: &FatPlan,
        directory: &Path,
        fsck: &Path,
        mdir: &Path,
        mtype: &Path,
        big: &[u8],
    ) {
        let image = directory.join("image.fat");
        plan.write(File::create(&image).unwrap()).unwrap();
        let fsck_run = Command::new(fsck).arg("-n").arg(&image).output().unwrap();
        assert!(
            fsck_run.status.success(),
            "fsck.vfat -n on {:?}: {}{}",
            plan.fat_type(),
            String::from_utf8_lossy(&fsck_run.stdout),
            String::from_utf8_lossy(&fsck_run.stderr)
        );
        let listing = Command::new(mdir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-a", "-i"])
            .arg(&image)
            .arg("::/EFI/BOOT")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("BOOTX64  EFI     70000"), "{listing}");
        assert!(listing.contains("2023-11-14  22:13"), "{listing}");
        let label = Command::new(mdir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&image)
            .arg("::/")
            .output()
            .unwrap();
        let label = String::from_utf8_lossy(&label.stdout);
        assert!(label.contains("Volume in drive : is BERTH ESP"), "{label}");
        assert!(
            label.contains("Volume Serial Number is 1234-ABCD"),
            "{label}"
        );
        for (path, expected) in [
            ("::/INITRD.IMG", big.to_vec()),
            ("::/EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1)),
            ("::/A/B/C/DEEP.TXT", pattern(513, 2)),
            ("::/SYSLINUX.CFG", b"DEFAULT x\n".to_vec()),
            ("::/EMPTY", Vec::new()),
        ] {
            let read = Command::new(mtype)
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&image)
                .arg(path)
                .output()
                .unwrap();
            assert!(read.status.success(), "mtype {path}: {read:?}");
            assert!(read.stdout == expected, "{path} reads back different bytes");
        }
    }
}
