//! berth's PID 1, in boot order ([`pid1`]): leave the initramfs for a
//! tmpfs, catch signals, mount the kernel filesystems, read the options,
//! load modules, set the hostname, bring up loopback, make the bundles
//! ready and the root read-only, run the onboot containers one by one,
//! supervise the services until asked to stop, then stop one way only
//! ([`shutdown`]). PID 1 never returns from `main`: a panic is caught,
//! logged, and goes through the same shutdown to a reboot.
//!
//! The same binary is the control client (`berthctl`, or `init ctl ...`)
//! and the kernel's `modprobe` (`-q -- NAME`); run as any other process
//! with no arguments, it prints its version.

// As in the library: data never panics PID 1.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::time::Duration;

use init::boot;
use init::bundle;
use init::control;
use init::events::EventLoop;
use init::kernel::Kernel;
use init::modules;
use init::root;
use init::shutdown::shutdown;
use init::system::{Power, System};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if program == "berthctl" {
        std::process::exit(control::client(args.get(1..).unwrap_or_default()));
    }
    if args.get(1).map(String::as_str) == Some("ctl") {
        std::process::exit(control::client(args.get(2..).unwrap_or_default()));
    }
    if std::process::id() != 1 {
        if let [_, q, dashes, name] = &args[..]
            && q == "-q"
            && dashes == "--"
        {
            std::process::exit(modprobe(name));
        }
        println!("berth-init {VERSION}");
        return;
    }
    let mut system = Kernel::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pid1(&mut system, Path::new("/"), &args)
    }));
    if let Err(panic) = outcome {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        fatal(&mut system, &why);
    }
    // reboot(2) does not return when it works; if it did not, wait for the
    // kernel rather than exit, which would panic it.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The kernel's request for a module (`/proc/sys/kernel/modprobe`).
