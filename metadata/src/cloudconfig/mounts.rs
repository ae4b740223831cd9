//! `mounts` and `mount_default_fields`: fstab-style entries, mounted at
//! every boot with mount(2) (berth has no fstab and no `mount -a`).
//!
//! Devices are named as cloud-init takes them: `vdb` or `/dev/vdb`,
//! `LABEL=name`, `UUID=id`. A label or UUID, and the type `auto`, are found
//! by reading the superblocks of the block devices in `/sys/class/block`
//! (ext2/3/4, XFS, Btrfs, FAT, ISO 9660, swap): berth has no udev and so no
//! `/dev/disk/by-label`. cloud-init's `ephemeralN` and `swap` entries and
//! swap files are not supported (logged).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::files;
use crate::state::MountEntry;

use super::config::Text;
use super::system::{Mount, System};

/// cloud-init's default for the fields an entry leaves out.
const DEFAULT_FIELDS: [Option<&str>; 6] = [
    None,
    None,
    Some("auto"),
    Some("defaults,nofail,x-systemd.requires=cloud-init.service"),
    Some("0"),
    Some("2"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Path(String),
    Label(String),
    Uuid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub device: Device,
    pub mount_point: String,
    pub fstype: String,
    pub options: String,
}

/// Checks the entries; skipped ones get a note.
pub fn plan(
    entries: &[Vec<Option<Text>>],
    default_fields: Option<&[Option<Text>]>,
    notes: &mut Vec<String>,
) -> Result<Vec<FstabEntry>, String> {
    let field = |entry: &[Option<Text>], index: usize| -> Option<String> {
        let default = || match default_fields {
            Some(fields) => fields.get(index).cloned().flatten().map(|t| t.0),
            None => DEFAULT_FIELDS[index].map(str::to_string),
        };
        match entry.get(index) {
            Some(Some(text)) => Some(text.0.trim().to_string()),
            _ => default(),
        }
    };
    let mut planned = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = format!("mounts[{index}]");
        let Some(device) = field(entry, 0).filter(|d| !d.is_empty()) else {
            return Err(format!("{at}: no device"));
        };
        let mount_point = field(entry, 1).unwrap_or_default();
        let fstype = field(entry, 2).unwrap_or_else(|| "auto".into());
        let options = field(entry, 3).unwrap_or_else(|| "defaults".into());
        let base = device.rsplit('/').next().unwrap_or_default();
        if device == "swap" || base.starts_with("ephemeral") || fstype == "swap" {
            notes.push(format!(
                "{at}: {device} ({fstype}): swap and ephemeral devices are not supported; skipped"
            ));
            continue;
        }
        if mount_point.is_empty() || mount_point == "none" {
            notes.push(format!("{at}: {device} has no mount point; skipped"));
            continue;
        }
        files::check_shared(&mount_point).map_err(|e| format!("{at}: mount point {e}"))?;
        if options.contains(char::is_whitespace) || fstype.contains(char::is_whitespace) {
            return Err(format!("{at}: a type or options with spaces"));
        }
        if options.split(',').any(|o| o == "noauto") {
            notes.push(format!("{at}: {device} is noauto; not mounted"));
            continue;
        }
        let device = if let Some(label) = device.strip_prefix("LABEL=") {
            Device::Label(label.to_string())
        } else if let Some(uuid) = device.strip_prefix("UUID=") {
            Device::Uuid(uuid.to_string())
        } else if device.starts_with('/') {
            files::check(&device).map_err(|e| format!("{at}: device {e}"))?;
            Device::Path(device)
        } else if device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            Device::Path(format!("/dev/{device}"))
        } else {
            return Err(format!("{at}: {device:?} is not a device name"));
        };
        planned.push(FstabEntry {
            device,
            mount_point,
            fstype,
            options,
        });
    }
    Ok(planned)
}

/// Mounts each entry whose mount point is not mounted yet; each problem is
/// one line of the log.
pub fn apply(entries: &[FstabEntry], root: &Path, mounted: &[MountEntry], system: &dyn System) {
    for entry in entries {
        if mounted.iter().any(|m| m.mount_point == entry.mount_point) {
            continue;
        }
        let device = match &entry.device {
            Device::Path(path) => Some(path.clone()),
            Device::Label(label) => find(root, |fs| fs.label.as_deref() == Some(label)),
            Device::Uuid(uuid) => find(root, |fs| {
                fs.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
            }),
        };
        let Some(device) = device else {
            system.log(&format!(
                "cloud-config: mounts: no device with {:?}; {} not mounted",
                entry.device, entry.mount_point
            ));
            continue;
        };
        let fstype = if entry.fstype == "auto" {
            match probe(&files::under(root, &device)) {
                Ok(Some(fs)) => fs.fstype.to_string(),
                Ok(None) => {
                    system.log(&format!(
                        "cloud-config: mounts: {device}: no filesystem berth knows; {} not mounted",
                        entry.mount_point
                    ));
                    continue;
                }
                Err(e) => {
                    system.log(&format!(
                        "cloud-config: mounts: {device}: {e}; {} not mounted",
                        entry.mount_point
                    ));
                    continue;
                }
            }
        } else {
            entry.fstype.clone()
        };
        let target = files::under(root, &entry.mount_point);
        let result = files::make_dir(&target, 0o755, None).and_then(|()| {
            system.mount(&Mount {
                source: device.clone(),
                target,
                fstype: fstype.clone(),
                options: entry.options.clone(),
            })
        });
        match result {
            Ok(()) => system.log(&format!(
                "cloud-config: mounted {device} ({fstype}) on {}",
                entry.mount_point
            )),
            Err(e) => system.log(&format!(
                "cloud-config: mounts: mounting {device} on {}: {e}",
                entry.mount_point
            )),
        }
    }
}

