//! berth's PID 1, in boot order: leave the initramfs for a tmpfs, mount the
//! kernel filesystems, read the options, set the hostname, bring up
//! loopback, load modules, prepare the bundles and make the root
//! read-only, run the onboot containers one by one, then supervise the
//! services until asked to stop, and stop one way only (`shutdown`). PID 1
//! never returns from `main`: a panic is caught, logged, and ends in a
//! reboot.
//!
//! The same binary is the control client (`berthctl`, or `init ctl ...`)
//! and the kernel's `modprobe` (`-q -- NAME`); run as any other process
//! with no arguments, it prints its version.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use contract::BundleKind;
use init::bundle::{self, Prepared, RUN};
use init::control::{self, Request};
use init::kernel::Kernel;
use init::logs::{self, Log};
use init::modules;
use init::services::{Supervisor, Unit};
use init::shutdown::shutdown;
use init::supervise::{Exit, Service};
use init::system::{Launch, Mount, Power, System};
use init::{boot, root};
use rustix::event::{PollFd, PollFlags};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a signal to PID 1 asks for, as busybox init reads them: SIGUSR2
/// powers off, SIGTERM reboots, SIGINT is Ctrl-Alt-Del (a reboot).
const SIGINT: i32 = 2;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;
const SIGCHLD: i32 = 17;
const SIGKILL: i32 = 9;
const SIGPIPE: i32 = 13;

/// Input events: `struct input_event` on 64-bit Linux, and the power key.
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

