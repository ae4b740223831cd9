//! What PID 1 sets up before any container runs: the filesystems to mount
//! (in order, each only if the kernel knows its type) and the cgroup
//! controllers handed down, the places containers expect, berth's options
//! on the kernel command line, and the hostname (from the image, else from
//! the first MAC address).
//!
//! The decisions are data and pure functions; doing them goes through
//! [`System`], and files are read under the directory that stands for `/`.

use std::path::Path;
use std::time::Duration;

use crate::logs::LOG_DIR;
use crate::system::{Mount, System, under};

/// A filesystem to mount at boot.
struct Filesystem {
    kind: &'static str,
    target: &'static str,
    flags: &'static [&'static str],
    data: &'static str,
    /// Boot goes on without it when the kernel lacks the type.
    optional: bool,
}

const NOSUID_NODEV_NOEXEC: &[&str] = &["nosuid", "nodev", "noexec"];

/// LinuxKit's set, in mount order: parents before children.
const FILESYSTEMS: &[Filesystem] = &[
    Filesystem {
        kind: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: false,
    },
    Filesystem {
        kind: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: false,
    },
    Filesystem {
        kind: "devtmpfs",
        target: "/dev",
        flags: &["nosuid", "noexec"],
        data: "mode=0755",
        optional: false,
    },
    Filesystem {
        kind: "devpts",
        target: "/dev/pts",
        flags: &["nosuid", "noexec"],
        data: "newinstance,ptmxmode=0666,mode=0620",
        optional: false,
    },
    Filesystem {
        kind: "tmpfs",
        target: "/dev/shm",
        flags: &["nosuid", "nodev"],
        data: "mode=1777",
        optional: false,
    },
    Filesystem {
        kind: "mqueue",
        target: "/dev/mqueue",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "tmpfs",
        target: "/run",
        flags: &["nosuid", "nodev"],
        data: "mode=0755",
        optional: false,
    },
    Filesystem {
        kind: "tmpfs",
        target: "/tmp",
        flags: &["nosuid", "nodev"],
        data: "mode=1777",
        optional: false,
    },
    Filesystem {
        kind: "tmpfs",
        target: "/var",
        flags: &["nosuid", "nodev"],
        data: "mode=0755",
        optional: false,
    },
    Filesystem {
        kind: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
        optional: false,
    },
    Filesystem {
        kind: "securityfs",
        target: "/sys/kernel/security",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "debugfs",
        target: "/sys/kernel/debug",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "tracefs",
        target: "/sys/kernel/tracing",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "configfs",
        target: "/sys/kernel/config",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "bpf",
        target: "/sys/fs/bpf",
        flags: NOSUID_NODEV_NOEXEC,
        data: "mode=0700",
        optional: true,
    },
    Filesystem {
        kind: "fusectl",
        target: "/sys/fs/fuse/connections",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "pstore",
        target: "/sys/fs/pstore",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
    Filesystem {
        kind: "efivarfs",
        target: "/sys/firmware/efi/efivars",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
];

/// The filesystem types the kernel knows, from `/proc/filesystems`.
pub fn known_types(proc_filesystems: &str) -> Vec<String> {
    proc_filesystems
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

/// The mounts to make, in order, given the types the kernel knows. `proc`
/// comes first either way: `/proc/filesystems` is only readable after it.
pub fn mounts(known: &[String]) -> Vec<Mount> {
    FILESYSTEMS
        .iter()
        .filter(|f| !f.optional || known.iter().any(|k| k == f.kind))
        .map(|f| Mount {
            source: f.kind.to_string(),
            target: f.target.to_string(),
            kind: f.kind.to_string(),
            flags: f.flags.to_vec(),
            data: f.data.to_string(),
        })
        .collect()
}

/// Mounts everything; a failure is logged and boot goes on, since a system
/// without, say, debugfs still runs its services. Returns what was mounted.
pub fn mount_all(system: &mut dyn System, known: &[String]) -> Vec<String> {
    let mut mounted = Vec::new();
    for mount in mounts(known) {
        match system.mount(&mount) {
            Ok(()) => mounted.push(mount.target),
            Err(e) => system.log(&format!("mounting {} on {}: {e}", mount.kind, mount.target)),
        }
    }
    mounted
}

/// Mounts the kernel filesystems: those every system has, then the
/// optional ones the kernel knows (`/proc/filesystems` is only readable
/// once `/proc` is mounted), then makes every mount shared. Returns what
/// was mounted, in order.
pub fn mount_filesystems(system: &mut dyn System, root: &Path) -> Vec<String> {
    let mut mounted = mount_all(system, &[]);
    let filesystems = std::fs::read_to_string(under(root, "/proc/filesystems"));
    let known = known_types(&filesystems.unwrap_or_default());
    let optional: Vec<Mount> = mounts(&known)
        .into_iter()
        .filter(|m| !mounted.contains(&m.target))
        .collect();
    for mount in optional {
        match system.mount(&mount) {
            Ok(()) => mounted.push(mount.target),
            Err(e) => system.log(&format!("mounting {} on {}: {e}", mount.kind, mount.target)),
        }
    }
    // Every mount shared, as LinuxKit's init leaves them: a container that
    // binds /var with rshared (images/mount) mounts a disk for the host.
    let shared = Mount {
        source: "none".into(),
        target: "/".into(),
        kind: "none".into(),
        flags: vec!["rshared"],
        data: String::new(),
    };
    if let Err(e) = system.mount(&shared) {
        system.log(&format!("making the mounts shared: {e}"));
    }
    mounted
}

/// Hands every cgroup v2 controller down to the containers' cgroups.
pub fn delegate_controllers(system: &mut dyn System, root: &Path) {
    let cgroup = "/sys/fs/cgroup";
    let controllers = std::fs::read_to_string(under(root, &format!("{cgroup}/cgroup.controllers")));
    let enable: Vec<String> = controllers
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    let subtree = format!("{cgroup}/cgroup.subtree_control");
    if let Err(e) = system.set_kernel_value(&subtree, &enable.join(" ")) {
        system.log(&format!("delegating cgroup controllers {enable:?}: {e}"));
    }
}

/// Makes the writable places the image expects: the directory of the
/// containers' logs, and the file the root's `/etc/resolv.conf` points at
/// (DHCP fills it in).
pub fn make_places(system: &mut dyn System, root: &Path) {
    if let Err(e) = std::fs::create_dir_all(under(root, LOG_DIR)) {
        system.log(&format!("{LOG_DIR}: {e}"));
    }
    let resolv = "/run/resolvconf/resolv.conf";
    let made = std::fs::create_dir_all(under(root, "/run/resolvconf")).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(under(root, resolv))
    });
    if let Err(e) = made {
        system.log(&format!("{resolv}: {e}"));
    }
}

/// berth's options from the kernel command line; problems are logged.
pub fn read_options(system: &mut dyn System, root: &Path) -> Options {
    let cmdline = std::fs::read_to_string(under(root, "/proc/cmdline")).unwrap_or_default();
    let (options, problems) = options(&cmdline);
    for problem in problems {
        system.log(&problem);
    }
    options
}

/// Sets the hostname: `/etc/hostname` if the image has one, else a name
/// from the first network interface's MAC address.
pub fn set_hostname(system: &mut dyn System, root: &Path) {
    let from_file = match hostname_file(&under(root, "/etc/hostname")) {
        Ok(name) => name,
        Err(why) => {
            system.log(&format!("/etc/hostname: {why}; using the MAC address"));
            None
        }
    };
    let name = from_file.or_else(|| {
        let mut interfaces: Vec<_> = std::fs::read_dir(under(root, "/sys/class/net"))
            .ok()?
            .flatten()
            .collect();
        interfaces.sort_by_key(|e| e.file_name());
        interfaces
            .iter()
            .filter(|e| e.file_name() != "lo")
            .find_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
            .map(|mac| hostname_from_mac(&mac))
    });
    if let Some(name) = name {
        match system.set_hostname(&name) {
            Ok(()) => system.log(&format!("hostname {name}")),
            Err(e) => system.log(&format!("setting hostname {name}: {e}")),
        }
    }
}

/// The name `/etc/hostname` gives (its first line, trimmed), `None` if
/// there is no such file or it is empty, or why it cannot be a hostname
/// (the image wrote it: not text, a NUL, more than the kernel's 64 bytes).
pub fn hostname_file(path: &Path) -> Result<Option<String>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let name = text.lines().next().unwrap_or_default().trim();
    if name.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    if name.len() > 64 {
        return Err(format!("{} bytes, more than 64", name.len()));
    }
    Ok(Some(name.to_string()).filter(|n| !n.is_empty()))
}