fn modprobe(name: &str) -> i32 {
    let mut system = Kernel::default();
    let index = modules::Index::load(&modules::modules_dir(&mut system, Path::new("/")));
    match modules::Loader::new(&index).load(&mut system, name) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// Boots the system whose root is `root`, runs it until a shutdown is
/// asked for, and shuts it down; returns what the shutdown asked the kernel
/// for, should the kernel not have done it.
fn pid1(system: &mut dyn System, root: &Path, args: &[String]) -> Power {
    let started_at = system.now();
    system.log(&format!("berth-init {VERSION} starting"));
    if let Err(why) = root::leave_initramfs(system, root, args) {
        // No root to boot: the fatal path, without panicking.
        system.log(&format!("fatal: {why}; rebooting in 10 s"));
        system.poll(&mut [], Duration::from_secs(10));
        let grace = boot::Options::default().grace;
        shutdown(system, &[], grace, &[], Power::Reboot);
        return Power::Reboot;
    }
    // Before anything else: a signal that arrives during boot is kept.
    let wake = system
        .catch_signals()
        .map_err(|e| system.log(&format!("signals: {e}")))
        .ok();

    let mut mounted = boot::mount_filesystems(system, root);
    boot::delegate_controllers(system, root);
    boot::make_places(system, root);
    let options = boot::read_options(system, root);
    let program = args.first().map_or("/init", String::as_str);
    let index = modules::load_at_boot(system, root, program);
    boot::set_hostname(system, root);
    if let Err(e) = system.loopback_up() {
        system.log(&format!("bringing up lo: {e}"));
    }

    let bundles = bundle::ready_all(system, root, &index, &mut mounted);
    // The image is immutable: only the tmpfs mounts under it are writable.
    if let Err(e) = system.remount_read_only("/") {
        system.log(&format!("making / read-only: {e}"));
    }
    system.log(&format!(
        "ready: {} filesystems mounted, / read-only",
        mounted.len()
    ));

    let grace = options.grace;
    let mut events = EventLoop::new(system, root, options, wake);
    events.run_onboot(&bundles.onboot);
    let (power, mut supervisor) = events.supervise(&bundles.services, started_at);
    events.run_onshutdown(&bundles.onshutdown, &mut supervisor);
    drop(events);
    shutdown(system, &supervisor.running(), grace, &mounted, power);
    power
}

/// A panic: logged, then the one shutdown path, knowing nothing of what
/// ran (every process is signalled, every mount the kernel lists is
/// unmounted), to a reboot.
fn fatal(system: &mut Kernel, why: &str) -> ! {
    system.log(&format!("fatal: {why}; rebooting in 10 s"));
    std::thread::sleep(Duration::from_secs(10));
    let grace = boot::Options::default().grace;
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shutdown(system, &[], grace, &[], Power::Reboot)
    }));
    loop {
        system.power(Power::Reboot);
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use init::supervise::Exit;
    use init::system::Fake;

    const SIGUSR2: i32 = 12;
    const SIGTERM: i32 = 15;

    /// A directory standing for `/`, holding `files` (path, contents).
    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        root
    }

    /// Boots `root` through `system`, checks what the shutdown asked for,
    /// and returns the calls it recorded, with `root` written `ROOT`.
    fn boot(root: &Path, mut system: Fake, power: Power) -> Vec<String> {
        let args = ["/init".to_string()];
        assert_eq!(pid1(&mut system, root, &args), power);
        let root = root.to_string_lossy();
        system
            .calls
            .iter()
            .map(|c| c.replace(&*root, "ROOT").replace(VERSION, "VERSION"))
            .collect()
    }

    fn check(root: &Path, system: Fake, power: Power, expected: &[&[&str]]) {
        assert_eq!(boot(root, system, power), expected.concat());
    }

    /// The mounts of the early boot, undone last at shutdown.
    const LAST_UNMOUNTS: &[&str] = &[
        "unmount /sys/fs/cgroup",
        "unmount /var",
        "unmount /tmp",
        "unmount /run",
        "unmount /dev/shm",
        "unmount /dev/pts",
        "unmount /dev",
        "unmount /sys",
        "unmount /proc",
        "sync",
    ];

    /// What every boot that does not start in an initramfs does first.
    const EARLY_BOOT: &[&str] = &[
        "log berth-init VERSION starting",
        // Not the initramfs: nothing to leave.
        "mount proc /proc",
        "unmount /proc",
        "catch signals",
        "mount proc /proc",
        "mount sysfs /sys",
        "mount devtmpfs /dev",
        "mount devpts /dev/pts",
        "mount tmpfs /dev/shm",
        "mount tmpfs /run",
        "mount tmpfs /tmp",
        "mount tmpfs /var",
        "mount cgroup2 /sys/fs/cgroup",
    ];

    /// As the runtime reads it: `user` and `cwd` are required.
    const CONFIG: &str = r#"{"root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["/bin/x"], "user": {"uid": 0, "gid": 0}, "cwd": "/"}}"#;

    #[test]
    fn boots_in_order_and_shuts_down_one_way() {
        let root = root_with(&[
            ("proc/cmdline", "console=ttyS0 berth.grace=2 berth.bogus"),
            ("proc/filesystems", "nodev\tproc\nnodev\tbpf\n"),
            ("proc/uptime", "3.25 1.00\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory\n"),
            (
                "sys/devices/pci0/virtio0/modalias",
                "virtio:d00000001v00001AF4\n",
            ),
            (
                "lib/modules/6.1-fake/modules.dep",
                "kernel/net/virtio_net.ko:\nkernel/fs/overlay.ko:\n",
            ),
            (
                "lib/modules/6.1-fake/modules.alias",
                "alias virtio:d00000001v* virtio_net\n",
            ),
            ("etc/hostname", "box\n"),
            ("containers/onboot/000-sysctl/config.json", CONFIG),
            ("containers/services/getty/config.json", CONFIG),
            ("containers/onshutdown/000-bye/config.json", CONFIG),
        ]);
        // A read-only image's root, as the builder writes it: a bind that
        // init turns into an overlay with a scratch layer.
        let getty = root.path().join("containers/services/getty");
        let runtime = serde_json::json!({
            "mkdir": ["/var/lib/getty"],
            "mounts": [{
                "destination": getty.join("rootfs"),
                "source": getty.join("lower"),
                "options": ["bind"],
            }],
            "bindNS": {"net": "/run/netns/getty"},
        });
        std::fs::write(getty.join("runtime.json"), runtime.to_string()).unwrap();
        let mut system = Fake::default();
        // sysctl (100) ends after a second; getty (101) starts; SIGUSR2 at
        // 10 s; bye (102) ends at 12 s; getty a second after SIGTERM.
        system.exits.extend([
            (Duration::from_secs(1), 100, Exit::Code(0)),
            (Duration::from_secs(11), 102, Exit::Code(0)),
            (Duration::from_secs(1), 101, Exit::Signal(SIGTERM)),
        ]);
        system.signals.push_back((Duration::from_secs(10), SIGUSR2));
        check(
            root.path(),
            system,
            Power::Off,
            &[
                EARLY_BOOT,
                &[
                    "mount bpf /sys/fs/bpf",
                    "mount none /",
                    "set /sys/fs/cgroup/cgroup.subtree_control +cpu +memory",
                    "log unknown option berth.bogus",
                    "set /proc/sys/kernel/modprobe /init",
                    "load ROOT/lib/modules/6.1-fake/kernel/net/virtio_net.ko",
                    "log modules: 1 loaded",
                    "hostname box",
                    "log hostname box",
                    "lo up",
                    "mkdir /var/lib/getty",
                    "mkdir /run/berth/rootfs/getty/upper",
                    "mkdir /run/berth/rootfs/getty/work",
                    "load ROOT/lib/modules/6.1-fake/kernel/fs/overlay.ko",
                    "mount overlay ROOT/containers/services/getty/rootfs",
                    "read-only /",
                    "log ready: 11 filesystems mounted, / read-only",
                    "start 000-sysctl",
                    "remove 000-sysctl",
                    "log sysctl: exit status 0",
                    "start getty",
                    "log started getty (pid 101)",
                    "mkdir /run/netns",
                    "unmount /run/netns/getty",
                    "mount none /run/netns/getty",
                    "log all services started 1000 ms after init started (3.25 s after the kernel)",
                    "log shutting down (Off)",
                    "start 000-bye",
                    "remove 000-bye",
                    "log bye: exit status 0",
                    "log stopping getty",
                    "kill 101 15",
                    "log getty ended: killed by signal 15",
                    "kill all 15",
                    "sync",
                    "unmount ROOT/containers/services/getty/rootfs",
                    "unmount /sys/fs/bpf",
                ],
                LAST_UNMOUNTS,
                &["power Off"],
            ],
        );
    }

    #[test]
    fn an_empty_root_boots_to_nothing_and_reboots_on_sigterm() {
        let root = root_with(&[]);
        let mut system = Fake::default();
        system.signals.push_back((Duration::ZERO, SIGTERM));
        check(
            root.path(),
            system,
            Power::Reboot,
            &[
                EARLY_BOOT,
                &[
                    "mount none /",
                    "set /sys/fs/cgroup/cgroup.subtree_control ",
                    "log no modules index in ROOT/lib/modules/6.1-fake",
                    "lo up",
                    "read-only /",
                    "log ready: 9 filesystems mounted, / read-only",
                    "log shutting down (Reboot)",
                    "kill all 15",
                    "sync",
                ],
                LAST_UNMOUNTS,
                &["power Reboot"],
            ],
        );
    }

    #[test]
    fn a_squashfs_root_that_never_appears_is_fatal_and_reboots() {
        let root = root_with(&[
            ("proc/mounts", "rootfs / rootfs rw 0 0\n"),
            ("proc/cmdline", "console=ttyS0 berth.root=squashfs:abc"),
        ]);
        let calls = boot(root.path(), Fake::default(), Power::Reboot);
        assert_eq!(
            calls[..6],
            [
                "log berth-init VERSION starting",
                "mount proc /proc",
                "unmount /proc",
                "log looking for the squashfs root abc",
                "mount sysfs /sys",
                "mount devtmpfs /dev",
            ][..],
            "{calls:#?}"
        );
        let fatal = "log fatal: no disk with the squashfs root abc after 30 s (no block devices); \
                     rebooting in 10 s";
        assert!(calls.iter().any(|c| c == fatal), "{calls:#?}");
        // Nothing of the normal boot runs; the shutdown path does.
        assert!(!calls.iter().any(|c| c == "catch signals"), "{calls:#?}");
        assert_eq!(calls.last().map(String::as_str), Some("power Reboot"));
    }

    #[test]
    fn an_onshutdown_container_gets_the_grace_period_then_sigkill() {
        let root = root_with(&[
            ("proc/cmdline", "berth.grace=2"),
            ("containers/onshutdown/000-bye/config.json", CONFIG),
        ]);
        let mut system = Fake::default();
        system.signals.push_back((Duration::ZERO, SIGUSR2));
        system
            .exits
            .push_back((Duration::from_secs(3), 100, Exit::Signal(9)));
        let calls = boot(root.path(), system, Power::Off);
        // From the request to the shutdown path proper.
        let from = calls.iter().position(|c| c == "log shutting down (Off)");
        let to = calls.iter().position(|c| c == "kill all 15");
        assert_eq!(
            calls[from.unwrap()..=to.unwrap()],
            [
                "log shutting down (Off)",
                "start 000-bye",
                "log bye: still running; killing it",
                "kill 100 9",
                "log bye failed: killed by signal 9; its last output:",
                "remove 000-bye",
                "log bye: killed by signal 9",
                "kill all 15",
            ][..],
            "{calls:#?}"
        );
    }
}
