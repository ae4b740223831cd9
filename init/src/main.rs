//! berth's PID 1, in boot order: mount the kernel filesystems, read the
//! options, set the hostname, then reap every child until asked to stop,
//! and stop one way only (`shutdown`). PID 1 never returns from `main`.
//!
//! Containers (onboot, services, onshutdown) arrive with the rest of
//! issue #4; run as any other process than PID 1, the binary prints its
//! version and exits, which is how images and tests recognise it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use init::boot;
use init::kernel::Kernel;
use init::shutdown::shutdown;
use init::system::{Power, System};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a signal to PID 1 asks for, as busybox init reads them: SIGUSR2
/// powers off, SIGTERM reboots, SIGINT is Ctrl-Alt-Del (a reboot).
const SIGINT: usize = 2;
const SIGUSR2: usize = 12;
const SIGTERM: usize = 15;

fn main() {
    if std::process::id() != 1 {
        println!("berth-init {VERSION}");
        return;
    }
    let mut system = Kernel;
    system.log(&format!("berth-init {VERSION} starting"));
    // Before anything else: a signal that arrives during boot is kept.
    let requested = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT as i32, SIGUSR2 as i32, SIGTERM as i32] {
        if let Err(e) =
            signal_hook::flag::register_usize(signal, Arc::clone(&requested), signal as usize)
        {
            system.log(&format!("cannot catch signal {signal}: {e}"));
        }
    }
    // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);

    let mut mounted = boot::mount_all(&mut system, &[]);
    let known =
        boot::known_types(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default());
    let optional = boot::mounts(&known)
        .into_iter()
        .filter(|m| !mounted.contains(&m.target));
    for mount in optional.collect::<Vec<_>>() {
        match system.mount(&mount) {
            Ok(()) => mounted.push(mount.target),
            Err(e) => system.log(&format!("mounting {} on {}: {e}", mount.kind, mount.target)),
        }
    }
    let (options, problems) =
        boot::options(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    for problem in problems {
        system.log(&problem);
    }
    set_hostname(&mut system);
    system.log(&format!("ready: {} filesystems mounted", mounted.len()));

    let power = loop {
        // Every child that ends is reaped here, whoever its parent was.
        if let Some((pid, exit)) = system.reap(Duration::from_millis(200))
            && options.debug
        {
            system.log(&format!("reaped {pid}: {exit}"));
        }
        match requested.swap(0, Ordering::SeqCst) {
            0 => {}
            SIGUSR2 => break Power::Off,
            _ => break Power::Reboot,
        }
    };
    system.log(&format!("shutting down ({power:?})"));
    shutdown(&mut system, &[], options.grace, &mounted, power);
    // reboot(2) does not return when it works; if it did not, wait for the
    // kernel rather than exit, which would panic it.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `/etc/hostname` if the image has one, else a name from the first MAC.
fn set_hostname(system: &mut dyn System) {
    let from_file = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let name = from_file.or_else(|| {
        let mut interfaces: Vec<_> = std::fs::read_dir("/sys/class/net")
            .ok()?
            .flatten()
            .collect();
        interfaces.sort_by_key(|e| e.file_name());
        interfaces
            .iter()
            .filter(|e| e.file_name() != "lo")
            .find_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
            .map(|mac| boot::hostname_from_mac(&mac))
    });
    if let Some(name) = name {
        match rustix::system::sethostname(name.as_bytes()) {
            Ok(()) => system.log(&format!("hostname {name}")),
            Err(e) => system.log(&format!("setting hostname {name}: {e}")),
        }
    }
}