/// What a superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub fstype: &'static str,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

/// The block device (`/dev/NAME`) whose filesystem matches.
fn find(root: &Path, matches: impl Fn(&Filesystem) -> bool) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("sys/class/block"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let device = format!("/dev/{name}");
        let fs = probe(&files::under(root, &device)).ok()??;
        matches(&fs).then_some(device)
    })
}

/// Reads a device's superblock: the filesystems cloud images carry.
pub fn probe(path: &Path) -> io::Result<Option<Filesystem>> {
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 0x10200];
    let mut read = 0;
    file.seek(SeekFrom::Start(0))?;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    head.truncate(read);
    Ok(identify(&head))
}

/// Where a filesystem keeps its magic, label and UUID.
struct Superblock {
    magic_at: usize,
    magic: &'static [u8],
    fstype: &'static str,
    label_at: usize,
    label_length: usize,
    uuid_at: usize,
}

const SUPERBLOCKS: [Superblock; 3] = [
    // ext2/3/4: the superblock at 1024, magic 0xEF53 at 56.
    Superblock {
        magic_at: 0x438,
        magic: &[0x53, 0xef],
        fstype: "ext4",
        label_at: 0x478,
        label_length: 16,
        uuid_at: 0x468,
    },
    Superblock {
        magic_at: 0,
        magic: b"XFSB",
        fstype: "xfs",
        label_at: 108,
        label_length: 12,
        uuid_at: 32,
    },
    Superblock {
        magic_at: 0x10040,
        magic: b"_BHRfS_M",
        fstype: "btrfs",
        label_at: 0x1012b,
        label_length: 256,
        uuid_at: 0x10020,
    },
];