const LOG_DIR: &str = "/var/log";
const CONTAINERS: &str = "/containers";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if program == "berthctl" {
        std::process::exit(control::client(&args[1..]));
    }
    if args.get(1).map(String::as_str) == Some("ctl") {
        std::process::exit(control::client(&args[2..]));
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
    let outcome = std::panic::catch_unwind(|| pid1(&args));
    // Only a panic gets here: pid1 never returns.
    let mut system = Kernel;
    let why = match outcome {
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        Ok(never) => match never {},
    };
    system.log(&format!("fatal: {why}; rebooting in 10 s"));
    std::thread::sleep(Duration::from_secs(10));
    system.sync();
    loop {
        system.power(Power::Reboot);
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The kernel's request for a module (`/proc/sys/kernel/modprobe`).
fn modprobe(name: &str) -> i32 {
    let index = modules::Index::load(&modules_dir());
    let mut loader = modules::Loader::new(&index);
    match loader.load(&mut Kernel, name) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

fn modules_dir() -> PathBuf {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    Path::new("/lib/modules").join(release)
}

enum Never {}

fn pid1(args: &[String]) -> Never {
    let started_at = Instant::now();
    let mut system = Kernel;
    system.log(&format!("berth-init {VERSION} starting"));
    into_tmpfs(&mut system, args);
    // Before anything else: a signal that arrives during boot is kept.
    let requested = Arc::new(AtomicUsize::new(0));
    let (wake_read, wake_write) = UnixStream::pair().expect("a socket pair for signals");
    wake_read
        .set_nonblocking(true)
        .expect("a non-blocking socket");
    for signal in [SIGINT, SIGUSR2, SIGTERM] {
        if let Err(e) =
            signal_hook::flag::register_usize(signal, Arc::clone(&requested), signal as usize)
        {
            system.log(&format!("cannot catch signal {signal}: {e}"));
        }
    }
    for signal in [SIGINT, SIGUSR2, SIGTERM, SIGCHLD] {
        let writer = wake_write.try_clone().expect("a socket for signals");
        if let Err(e) = signal_hook::low_level::pipe::register(signal, writer) {
            system.log(&format!("cannot watch signal {signal}: {e}"));
        }
    }
    // Rust ignores SIGPIPE, and an ignored signal stays ignored across
    // exec: a handler instead is reset to the default in every container.
    if let Err(e) = signal_hook::flag::register(SIGPIPE, Arc::new(AtomicBool::new(false))) {
        system.log(&format!("cannot catch SIGPIPE: {e}"));
    }
    // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);

    let mut mounted = mount_filesystems(&mut system);
    delegate_controllers(&mut system);
    if let Err(e) = std::fs::create_dir_all(LOG_DIR) {
        system.log(&format!("{LOG_DIR}: {e}"));
    }
    // Where the root's /etc/resolv.conf points; DHCP fills it in.
    let resolv = Path::new("/run/resolvconf/resolv.conf");
    if let Err(e) = std::fs::create_dir_all("/run/resolvconf").and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(resolv)
    }) {
        system.log(&format!("{}: {e}", resolv.display()));
    }
    let (options, problems) =
        boot::options(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    for problem in problems {
        system.log(&problem);
    }
    load_modules(&mut system, args);
    set_hostname(&mut system);
    if let Err(e) = loopback_up() {
        system.log(&format!("bringing up lo: {e}"));
    }

    let index = modules::Index::load(&modules_dir());
    let mut prepared = HashMap::new();
    for kind in [
        BundleKind::Onboot,
        BundleKind::Service,
        BundleKind::Onshutdown,
    ] {
        let list: Vec<Prepared> = bundle::find(Path::new(CONTAINERS), kind)
            .iter()
            .filter_map(
                |found| match ready(&mut system, &index, found, &mut mounted) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        system.log(&format!("{} {}: {e}", kind.directory(), found.id));
                        None
                    }
                },
            )
            .collect();
        prepared.insert(kind, list);
    }
    // The image is immutable: only the tmpfs mounts under it are writable.
    if let Err(e) = rustix::mount::mount_remount("/", rustix::mount::MountFlags::RDONLY, c"") {
        system.log(&format!("making / read-only: {e}"));
    }
    system.log(&format!(
        "ready: {} filesystems mounted, / read-only",
        mounted.len()
    ));

    let debug = options.debug;
    let listener = control_socket(&mut system);
    let inputs = input_devices();
    let mut loop_ = Loop {
        system,
        options,
        requested,
        wake: wake_read,
        listener,
        inputs,
        logs: HashMap::new(),
        closed: HashMap::new(),
        power: None,
    };
    for p in &prepared[&BundleKind::Onboot] {
        loop_.run_to_end(p, None, &mut |system, pid, exit| {
            if debug {
                system.log(&format!("reaped {pid}: {exit}"));
            }
        });
    }
    let units = prepared[&BundleKind::Service]
        .iter()
        .map(|p| {
            Unit::new(
                Service::new(&p.found.name, p.restart, Default::default()),
                launch(p),
                p.depends.clone(),
                p.healthcheck.clone(),
            )
        })
        .collect();
    let mut supervisor = Supervisor::new(units);
    let binds: HashMap<String, Vec<(&'static str, String)>> = prepared[&BundleKind::Service]
        .iter()
        .map(|p| (p.found.name.clone(), p.bind_namespaces.clone()))
        .collect();
    let mut all_started = supervisor.units.is_empty();
    let mut ever_started = std::collections::HashSet::new();
    let power = loop {
        let now = Instant::now();
        for (name, started) in supervisor.tick(&mut loop_.system, now) {
            bind_namespaces(&mut loop_.system, started.pid, &binds[&name]);
            ever_started.insert(name.clone());
            if let Some(output) = started.output {
                loop_.follow(&name, output);
            }
        }
        if !all_started && ever_started.len() == supervisor.units.len() {
            all_started = true;
            let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
            let uptime = uptime.split_whitespace().next().unwrap_or("?");
            loop_.system.log(&format!(
                "all services started {} ms after init started ({uptime} s after the kernel)",
                started_at.elapsed().as_millis()
            ));
        }
        let wait = supervisor
            .next_wake(Instant::now())
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        loop_.wait(wait, &mut |system, event| match event {
            Event::Exit(pid, exit) => {
                if !supervisor.exited(system, pid, exit, Instant::now()) && debug {
                    system.log(&format!("reaped {pid}: {exit}"));
                }
            }
            Event::Request(request, stream) => answer(system, &mut supervisor, (request, stream)),
        });
        if let Some(power) = loop_.power {
            break power;
        }
    };
    loop_.system.log(&format!("shutting down ({power:?})"));
    // Services that end meanwhile are not started again: nothing ticks.
    let grace = loop_.options.grace;
    for p in &prepared[&BundleKind::Onshutdown] {
        loop_.run_to_end(p, Some(grace), &mut |system, pid, exit| {
            supervisor.exited(system, pid, exit, Instant::now());
        });
    }
    shutdown(
        &mut loop_.system,
        &supervisor.running(),
        grace,
        &mounted,
        power,
    );
    // reboot(2) does not return when it works; if it did not, wait for the
    // kernel rather than exit, which would panic it.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Leaves the initramfs (see [`root`]): copies it into a tmpfs, moves that
/// onto `/` and executes init again from there. On failure, boot goes on
/// in the initramfs; containers will not start.
fn into_tmpfs(system: &mut Kernel, args: &[String]) {
    let proc = Mount {
        source: "proc".into(),
        target: "/proc".into(),
        kind: "proc".into(),
        flags: vec![],
        data: String::new(),
    };
    if let Err(e) = system.mount(&proc) {
        system.log(&format!("mounting /proc: {e}"));
        return;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let _ = system.unmount("/proc");
    if !root::is_initramfs(&mounts) {
        return;
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
        let count = root::copy_tree(Path::new("/"), Path::new(new_root), &[".berth-root"], true)
            .map_err(|e| format!("copying the initramfs: {e}"))?;
        system.log(&format!("initramfs moved to a tmpfs ({count} entries)"));
        std::env::set_current_dir(new_root).map_err(|e| e.to_string())?;
        rustix::mount::mount_move(".", "/").map_err(|e| format!("moving the root: {e}"))?;
        rustix::process::chroot(".").map_err(|e| format!("chroot: {e}"))?;
        std::env::set_current_dir("/").map_err(|e| e.to_string())
    })();
    match moved {
        Ok(()) => {
            use std::os::unix::process::CommandExt;
            let e = std::process::Command::new(&args[0]).args(&args[1..]).exec();
            system.log(&format!("executing {} again: {e}", args[0]));
        }
        Err(e) => system.log(&format!("staying in the initramfs: {e}")),
    }
}

fn mount_filesystems(system: &mut Kernel) -> Vec<String> {
    let mut mounted = boot::mount_all(system, &[]);
    let known =
        boot::known_types(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default());
    let optional: Vec<Mount> = boot::mounts(&known)
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
fn delegate_controllers(system: &mut Kernel) {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let enable: Vec<String> = controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), enable.join(" ")) {
        system.log(&format!("delegating cgroup controllers {enable:?}: {e}"));
    }
}

/// Coldplug, then `/etc/modules-load.d/*.conf`; later requests of the
/// kernel come back to this binary as `modprobe`.
fn load_modules(system: &mut Kernel, args: &[String]) {
    let dir = modules_dir();
    let index = modules::Index::load(&dir);
    if index.is_empty() {
        system.log(&format!("no modules index in {}", dir.display()));
        return;
    }
    if let Err(e) = std::fs::write("/proc/sys/kernel/modprobe", &args[0]) {
        system.log(&format!("setting /proc/sys/kernel/modprobe: {e}"));
    }
    let mut explicit = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/modules-load.d") {
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension() == Some("conf".as_ref()))
        {
            explicit.extend(modules::listed(
                &std::fs::read_to_string(file).unwrap_or_default(),
            ));
        }
    }
    let count = modules::coldplug(system, &index, Path::new("/sys/devices"), &explicit, 8);
    system.log(&format!("modules: {count} loaded"));
}

