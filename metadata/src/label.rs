//! Filesystems found by their label, as cloud-init finds its seeds: the
//! label read straight from the superblock of each block device in
//! `/sys/class/block` (no blkid, no udev in the image), then the filesystem
//! mounted read-only in a private directory, read with a size cap and
//! unmounted. Only the two filesystems seeds come on: vfat (the volume label
//! in the root directory, else in the boot sector) and iso9660 (the primary
//! volume descriptor's volume identifier).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest file read from a seed.
pub const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Vfat,
    Iso9660,
}

impl FsType {
    /// Its name for mount(2).
    pub fn name(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
        }
    }
}

/// A filesystem's type and label, from its first sectors.
pub fn read_label(device: &mut (impl Read + Seek)) -> Option<(FsType, String)> {
    if let Some(label) = iso9660_label(device) {
        return Some((FsType::Iso9660, label));
    }
    fat_label(device).map(|label| (FsType::Vfat, label))
}

fn read_at(device: &mut (impl Read + Seek), offset: u64, len: usize) -> Option<Vec<u8>> {
    device.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0; len];
    device.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// ECMA-119 8.4: the primary volume descriptor is at sector 16 (2048-byte
/// sectors), type 1, "CD001", its volume identifier at offset 40 (32
/// d-characters padded with spaces).
fn iso9660_label(device: &mut (impl Read + Seek)) -> Option<String> {
    let pvd = read_at(device, 16 * 2048, 2048)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(trimmed(&pvd[40..72]))
}

fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// The FAT volume label: the root directory's volume-label entry (what
/// mkfs.vfat, mlabel and Windows write and blkid reports), else the
/// extended boot record's copy; "NO NAME" is no label. A boot sector is
/// taken for FAT only with a sane BPB and the "FAT" type string, so a
/// partition table's MBR is never read as one.
fn fat_label(device: &mut (impl Read + Seek)) -> Option<String> {
    let boot = read_at(device, 0, 512)?;
    if boot[510..512] != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = le16(&boot, 11);
    let sectors_per_cluster = u64::from(boot[13]);
    let reserved = le16(&boot, 14);
    let fats = u64::from(boot[16]);
    let root_entries = le16(&boot, 17);
    let fat_size16 = le16(&boot, 22);
    let sane = (512..=4096).contains(&bytes_per_sector)
        && bytes_per_sector.is_power_of_two()
        && sectors_per_cluster.is_power_of_two()
        && reserved > 0
        && (1..=4).contains(&fats);
    if !sane {
        return None;
    }
    let fat32 = fat_size16 == 0;
    let (signature, label_at, type_at) = match fat32 {
        true => (66, 71, 82),
        false => (38, 43, 54),
    };
    if &boot[type_at..type_at + 3] != b"FAT" && &boot[54..57] != b"FAT" {
        return None;
    }
    let (root, root_len) = if fat32 {
        let first_data = reserved + fats * le32(&boot, 36);
        let cluster = le32(&boot, 44).max(2);
        let at = (first_data + (cluster - 2) * sectors_per_cluster) * bytes_per_sector;
        (at, sectors_per_cluster * bytes_per_sector)
    } else {
        let at = (reserved + fats * fat_size16) * bytes_per_sector;
        (at, root_entries * 32)
    };
    let root_len = usize::try_from(root_len.min(1 << 20)).ok()?;
    if let Some(entries) = read_at(device, root, root_len) {
        for entry in entries.chunks_exact(32) {
            match entry[0] {
                0 => break,
                0xE5 => continue,
                _ => {}
            }
            let attributes = entry[11];
            if attributes & 0x0F != 0x0F && attributes & 0x08 != 0 {
                return Some(trimmed(&entry[..11]));
            }
        }
    }
    let label = trimmed(&boot[label_at..label_at + 11]);
    (boot[signature] == 0x29 && label != "NO NAME" && !label.is_empty()).then_some(label)
}

/// A block device with a filesystem that has a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub device: PathBuf,
    pub fs: FsType,
    pub label: String,
}

/// Every block device (in `/sys/class/block`, opened in `dev`) whose
/// filesystem's label is one of `labels`, compared without case as
/// cloud-init does (`cidata` and `CIDATA`, `config-2` and `CONFIG-2`).
pub fn find(sys_class_block: &Path, dev: &Path, labels: &[&str]) -> Vec<Labelled> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let device = dev.join(&name);
        let Ok(mut file) = File::open(&device) else {
            continue;
        };
        if let Some((fs, label)) = read_label(&mut file)
            && labels.iter().any(|l| l.eq_ignore_ascii_case(&label))
        {
            found.push(Labelled { device, fs, label });
        }
    }
    found
}

/// A filesystem mounted read-only in a private directory, unmounted (and
/// the directory removed) when dropped.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    /// Mounts `device` read-only, nosuid, nodev, noexec. vfat is asked for
    /// UTF-8 names, and mounted without the option if the kernel lacks
    /// nls_utf8.
    pub fn new(device: &Path, fs: FsType) -> Result<Mounted, String> {
        match fs {
            FsType::Vfat => Mounted::with_type(device, fs.name(), &[c"iocharset=utf8", c""]),
            FsType::Iso9660 => Mounted::with_type(device, fs.name(), &[c""]),
        }
    }

    /// Mounts `device` as `fs_type` read-only, nosuid, nodev, noexec, with
    /// the first of `options` the kernel takes.
    fn with_type(
        device: &Path,
        fs_type: &str,
        options: &[&std::ffi::CStr],
    ) -> Result<Mounted, String> {
        use rustix::mount::MountFlags;
        let dir = private_dir().map_err(|e| format!("a directory to mount on: {e}"))?;
        let flags =
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        let mut result = Err(rustix::io::Errno::INVAL);
        for data in options {
            result = rustix::mount::mount(device, &dir, fs_type, flags, *data);
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(()) => Ok(Mounted { dir }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!("mounting {} ({fs_type}): {e}", device.display()))
            }
        }
    }

    /// The file at `relative` (a path inside the filesystem), `None` if it
    /// does not exist; a link, a directory or a file over `MAX_FILE` is an
    /// error naming it.
    pub fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, String> {
        read_capped(&self.dir.join(relative), relative)
    }
}

/// A regular file's bytes, capped; `None` if it does not exist. `name` is
/// what errors call it.
pub fn read_capped(path: &Path, name: &str) -> Result<Option<Vec<u8>>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{name}: {} bytes, more than {MAX_FILE}",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{name}: more than {MAX_FILE} bytes"));
    }
    Ok(Some(bytes))
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH) {
            println!("unmounting {}: {e}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A new directory only root can enter, in the temporary directory.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let mut last = None;
    for n in 0..100 {
        let dir = base.join(format!("berth-metadata-{pid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no name left")))
}

#[cfg(test)]
mod tests;