/// berth's options on the kernel command line (documented in init's README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `berth.console=1`: copy every container's output to the console.
    pub console_logs: bool,
    /// `berth.grace=SECONDS`: how long services get between SIGTERM and
    /// SIGKILL at shutdown (default 10).
    pub grace: Duration,
    /// `berth.debug=1`: more boot messages.
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            console_logs: false,
            grace: Duration::from_secs(10),
            debug: false,
        }
    }
}

/// Reads berth's options from `/proc/cmdline`; unknown `berth.` options and
/// bad values are reported, not fatal.
pub fn options(cmdline: &str) -> (Options, Vec<String>) {
    let mut options = Options::default();
    let mut problems = Vec::new();
    for word in cmdline.split_whitespace() {
        let Some(option) = word.strip_prefix("berth.") else {
            continue;
        };
        let (key, value) = option.split_once('=').unwrap_or((option, "1"));
        let flag = |v: &str| matches!(v, "1" | "yes" | "true" | "on");
        match key {
            "console" => options.console_logs = flag(value),
            "debug" => options.debug = flag(value),
            "grace" => match value.parse::<u64>() {
                Ok(seconds) => options.grace = Duration::from_secs(seconds),
                Err(_) => problems.push(format!("berth.grace={value}: not a number of seconds")),
            },
            // Read before anything else, by `root::leave_initramfs`.
            "root" => {}
            _ => problems.push(format!("unknown option {word}")),
        }
    }
    (options, problems)
}