/// Makes a bundle's host side ready and writes the runtime's copy of it.
fn ready(
    system: &mut Kernel,
    index: &modules::Index,
    found: &bundle::Found,
    mounted: &mut Vec<String>,
) -> Result<Prepared, String> {
    let p = bundle::prepare(found, "berth")?;
    for dir in &p.mkdir {
        system
            .mkdir(dir)
            .map_err(|e| format!("making {dir}: {e}"))?;
    }
    for (dirs, mount) in &p.mounts {
        for dir in dirs {
            system
                .mkdir(dir)
                .map_err(|e| format!("making {dir}: {e}"))?;
        }
        if mount.kind == "overlay" {
            // A module on Debian's kernels; the kernel would ask modprobe.
            let _ = modules::Loader::new(index).load(system, "overlay");
        }
        system
            .mount(mount)
            .map_err(|e| format!("mounting {} on {}: {e}", mount.kind, mount.target))?;
        // A remount of the same target is not another mount to undo.
        if !mounted.contains(&mount.target) {
            mounted.push(mount.target.clone());
        }
    }
    let dir = Path::new(RUN).join("bundles").join(&found.id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = serde_json::to_vec_pretty(&p.config).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), config)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(p)
}

fn launch(p: &Prepared) -> Launch {
    Launch {
        id: p.found.id.clone(),
        bundle: Path::new(RUN).join("bundles").join(&p.found.id),
        host_dev: p.host_dev,
    }
}

