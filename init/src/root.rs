//! A root that containers can leave: the initramfs moved into a tmpfs.
//!
//! The kernel unpacks the initrd into `rootfs`, the root of the mount tree,
//! which `pivot_root(2)` cannot move away from; every OCI runtime pivots
//! into the container's root. LinuxKit copies the initramfs into a tmpfs
//! and switches to it; berth does the same, in Rust, before anything else:
//! each file is removed from the initramfs once copied, so memory use does
//! not double, and hard links, devices, owners and modes are kept. The
//! copy is mounted on `/`, init executes itself again from it
//! ([`leave_initramfs`]), and the root is made read-only once the bundles are
//! ready (see `main`).
//!
//! Alternatives weighed: `no_pivot` (chroot into the container's root)
//! leaves the old root reachable from inside containers; booting with
//! `root=` needs a block device, which a kernel+initrd boot has not.
//!
//! A `kernel+squashfs` build names its root with `berth.root=squashfs:ID`:
//! then the initramfs holds only init and modules, and the root is the
//! image on a disk under a tmpfs overlay ([`crate::squashfs`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{FileType, Mode};

use crate::system::{Mount, System, under};

/// Leaves the initramfs: for the squashfs root the command line names
/// (`berth.root`), into it ([`crate::squashfs`]); otherwise copies the
/// initramfs into a tmpfs, moves that onto `/` and executes init again
/// (`args`) from there. Returns when there is nothing to leave, or when the
/// copy fails (then boot goes on where it is, and containers will not start
/// if that is the initramfs); an error when the squashfs root named on the
/// command line cannot be reached, for the fatal path: without it there is
/// no system to boot.
pub fn leave_initramfs(
    system: &mut dyn System,
    root: &Path,
    args: &[String],
) -> Result<(), String> {
    let proc = Mount {
        source: "proc".into(),
        target: "/proc".into(),
        kind: "proc".into(),
        flags: vec![],
        data: String::new(),
    };
    if let Err(e) = system.mount(&proc) {
        system.log(&format!("mounting /proc: {e}"));
        return Ok(());
    }
    let mounts = fs::read_to_string(under(root, "/proc/mounts")).unwrap_or_default();
    let cmdline = fs::read_to_string(under(root, "/proc/cmdline")).unwrap_or_default();
    let _ = system.unmount("/proc");
    if !is_initramfs(&mounts) {
        return Ok(());
    }
    if let Some(id) = contract::squashfs::requested_root(&cmdline)? {
        return crate::squashfs::into_squashfs(system, root, args, &id);
    }
    let new_root = "/.berth-root";
    let moved = (|| -> Result<(), String> {
        system.mount(&Mount {
            source: "tmpfs".into(),
            target: new_root.into(),
            kind: "tmpfs".into(),
            flags: vec![],
            // Not tmpfs's default half of memory: the initramfs is consumed
            // as it is copied, so the copy may be as large as it was.
            data: "mode=0755,size=100%".into(),
        })?;
        let count = copy_tree(root, &under(root, new_root), &[".berth-root"], true)
            .map_err(|e| format!("copying the initramfs: {e}"))?;
        system.log(&format!("initramfs moved to a tmpfs ({count} entries)"));
        system.switch_root(new_root)
    })();
    match moved {
        Ok(()) => {
            let e = system.exec_self(args);
            system.log(&e);
        }
        Err(e) => system.log(&format!("staying in the initramfs: {e}")),
    }
    Ok(())
}

/// Whether `/` is the initramfs: the last mount on `/` in `/proc/mounts`
/// is of type `rootfs`.
pub fn is_initramfs(proc_mounts: &str) -> bool {
    proc_mounts
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_, target, kind) = (words.next(), words.next()?, words.next()?);
            (target == "/").then_some(kind)
        })
        .next_back()
        == Some("rootfs")
}

/// Copies the tree at `from` into `to` (an existing directory), skipping
/// the top-level names in `skip`; with `consume`, each non-directory is
/// removed from `from` once copied. Returns the number of entries copied.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str], consume: bool) -> io::Result<u64> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut count = 0;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf(), true)];
    while let Some((src_dir, dst_dir, top)) = stack.pop() {
        for entry in fs::read_dir(&src_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if top && skip.iter().any(|s| name == *s) {
                continue;
            }
            let (src, dst) = (entry.path(), dst_dir.join(&name));
            let meta = fs::symlink_metadata(&src)?;
            let kind = meta.file_type();
            let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", src.display()));
            if kind.is_dir() {
                fs::create_dir(&dst).or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(at(e)),
                })?;
                stack.push((src.clone(), dst.clone(), false));
            } else if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                // (Its other names may be gone already: consumed.)
                fs::hard_link(first, &dst).map_err(at)?;
            } else {
                if kind.is_symlink() {
                    std::os::unix::fs::symlink(fs::read_link(&src)?, &dst).map_err(at)?;
                } else if kind.is_file() {
                    fs::copy(&src, &dst).map_err(at)?;
                } else {
                    let file_type = FileType::from_raw_mode(meta.mode());
                    let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
                    rustix::fs::mknodat(rustix::fs::CWD, &dst, file_type, mode, meta.rdev())
                        .map_err(|e| at(e.into()))?;
                }
                if meta.nlink() > 1 {
                    links.insert((meta.dev(), meta.ino()), dst.clone());
                }
            }
            own(&dst, &meta).map_err(at)?;
            if consume && !kind.is_dir() {
                fs::remove_file(&src).map_err(at)?;
            }
            count += 1;
        }
    }
    Ok(count)
}