fn identify(b: &[u8]) -> Option<Filesystem> {
    let at = |offset: usize, len: usize| b.get(offset..offset + len);
    let text = |bytes: &[u8]| {
        let t = String::from_utf8_lossy(bytes)
            .trim_end_matches(['\0', ' '])
            .to_string();
        (!t.is_empty()).then_some(t)
    };
    let uuid = |bytes: &[u8]| {
        (bytes.len() == 16 && bytes.iter().any(|&x| x != 0)).then(|| {
            [0..4, 4..6, 6..8, 8..10, 10..16]
                .map(|r| {
                    bytes[r]
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                })
                .join("-")
        })
    };
    for sb in SUPERBLOCKS {
        if at(sb.magic_at, sb.magic.len()) == Some(sb.magic) {
            return Some(Filesystem {
                fstype: sb.fstype,
                label: at(sb.label_at, sb.label_length).and_then(text),
                uuid: at(sb.uuid_at, 16).and_then(uuid),
            });
        }
    }
    if at(0x8001, 5) == Some(b"CD001") {
        return Some(Filesystem {
            fstype: "iso9660",
            label: at(0x8028, 32).and_then(text),
            uuid: None,
        });
    }
    if at(0x1fe, 2) == Some(&[0x55, 0xaa]) {
        // FAT32 keeps its volume ID and label further in than FAT12/16.
        let (id, label) = if at(0x52, 5) == Some(b"FAT32") {
            (0x43, 0x47)
        } else if at(0x36, 3) == Some(b"FAT") {
            (0x27, 0x2b)
        } else {
            return None;
        };
        let id = at(id, 4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
        return Some(Filesystem {
            fstype: "vfat",
            label: at(label, 11).and_then(text).filter(|l| l != "NO NAME"),
            uuid: id.map(|id| format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
        });
    }
    if at(4096 - 10, 10) == Some(b"SWAPSPACE2") {
        return Some(Filesystem {
            fstype: "swap",
            label: None,
            uuid: None,
        });
    }
    None
}

/// The path of a block device under the host's root, for tests.
#[cfg(test)]
fn device_path(root: &Path, name: &str) -> std::path::PathBuf {
    root.join("dev").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudconfig::system::Recorder;
    use std::process::Command;

    fn tool(program: &str) -> bool {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            crate::test_support::skip(&format!("{program} is needed"));
        }
        found
    }

    fn blkid(path: &Path, tag: &str) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn image(root: &Path, name: &str, mkfs: &[&str]) -> std::path::PathBuf {
        let path = device_path(root, name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        let out = Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(root.join("sys/class/block").join(name)).unwrap();
        path
    }

    /// Labels and UUIDs read as blkid (util-linux) reads them.
    #[test]
    fn superblocks_agree_with_blkid() {
        if !tool("mkfs.ext4") || !tool("mkfs.vfat") || !tool("blkid") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let ext4 = image(root.path(), "vdb", &["mkfs.ext4", "-q", "-F", "-L", "data"]);
        let vfat = image(
            root.path(),
            "vdc",
            &["mkfs.vfat", "-F", "32", "-n", "STUFF"],
        );
        for (path, fstype) in [(&ext4, "ext4"), (&vfat, "vfat")] {
            let fs = probe(path).unwrap().unwrap();
            assert_eq!(fs.fstype, fstype);
            assert_eq!(fs.label.unwrap(), blkid(path, "LABEL"));
            assert_eq!(fs.uuid.unwrap(), blkid(path, "UUID"));
        }
        let uuid = blkid(&ext4, "UUID");
        let system = Recorder::default();
        let entries = plan(
            &[
                vec![
                    Some(Text(format!("UUID={uuid}"))),
                    Some(Text("/var/data".into())),
                ],
                vec![
                    Some(Text("LABEL=STUFF".into())),
                    Some(Text("/run/stuff".into())),
                    Some(Text("vfat".into())),
                    Some(Text("ro,nofail".into())),
                ],
                vec![
                    Some(Text("LABEL=none-such".into())),
                    Some(Text("/tmp/x".into())),
                ],
            ],
            None,
            &mut Vec::new(),
        )
        .unwrap();
        apply(&entries, root.path(), &[], &system);
        let mounts = system.mounts.borrow();
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            (mounts[0].source.as_str(), mounts[0].fstype.as_str()),
            ("/dev/vdb", "ext4")
        );
        assert_eq!(mounts[0].target, root.path().join("var/data"));
        assert_eq!(
            (mounts[1].source.as_str(), mounts[1].options.as_str()),
            ("/dev/vdc", "ro,nofail")
        );
        assert!(root.path().join("run/stuff").is_dir());
        let lines = system.lines.borrow();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("no device with Label(\"none-such\")")),
            "{lines:?}"
        );
    }

    /// cloud-init's documented example: devices by name, default fields
    /// filled in, swap and entries without a mount point skipped.
    #[test]
    fn cloud_init_example() {
        let yaml = "#cloud-config\nmounts:\n - [ /dev/ephemeral0, /mnt, auto, \"defaults,noexec\" ]\n - [ sdc, /opt/data ]\n - [ xvdh, /opt/data, \"auto\", \"defaults,nofail\", \"0\", \"0\" ]\n - [ dd, /dev/zero ]\n - [ sdd, none ]\n - [ swap, none, swap, sw, \"0\", \"0\" ]\nmount_default_fields: [ None, None, \"auto\", \"defaults,nofail\", \"0\", \"2\" ]\n";
        // Its mount points outside the directories the container shares
        // with the host are refused, naming the entry.
        let (config, _) = crate::cloudconfig::config::parse(yaml, "user data").unwrap();
        assert_eq!(
            plan(
                &config.mounts.unwrap(),
                config.mount_default_fields.as_deref(),
                &mut Vec::new()
            )
            .unwrap_err(),
            "mounts[1]: mount point \"/opt/data\" is not under /etc, /home, /run, /var or /tmp, the directories the metadata container shares with the host"
        );
        let yaml = yaml
            .replace("/opt/data", "/var/data")
            .replace("/dev/zero", "/run/zero");
        let (config, _) = crate::cloudconfig::config::parse(&yaml, "user data").unwrap();
        let mut notes = Vec::new();
        let entries = plan(
            &config.mounts.unwrap(),
            config.mount_default_fields.as_deref(),
            &mut notes,
        )
        .unwrap();
        let summary: Vec<(Device, &str, &str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e.device.clone(),
                    e.mount_point.as_str(),
                    e.fstype.as_str(),
                    e.options.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Device::Path("/dev/sdc".into()),
                    "/var/data",
                    "auto",
                    "defaults,nofail"
                ),
                (
                    Device::Path("/dev/xvdh".into()),
                    "/var/data",
                    "auto",
                    "defaults,nofail"
                ),
                (
                    Device::Path("/dev/dd".into()),
                    "/run/zero",
                    "auto",
                    "defaults,nofail"
                ),
            ]
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        let bad = plan(
            &[vec![Some(Text("sdb".into())), Some(Text("data".into()))]],
            None,
            &mut notes,
        );
        assert_eq!(
            bad.unwrap_err(),
            "mounts[0]: mount point \"data\" is not an absolute path"
        );
    }
}