/// The hostname of a machine whose image sets none: from its first MAC
/// address, so that every machine of a fleet booted from one image differs.
pub fn hostname_from_mac(mac: &str) -> String {
    let hex: String = mac.chars().filter(char::is_ascii_hexdigit).collect();
    format!("berth-{}", hex.to_ascii_lowercase())
}

/// `mounted` (init's own mounts, in mount order) followed by the other
/// mount points `/proc/self/mountinfo` lists (made by containers with a
/// shared bind, such as a disk on /var/lib), in its order, which is mount
/// order; `/` is left out.
pub fn with_later_mounts(mounted: &[String], mountinfo: &str) -> Vec<String> {
    let mut all = mounted.to_vec();
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = unescape(point);
        if point != "/" && !all.contains(&point) {
            all.push(point);
        }
    }
    all
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (byte, octal) {
            (b'\\', Some(digits)) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')),
                );
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Fake;

    #[test]
    fn mounts_follow_the_kernel() {
        let known = known_types("nodev\tsysfs\nnodev\tproc\nnodev\tbpf\n\text4\nnodev\tcgroup2\n");
        assert!(known.contains(&"ext4".to_string()));
        let targets: Vec<String> = mounts(&known).into_iter().map(|m| m.target).collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/tmp",
                "/var",
                "/sys/fs/cgroup",
                "/sys/fs/bpf"
            ]
        );
    }

    #[test]
    fn mounts_made_by_containers_come_after_inits_own() {
        let mountinfo = "\
22 1 0:21 / / ro - tmpfs rootfs rw
23 22 0:22 / /proc rw - proc proc rw
30 22 0:30 / /var rw,shared:5 - tmpfs tmpfs rw
41 30 254:0 / /var/lib rw,shared:5 - ext4 /dev/vda rw
42 22 0:40 / /mnt/my\\040disk rw - ext4 /dev/vdb rw
";
        let mounted = ["/proc".to_string(), "/var".to_string()];
        assert_eq!(
            with_later_mounts(&mounted, mountinfo),
            ["/proc", "/var", "/var/lib", "/mnt/my disk"]
        );
    }

    #[test]
    fn a_failed_mount_is_logged_and_boot_goes_on() {
        let mut system = Fake::default();
        let mounted = mount_all(&mut system, &[]);
        assert_eq!(mounted.len(), 9);
        assert_eq!(system.calls[0], "mount proc /proc");
        assert_eq!(system.calls[8], "mount cgroup2 /sys/fs/cgroup");
    }

    #[test]
    fn command_line_options() {
        let (parsed, problems) =
            options("console=ttyS0 berth.console berth.grace=3 berth.debug=0 berth.nope quiet");
        assert!(parsed.console_logs);
        assert!(!parsed.debug);
        assert_eq!(parsed.grace, Duration::from_secs(3));
        assert_eq!(problems, ["unknown option berth.nope"]);
        let (_, problems) = options("berth.grace=soon");
        assert_eq!(problems, ["berth.grace=soon: not a number of seconds"]);
    }

    #[test]
    fn a_hostname_file_is_read_as_text_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hostname");
        assert_eq!(hostname_file(&file), Ok(None));
        for (bytes, expected) in [
            (&b"box\n"[..], Ok(Some("box".to_string()))),
            (b"  box  \nsecond line\n", Ok(Some("box".to_string()))),
            (b"\n", Ok(None)),
            (b"\xff\xfe", Err("not UTF-8 text".to_string())),
            (b"a\0b", Err("holds a NUL byte".to_string())),
            (&[b'a'; 65][..], Err("65 bytes, more than 64".to_string())),
        ] {
            std::fs::write(&file, bytes).unwrap();
            assert_eq!(hostname_file(&file), expected, "{bytes:?}");
        }
        // A bad file is said, and the MAC address names the host instead.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::create_dir_all(root.path().join("sys/class/net/eth0")).unwrap();
        std::fs::write(root.path().join("etc/hostname"), b"\xff").unwrap();
        std::fs::write(
            root.path().join("sys/class/net/eth0/address"),
            "52:54:00:12:34:56\n",
        )
        .unwrap();
        let mut system = Fake::default();
        set_hostname(&mut system, root.path());
        assert_eq!(
            system.calls,
            [
                "log /etc/hostname: not UTF-8 text; using the MAC address",
                "hostname berth-525400123456",
                "log hostname berth-525400123456",
            ]
        );
    }

    #[test]
    fn hostnames_from_macs() {
        assert_eq!(hostname_from_mac("52:54:00:12:34:56"), "berth-525400123456");
        assert_eq!(
            hostname_from_mac("AA:BB:CC:DD:EE:FF\n"),
            "berth-aabbccddeeff"
        );
    }
}
