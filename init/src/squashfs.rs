//! A root larger than memory: the squashfs image of a `kernel+squashfs`
//! build, on a disk, under a tmpfs overlay.
//!
//! With `berth.root=squashfs:ID` on the command line (written by the
//! builder; `contract::squashfs` defines the id), the initrd holds only init
//! and the kernel modules. Init loads the modules the disks need (coldplug)
//! and `squashfs` and `overlay`, waits for the block device whose superblock
//! gives `ID`, mounts it read-only under a tmpfs overlay (writes go to
//! memory and are gone at the next boot, as with the initramfs copy),
//! switches to the overlay and executes itself again from it; the boot then
//! goes on from the image: its modules, its `/containers`.
//! What it reads from devices is checked, never trusted: a device that is
//! not squashfs, or cannot be read, is named in the message that ends the
//! wait, and every failure is returned for the caller's fatal path.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use contract::squashfs::{SUPERBLOCK_SIZE, root_id};

use crate::modules;
use crate::system::{Mount, System, under};

/// How long init waits for the disk holding the image.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often it looks again.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Where the image, the writable layer and the root are mounted, in the
/// initramfs.
pub const IMAGE_DIR: &str = "/.berth-squashfs";
pub const WRITABLE_DIR: &str = "/.berth-writable";
pub const ROOT_DIR: &str = "/.berth-root";

/// The modules a squashfs root needs beyond the disk's driver.
const FILESYSTEMS: &[&str] = &["squashfs", "overlay"];

fn mount(source: &str, target: &str, kind: &str, flags: Vec<&'static str>, data: &str) -> Mount {
    Mount {
        source: source.into(),
        target: target.into(),
        kind: kind.into(),
        flags,
        data: data.into(),
    }
}