/// Gives `path` the owner and mode of `meta` (not following a link).
fn own(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let uid = rustix::fs::Uid::from_raw(meta.uid());
    let gid = rustix::fs::Gid::from_raw(meta.gid());
    let current = fs::symlink_metadata(path)?;
    if (current.uid(), current.gid()) != (meta.uid(), meta.gid()) {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(uid),
            Some(gid),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_is_copied_switched_to_and_init_executed_again() {
        use crate::system::Fake;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("proc")).unwrap();
        fs::write(r.join("proc/mounts"), "rootfs / rootfs rw 0 0\n").unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/hostname"), "box\n").unwrap();
        fs::write(r.join("init"), "").unwrap();
        // What the tmpfs mount would have made.
        fs::create_dir(r.join(".berth-root")).unwrap();
        let mut system = Fake::default();
        leave_initramfs(&mut system, r, &["/init".into(), "-v".into()]).unwrap();
        assert_eq!(
            system.calls,
            [
                "mount proc /proc",
                "unmount /proc",
                "mount tmpfs /.berth-root",
                "log initramfs moved to a tmpfs (5 entries)",
                "switch root /.berth-root",
                "exec /init -v",
                "log the fake does not execute",
            ]
        );
        let copy = r.join(".berth-root");
        assert_eq!(
            fs::read_to_string(copy.join("etc/hostname")).unwrap(),
            "box\n"
        );
        assert!(!r.join("etc/hostname").exists(), "consumed");

        // Anywhere else, there is nothing to leave.
        fs::write(
            copy.join("proc/mounts"),
            "rootfs / rootfs rw 0 0\ntmpfs / tmpfs rw 0 0\n",
        )
        .unwrap();
        let mut system = Fake::default();
        leave_initramfs(&mut system, copy.as_path(), &["/init".into()]).unwrap();
        assert_eq!(system.calls, ["mount proc /proc", "unmount /proc"]);
    }

    #[test]
    fn only_the_initramfs_needs_moving() {
        assert!(is_initramfs(
            "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n"
        ));
        assert!(!is_initramfs(
            "rootfs / rootfs rw 0 0\ntmpfs / tmpfs ro 0 0\n"
        ));
        assert!(!is_initramfs("/dev/vda1 / ext4 rw 0 0\n"));
    }

    #[test]
    fn a_copy_keeps_links_modes_and_consumes_the_source() {
        use std::os::unix::fs::FileTypeExt;
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let f = from.path();
        fs::create_dir_all(f.join("usr/bin")).unwrap();
        fs::create_dir_all(f.join("proc")).unwrap();
        fs::write(f.join("usr/bin/tool"), "tool").unwrap();
        fs::set_permissions(f.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(f.join("usr/bin/tool"), f.join("usr/bin/other")).unwrap();
        std::os::unix::fs::symlink("usr/bin/tool", f.join("link")).unwrap();
        fs::set_permissions(f.join("usr"), fs::Permissions::from_mode(0o700)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::write(f.join("proc/skipped"), "").unwrap();
        let count = copy_tree(f, to.path(), &["proc"], true).unwrap();
        assert_eq!(count, 6);
        let t = to.path();
        assert_eq!(fs::read_to_string(t.join("usr/bin/other")).unwrap(), "tool");
        assert_eq!(
            fs::metadata(t.join("usr/bin/tool")).unwrap().ino(),
            fs::metadata(t.join("usr/bin/other")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(t.join("usr/bin/tool")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(fs::metadata(t.join("usr")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(
            fs::read_link(t.join("link")).unwrap(),
            Path::new("usr/bin/tool")
        );
        assert!(
            fs::symlink_metadata(t.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(!t.join("proc").exists());
        assert!(!f.join("usr/bin/tool").exists() && !f.join("link").exists());
        assert!(f.join("proc/skipped").exists());
    }
}