/// Binds a started container's namespaces where runtime.json asks.
fn bind_namespaces(system: &mut Kernel, pid: i32, binds: &[(&'static str, String)]) {
    for (kind, path) in binds {
        let bound = (|| -> Result<(), String> {
            if let Some(parent) = Path::new(path).parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            // A restart binds the new namespace over the old one's place.
            let _ = rustix::mount::unmount(path.as_str(), rustix::mount::UnmountFlags::DETACH);
            if !Path::new(path).exists() {
                std::fs::File::create(path).map_err(|e| e.to_string())?;
            }
            rustix::mount::mount_bind(format!("/proc/{pid}/ns/{kind}").as_str(), path.as_str())
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = bound {
            system.log(&format!(
                "binding the {kind} namespace of {pid} to {path}: {e}"
            ));
        }
    }
}

fn control_socket(system: &mut Kernel) -> Option<UnixListener> {
    let _ = std::fs::create_dir_all(RUN);
    let _ = std::fs::remove_file(control::SOCKET);
    match UnixListener::bind(control::SOCKET) {
        Ok(listener) => {
            let _ = listener.set_nonblocking(true);
            Some(listener)
        }
        Err(e) => {
            system.log(&format!("control socket {}: {e}", control::SOCKET));
            None
        }
    }
}

/// The event devices, for the power button.
fn input_devices() -> Vec<std::fs::File> {
    let Ok(entries) = std::fs::read_dir("/dev/input") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter_map(|e| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(e.path())
                .ok()
        })
        .collect()
}

enum Event {
    Exit(i32, Exit),
    Request(Request, UnixStream),
}

/// The main loop's state: what it polls and where output goes.
struct Loop {
    system: Kernel,
    options: boot::Options,
    requested: Arc<AtomicUsize>,
    wake: UnixStream,
    listener: Option<UnixListener>,
    inputs: Vec<std::fs::File>,
    /// Output pipes and their logs.
    logs: HashMap<i32, (OwnedFd, Log)>,
    /// The last log of each container whose output has ended.
    closed: HashMap<String, Log>,
    power: Option<Power>,
}

impl Loop {
    fn follow(&mut self, name: &str, output: OwnedFd) {
        use std::os::fd::AsRawFd;
        let log = Log::open(
            Path::new(LOG_DIR),
            name,
            logs::DEFAULT_CAP,
            self.options.console_logs,
        );
        if let Some(problem) = log.problem() {
            self.system.log(problem);
        }
        self.logs.insert(output.as_raw_fd(), (output, log));
    }

    /// Runs one onboot or onshutdown container to its end; its failure is
    /// logged with its last output, and boot goes on.
    fn run_to_end(
        &mut self,
        p: &Prepared,
        deadline: Option<Duration>,
        others: &mut dyn FnMut(&mut Kernel, i32, Exit),
    ) {
        let launch = launch(p);
        let name = p.found.name.clone();
        let started = match self.system.start(&launch) {
            Ok(s) => s,
            Err(e) => {
                self.system.log(&format!("{name}: {e}"));
                self.system.remove(&launch.id);
                return;
            }
        };
        if let Some(output) = started.output {
            self.follow(&name, output);
        }
        if self.options.debug {
            self.system
                .log(&format!("{name}: started, pid {}", started.pid));
        }
        let since = Instant::now();
        let mut killed = false;
        let mut ended = None;
        while ended.is_none() {
            self.wait(Duration::from_secs(1), &mut |system, event| match event {
                Event::Exit(pid, exit) if pid == started.pid => ended = Some(exit),
                Event::Exit(pid, exit) => others(system, pid, exit),
                Event::Request(_, mut stream) => {
                    let _ = stream.write_all(b"error: not running services yet\n");
                }
            });
            // Onshutdown containers get the grace period; an onboot one runs
            // until it ends, unless a shutdown is asked for meanwhile.
            let give_up = match deadline {
                Some(limit) => since.elapsed() >= limit,
                None => self.power.is_some(),
            };
            if ended.is_none() && !killed && give_up {
                self.system
                    .log(&format!("{name}: still running; killing it"));
                let _ = self.system.kill(started.pid, SIGKILL);
                killed = true;
            }
        }
        let exit = ended.expect("set above");
        // What the container wrote before it ended may still be in the pipe.
        let fds: Vec<i32> = self
            .logs
            .iter()
            .filter(|(_, (_, log))| log.name == name)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in fds {
            self.drain(fd);
        }
        let tail = match self.closed.remove(&name) {
            Some(log) => log.tail(),
            None => {
                let open = self.logs.iter().find(|(_, (_, log))| log.name == name);
                open.map(|(_, (_, log))| log.tail()).unwrap_or_default()
            }
        };
        if !exit.success() {
            self.system
                .log(&format!("{name} failed: {exit}; its last output:"));
            for line in tail.lines() {
                self.system.log(&format!("{name}: {line}"));
            }
        }
        self.system.remove(&launch.id);
        self.system.log(&format!("{name}: {exit}"));
    }

    /// Waits up to `timeout` for something to happen and hands what
    /// happened to `on`.
    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(&mut Kernel, Event)) {
        let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
        if let Some(listener) = &self.listener {
            fds.push(PollFd::new(listener, PollFlags::IN));
        }
        let inputs_at = fds.len();
        fds.extend(self.inputs.iter().map(|f| PollFd::new(f, PollFlags::IN)));
        let logs_at = fds.len();
        let log_fds: Vec<i32> = self.logs.keys().copied().collect();
        fds.extend(
            log_fds
                .iter()
                .map(|fd| PollFd::from_borrowed_fd(self.logs[fd].0.as_fd(), PollFlags::IN)),
        );
        let timeout = rustix::event::Timespec::try_from(timeout).ok();
        let _ = rustix::event::poll(&mut fds, timeout.as_ref());
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);

        let mut byte = [0u8; 64];
        while matches!((&self.wake).read(&mut byte), Ok(n) if n > 0) {}
        // Output first, so that a container's last words precede its end.
        for (i, fd) in log_fds.iter().enumerate() {
            if ready[logs_at + i] {
                self.drain(*fd);
            }
        }
        while let Some((pid, exit)) = self.system.reap(Duration::ZERO) {
            on(&mut self.system, Event::Exit(pid, exit));
        }
        for i in 0..self.inputs.len() {
            if ready[inputs_at + i] && power_pressed(&mut self.inputs[i]) {
                self.system.log("power button pressed");
                self.power = Some(Power::Off);
            }
        }
        if let Some(listener) = &self.listener {
            while let Ok((stream, _)) = listener.accept() {
                match read_request(&mut self.system, stream) {
                    Some((Request::Poweroff, mut stream)) => {
                        self.power = Some(Power::Off);
                        let _ = stream.write_all(b"powering off\n");
                    }
                    Some((Request::Reboot, mut stream)) => {
                        self.power = Some(Power::Reboot);
                        let _ = stream.write_all(b"rebooting\n");
                    }
                    Some((request, stream)) => {
                        on(&mut self.system, Event::Request(request, stream))
                    }
                    None => {}
                }
            }
        }
        match self.requested.swap(0, Ordering::SeqCst) as i32 {
            0 => {}
            SIGUSR2 => self.power = Some(Power::Off),
            _ => self.power = Some(Power::Reboot),
        }
    }

    /// Reads what a container wrote; at the end of its output, forgets it.
    fn drain(&mut self, fd: i32) {
        let Some((pipe, log)) = self.logs.get_mut(&fd) else {
            return;
        };
        let mut buffer = [0u8; 16 << 10];
        loop {
            match rustix::io::read(&*pipe, &mut buffer) {
                Ok(0) => {
                    // Kept for its tail (an onboot failure shows it).
                    if let Some((_, log)) = self.logs.remove(&fd) {
                        self.closed.insert(log.name.clone(), log);
                    }
                    return;
                }
                Ok(n) => match log.write(&buffer[..n]) {
                    Ok(echo) if !echo.is_empty() => eprint!("{echo}"),
                    Ok(_) => {}
                    Err(e) => {
                        let name = log.name.clone();
                        self.system.log(&format!("{LOG_DIR}/{name}.log: {e}"));
                    }
                },
                Err(_) => return,
            }
        }
    }
}

fn read_request(system: &mut Kernel, mut stream: UnixStream) -> Option<(Request, UnixStream)> {
    // A client gets one second to send its line and to take the answer:
    // PID 1 serves it in its main loop.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut line = Vec::new();
    let mut chunk = [0u8; 512];
    while line.len() < 4096 && !line.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => line.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
    let line = String::from_utf8_lossy(&line[..end]).into_owned();
    match control::parse(&line) {
        Ok(request) => {
            system.log(&format!("control: {}", line.trim()));
            Some((request, stream))
        }
        Err(e) => {
            let _ = stream.write_all(format!("error: {e}\n").as_bytes());
            None
        }
    }
}

fn answer(
    system: &mut Kernel,
    supervisor: &mut Supervisor,
    (request, mut stream): (Request, UnixStream),
) {
    let now = Instant::now();
    let result = match request {
        Request::List => Ok(control::table(&supervisor.status())),
        Request::Start(name) => supervisor.start(&name, now),
        Request::Stop(name) => supervisor.stop(system, &name, now),
        Request::Restart(name) => supervisor.restart(system, &name, now),
        Request::Log(name, lines) => logs::tail_of(Path::new(LOG_DIR), &name, lines)
            .map_err(|e| format!("{LOG_DIR}/{name}.log: {e}")),
        Request::Poweroff | Request::Reboot => Ok(String::new()),
    };
    let text = match result {
        Ok(text) if text.ends_with('\n') || text.is_empty() => text,
        Ok(text) => format!("{text}\n"),
        Err(e) => format!("error: {e}\n"),
    };
    let _ = stream.write_all(text.as_bytes());
}

/// Whether the events waiting on `device` include a press of the power key.
fn power_pressed(device: &mut std::fs::File) -> bool {
    let mut pressed = false;
    let mut buffer = [0u8; INPUT_EVENT_SIZE * 16];
    while let Ok(n) = device.read(&mut buffer) {
        if n == 0 {
            break;
        }
        for event in buffer[..n].chunks_exact(INPUT_EVENT_SIZE) {
            let kind = u16::from_ne_bytes([event[16], event[17]]);
            let code = u16::from_ne_bytes([event[18], event[19]]);
            let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
            pressed |= kind == EV_KEY && code == KEY_POWER && value == 1;
        }
    }
    pressed
}

/// Sets `lo` up, through a route netlink message (ifindex 1 is always lo).
fn loopback_up() -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, netlink};
    // No protocol is NETLINK_ROUTE.
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const IFF_UP: u32 = 1;
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&32u32.to_ne_bytes());
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change
    message.extend_from_slice(&[0u8, 0]);
    message.extend_from_slice(&0u16.to_ne_bytes());
    message.extend_from_slice(&1i32.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes());
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&socket, &message, rustix::net::SendFlags::empty(), &kernel)?;
    let mut reply = [0u8; 256];
    let n = rustix::net::recv(&socket, &mut reply, rustix::net::RecvFlags::empty())?.0;
    // An ack is an NLMSG_ERROR whose error is 0.
    if n >= 20 {
        let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if error != 0 {
            return Err(std::io::Error::from_raw_os_error(-error));
        }
    }
    Ok(())
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