/// Finds the squashfs image `id`, makes it the root under a tmpfs overlay
/// and executes init (`args`) again from it. Returns only on failure, with
/// what failed.
pub fn into_squashfs(
    system: &mut dyn System,
    root: &Path,
    args: &[String],
    id: &str,
) -> Result<(), String> {
    system.log(&format!("looking for the squashfs root {id}"));
    for (kind, target) in [("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        system
            .mount(&mount(kind, target, kind, vec![], ""))
            .map_err(|e| format!("mounting {target}: {e}"))?;
    }
    let index = modules::Index::load(&modules::modules_dir(system, root));
    for name in FILESYSTEMS {
        if index.resolve(name).is_empty() {
            system.log(&format!(
                "module {name} is neither in the initrd nor built in"
            ));
        }
    }
    let devices = under(root, "/sys/devices");
    let names: Vec<String> = FILESYSTEMS.iter().map(|n| n.to_string()).collect();
    modules::coldplug(system, &index, &devices, &names, 8);
    let device = wait_for(system, root, id, &index, &devices)?;
    system.log(&format!("squashfs root {id} is {device}"));
    let overlay =
        format!("lowerdir={IMAGE_DIR},upperdir={WRITABLE_DIR}/upper,workdir={WRITABLE_DIR}/work");
    let steps = [
        mount(&device, IMAGE_DIR, "squashfs", vec!["ro"], ""),
        mount("tmpfs", WRITABLE_DIR, "tmpfs", vec![], "mode=0755"),
    ];
    for step in &steps {
        system
            .mount(step)
            .map_err(|e| format!("mounting {} on {}: {e}", step.source, step.target))?;
    }
    for dir in ["upper", "work"] {
        system.mkdir(&format!("{WRITABLE_DIR}/{dir}"))?;
    }
    let root_mount = mount("overlay", ROOT_DIR, "overlay", vec![], &overlay);
    system
        .mount(&root_mount)
        .map_err(|e| format!("mounting the overlay on {ROOT_DIR}: {e}"))?;
    // The new root mounts its own; these would only hide them.
    for target in ["/dev", "/sys"] {
        if let Err(e) = system.unmount(target) {
            system.log(&format!("unmounting {target}: {e}"));
        }
    }
    system.switch_root(ROOT_DIR)?;
    Err(system.exec_self(args))
}

/// Waits up to [`WAIT`] for the block device whose squashfs superblock has
/// the id `id`; returns its `/dev` path, or what each device was.
fn wait_for(
    system: &mut dyn System,
    root: &Path,
    id: &str,
    index: &modules::Index,
    devices: &Path,
) -> Result<String, String> {
    let deadline = system.now() + WAIT;
    let mut aliases = modules::modaliases(devices);
    loop {
        let mut seen = Vec::new();
        for name in block_devices(root) {
            // A drive with no medium (an empty floppy or CD drive) says
            // size 0; reading it could wait on the drive for seconds.
            let size =
                std::fs::read_to_string(under(root, &format!("/sys/class/block/{name}/size")));
            if size.is_ok_and(|size| size.trim() == "0") {
                seen.push(format!("{name}: no medium"));
                continue;
            }
            let path = format!("/dev/{name}");
            match superblock_id(&under(root, &path)) {
                Ok(found) if found == id => return Ok(path),
                Ok(found) => seen.push(format!("{name}: squashfs {found}")),
                Err(why) => seen.push(format!("{name}: {why}")),
            }
        }
        if system.now() >= deadline {
            let seen = match seen.is_empty() {
                true => "no block devices".to_string(),
                false => seen.join("; "),
            };
            return Err(format!(
                "no disk with the squashfs root {id} after {} s ({seen})",
                WAIT.as_secs()
            ));
        }
        system.poll(&mut [], LOOK_EVERY);
        // Devices that appeared since (a SCSI scan, a slow controller) get
        // their drivers too.
        let now = modules::modaliases(devices);
        if now != aliases {
            modules::coldplug(system, index, devices, &[], 8);
            aliases = now;
        }
    }
}

/// The block devices the kernel lists, by name, sorted.
fn block_devices(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(under(root, "/sys/class/block"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The squashfs id of the image at the start of `device`, or why it has
/// none.
fn superblock_id(device: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Not blocking on open: a removable drive is not waited for.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(device)
        .map_err(|e| format!("cannot open: {e}"))?;
    let mut block = [0u8; SUPERBLOCK_SIZE];
    let mut filled = 0;
    while let Some(rest) = block.get_mut(filled..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    root_id(block.get(..filled).unwrap_or_default()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Fake;

    /// A squashfs 4.0 superblock as the builder's images start.
    fn superblock(size: u64) -> Vec<u8> {
        let mut block = vec![0u8; SUPERBLOCK_SIZE];
        block[..4].copy_from_slice(contract::squashfs::MAGIC);
        block[28..30].copy_from_slice(&4u16.to_le_bytes());
        block[40..48].copy_from_slice(&size.to_le_bytes());
        block
    }

    /// A directory standing for `/` in the initramfs: an empty floppy
    /// drive and three block devices, the last holding the image, and the
    /// initrd's modules.
    fn initramfs(image: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for name in ["fd0", "sr0", "vda", "vdb"] {
            std::fs::create_dir_all(r.join("sys/class/block").join(name)).unwrap();
        }
        // The floppy drive has no medium; its node, were it read, would be
        // an image of the wanted size.
        std::fs::write(r.join("sys/class/block/fd0/size"), "0\n").unwrap();
        std::fs::create_dir_all(r.join("dev")).unwrap();
        std::fs::write(r.join("dev/fd0"), image).unwrap();
        // sr0 cannot be opened (no node); vda is too short; vdb is it.
        std::fs::write(r.join("dev/vda"), b"hsqs").unwrap();
        std::fs::write(r.join("dev/vdb"), image).unwrap();
        let modules = r.join("lib/modules/6.1-fake");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::write(
            modules.join("modules.dep"),
            "kernel/drivers/block/virtio_blk.ko:\nkernel/fs/squashfs/squashfs.ko:\n\
             kernel/fs/overlayfs/overlay.ko:\n",
        )
        .unwrap();
        std::fs::write(
            modules.join("modules.alias"),
            "alias virtio:d00000002v* virtio_blk\n",
        )
        .unwrap();
        let device = r.join("sys/devices/pci0/virtio1");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("modalias"), "virtio:d00000002v00001AF4\n").unwrap();
        root
    }

    #[test]
    fn the_device_is_found_and_the_mounts_happen_in_order() {
        let image = superblock(8192);
        let id = root_id(&image).unwrap();
        let root = initramfs(&image);
        let mut system = Fake::default();
        let args = ["/init".to_string()];
        let outcome = into_squashfs(&mut system, root.path(), &args, &id);
        // The fake does not execute: that is the failure returned.
        assert_eq!(outcome, Err("the fake does not execute".into()));
        let r = root.path().to_string_lossy().into_owned();
        let calls: Vec<String> = system.calls.iter().map(|c| c.replace(&r, "ROOT")).collect();
        let modules = "ROOT/lib/modules/6.1-fake/kernel";
        assert_eq!(
            calls,
            [
                format!("log looking for the squashfs root {id}"),
                "mount sysfs /sys".into(),
                "mount devtmpfs /dev".into(),
                format!("load {modules}/drivers/block/virtio_blk.ko"),
                format!("load {modules}/fs/squashfs/squashfs.ko"),
                format!("load {modules}/fs/overlayfs/overlay.ko"),
                format!("log squashfs root {id} is /dev/vdb"),
                "mount squashfs /.berth-squashfs".into(),
                "mount tmpfs /.berth-writable".into(),
                "mkdir /.berth-writable/upper".into(),
                "mkdir /.berth-writable/work".into(),
                "mount overlay /.berth-root".into(),
                "unmount /dev".into(),
                "unmount /sys".into(),
                "switch root /.berth-root".into(),
                "exec /init".into(),
            ]
        );
    }

    #[test]
    fn a_missing_device_times_out_naming_what_was_seen() {
        let image = superblock(8192);
        let root = initramfs(&image);
        // Another image: same layout, another size.
        let wanted = root_id(&superblock(4096)).unwrap();
        let found = root_id(&image).unwrap();
        let mut system = Fake::default();
        let started = system.now();
        let outcome = into_squashfs(&mut system, root.path(), &["/init".into()], &wanted);
        let why = outcome.unwrap_err();
        assert!(why.starts_with(&format!(
            "no disk with the squashfs root {wanted} after 30 s (fd0: no medium; sr0: cannot open: "
        )), "{why}");
        assert!(
            why.ends_with(&format!(
                "vda: 4 bytes, shorter than a squashfs superblock (96); vdb: squashfs {found})"
            )),
            "{why}"
        );
        assert!(system.now() - started >= WAIT);
        // Nothing is mounted from a device that is not the one asked for.
        assert!(!system.calls.iter().any(|c| c.contains("squashfs /")));
    }

    #[test]
    fn missing_modules_are_named_and_no_device_means_none_seen() {
        let root = tempfile::tempdir().unwrap();
        let mut system = Fake::default();
        let outcome = into_squashfs(&mut system, root.path(), &["/init".into()], "x");
        assert_eq!(
            outcome,
            Err("no disk with the squashfs root x after 30 s (no block devices)".into())
        );
        for name in FILESYSTEMS {
            let line = format!("log module {name} is neither in the initrd nor built in");
            assert!(system.calls.contains(&line), "{:#?}", system.calls);
        }
    }

    #[test]
    fn a_device_that_is_not_squashfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, vec![0u8; 512]).unwrap();
        assert_eq!(superblock_id(&disk), Err("no squashfs magic (hsqs)".into()));
        assert!(
            superblock_id(&dir.path().join("none"))
                .unwrap_err()
                .starts_with("cannot open: ")
        );
    }
}
