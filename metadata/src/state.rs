//! Where cloud-config keeps what it applied, and the writable `/etc` and
//! `/home` that live there.
//!
//! The host's `/` is an immutable image. The state directory is
//! `/var/lib/berth/cloud-config` when `/var/lib` is on a mounted filesystem
//! that is not tmpfs (a persistent disk), else `/run/berth/cloud-config`.
//! `/etc` becomes an overlay whose upper layer is in the state directory,
//! and the state directory's `home/` is bound onto `/home`. So what
//! cloud-config changed lasts exactly as long as the record that it was
//! applied: per instance on a disk, per boot without one.

use std::io;
use std::path::{Path, PathBuf};

use crate::cloudconfig::system::{Mount, System};
use crate::files;

pub const PERSISTENT_DIR: &str = "/var/lib/berth/cloud-config";
pub const VOLATILE_DIR: &str = "/run/berth/cloud-config";

/// The state directory, as a path on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub dir: String,
    pub persistent: bool,
}

/// One line of `/proc/self/mountinfo`: its mount point, filesystem type,
/// and the directory of its filesystem it shows (`/` but for binds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
    pub root: String,
}

/// The mounts of `/proc/self/mountinfo` (proc(5)): field 5 is the mount
/// point (octal escapes for spaces), the type follows the ` - ` separator.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let root = unescape(before.split(' ').nth(3)?);
            let mount_point = unescape(before.split(' ').nth(4)?);
            let fstype = after.split(' ').next()?.to_string();
            Some(MountEntry {
                mount_point,
                fstype,
                root,
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The mount that holds `path`: the last-mounted of the longest mount
/// points that contain it.
pub fn mount_of<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let contains = |point: &str| {
        point == "/"
            || path == point
            || path
                .strip_prefix(point)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    mounts
        .iter()
        .filter(|m| contains(&m.mount_point))
        .max_by_key(|m| m.mount_point.len())
}

impl State {
    /// Chooses the state directory from the host's mounts.
    pub fn choose(mounts: &[MountEntry]) -> State {
        let persistent = mount_of(mounts, PERSISTENT_DIR)
            .is_some_and(|m| m.mount_point != "/" && m.fstype != "tmpfs");
        State {
            dir: if persistent {
                PERSISTENT_DIR
            } else {
                VOLATILE_DIR
            }
            .to_string(),
            persistent,
        }
    }

    fn path(&self, root: &Path, name: &str) -> PathBuf {
        files::under(root, &format!("{}/{name}", self.dir))
    }

    /// The instance ID applied last, if any.
    pub fn applied_instance(&self, root: &Path) -> Option<String> {
        let text = std::fs::read_to_string(self.path(root, "instance-id")).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    }

    /// Records that everything of `id` was applied.
    pub fn record_instance(&self, root: &Path, id: &str) -> io::Result<()> {
        files::write_atomic(
            &self.path(root, "instance-id"),
            format!("{id}\n").as_bytes(),
            0o600,
            None,
        )
    }

    /// Where scripts from user data are kept to be run.
    pub fn scripts_dir(&self, root: &Path) -> PathBuf {
        self.path(root, "scripts")
    }

    /// Makes `/etc` an overlay with its upper layer in the state directory
    /// and binds the state directory's `home/` onto `/home`, unless already
    /// done (a second run in the same boot).
    pub fn make_writable(
        &self,
        root: &Path,
        mounts: &[MountEntry],
        system: &dyn System,
    ) -> io::Result<()> {
        let is_mounted = |point: &str, fstype: Option<&str>| {
            mounts
                .iter()
                .any(|m| m.mount_point == point && fstype.is_none_or(|t| m.fstype == t))
        };
        for dir in ["etc/upper", "etc/work", "home"] {
            files::make_dir(&self.path(root, dir), 0o755, None)?;
        }
        if !is_mounted("/etc", Some("overlay")) {
            system.mount(&Mount {
                source: "overlay".into(),
                target: files::under(root, "/etc"),
                fstype: "overlay".into(),
                options: format!(
                    "lowerdir={},upperdir={},workdir={}",
                    files::under(root, "/etc").display(),
                    self.path(root, "etc/upper").display(),
                    self.path(root, "etc/work").display()
                ),
            })?;
        }
        // /home is the state's home/ once bound there; a bind of the
        // image's read-only /home (the container's own) does not count.
        let home_bound = mounts
            .iter()
            .any(|m| m.mount_point == "/home" && m.root.ends_with("/berth/cloud-config/home"));
        if !home_bound {
            files::make_dir(&files::under(root, "/home"), 0o755, None)?;
            system.mount(&Mount {
                source: self.path(root, "home").display().to_string(),
                target: files::under(root, "/home"),
                fstype: String::new(),
                options: "bind".into(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudconfig::system::Recorder;

    const MOUNTINFO: &str = "\
22 1 0:20 / / ro,relatime - squashfs /dev/root ro
23 22 0:21 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
24 22 0:22 / /var rw - tmpfs tmpfs rw
30 24 8:1 / /var/lib rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn persistent_when_var_lib_is_a_disk() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        let state = State::choose(&mounts);
        assert!(state.persistent);
        assert_eq!(state.dir, PERSISTENT_DIR);
    }

    #[test]
    fn volatile_on_tmpfs_or_the_image() {
        let without_disk: String = MOUNTINFO
            .lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect();
        let state = State::choose(&parse_mountinfo(&without_disk));
        assert_eq!(state.dir, VOLATILE_DIR);
        let only_root: String = MOUNTINFO.lines().take(1).collect();
        assert!(!State::choose(&parse_mountinfo(&only_root)).persistent);
        assert!(!State::choose(&[]).persistent);
    }

    #[test]
    fn mount_points_with_spaces_and_prefixes() {
        let mounts = parse_mountinfo("1 0 0:1 / /var/lib\\040x rw - ext4 /dev/a rw\n");
        assert_eq!(mounts[0].mount_point, "/var/lib x");
        assert!(mount_of(&mounts, "/var/lib/berth").is_none());
    }

    #[test]
    fn writable_etc_and_home() {
        let root = tempfile::tempdir().unwrap();
        let system = Recorder::default();
        let state = State::choose(&[]);
        state.make_writable(root.path(), &[], &system).unwrap();
        let mounts = system.mounts.borrow();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "overlay");
        let r = root.path().display();
        assert_eq!(
            mounts[0].options,
            format!(
                "lowerdir={r}/etc,upperdir={r}/run/berth/cloud-config/etc/upper,workdir={r}/run/berth/cloud-config/etc/work"
            )
        );
        assert_eq!(mounts[1].source, format!("{r}/run/berth/cloud-config/home"));
        assert_eq!(mounts[1].options, "bind");
        assert!(root.path().join("run/berth/cloud-config/etc/work").is_dir());
        drop(mounts);
        // Already mounted: nothing again.
        let done = parse_mountinfo(
            "1 0 0:1 / /etc rw - overlay overlay rw\n\
             2 0 0:2 /berth/cloud-config/home /home rw - tmpfs tmpfs rw\n",
        );
        let again = Recorder::default();
        state.make_writable(root.path(), &done, &again).unwrap();
        assert!(again.mounts.borrow().is_empty());
        // The container's bind of the image's read-only /home (and /etc) is
        // not the state's: both are mounted over it.
        let container = parse_mountinfo(
            "1 0 0:1 /etc /etc ro - tmpfs rootfs ro\n2 0 0:1 /home /home ro - tmpfs rootfs ro\n",
        );
        let over = Recorder::default();
        state.make_writable(root.path(), &container, &over).unwrap();
        assert_eq!(over.mounts.borrow().len(), 2);
    }

    /// The overlay and the bind mounted for real, by root in a private
    /// mount namespace (`unshare`), on a temporary root: changes to /etc
    /// land in the upper layer, the lower /etc is left as it was.
    #[test]
    fn writable_etc_and_home_for_real() {
        if let Some(root) = crate::test_support::namespace_root() {
            let system = crate::cloudconfig::Live;
            State::choose(&[])
                .make_writable(&root, &[], &system)
                .unwrap();
            assert_eq!(
                std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
                "root:x:0:0::/root:/bin/sh\n"
            );
            std::fs::write(root.join("etc/new"), "x").unwrap();
            std::fs::create_dir(root.join("home/alice")).unwrap();
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let name = "state::tests::writable_etc_and_home_for_real";
        if crate::test_support::in_private_namespaces(name, &["--mount"], root.path()).is_none() {
            return;
        }
        let state = root.path().join("run/berth/cloud-config");
        assert!(state.join("etc/upper/new").is_file());
        assert!(!root.path().join("etc/new").exists());
        assert!(state.join("home/alice").is_dir());
    }

    #[test]
    fn instance_record() {
        let root = tempfile::tempdir().unwrap();
        let state = State::choose(&[]);
        assert_eq!(state.applied_instance(root.path()), None);
        state.record_instance(root.path(), "i-abc").unwrap();
        assert_eq!(
            state.applied_instance(root.path()).as_deref(),
            Some("i-abc")
        );
    }
}
