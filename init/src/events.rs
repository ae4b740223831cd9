//! PID 1's event loop: one thread polling the signal descriptor, the
//! control socket, the input devices (for the power button) and the
//! containers' output pipes, and reaping every ended child.
//!
//! It runs the onboot containers one at a time, each to its end, then
//! supervises the services ([`crate::services`] decides, this loop feeds it
//! time, exits and control requests) until a shutdown is asked for, then
//! runs the onshutdown containers; the shutdown itself is
//! [`crate::shutdown`]'s. No threads: libcontainer forks, and a lock held
//! by another thread would be inherited. Its clock, its waits and what it
//! asks of the kernel are [`System`]'s, so the tests drive it with the
//! fake, without waiting; the control socket, the logs and the input
//! devices are files under the directory that stands for `/`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::boot::Options;
use crate::bundle::{self, Prepared, RUN};
use crate::control::{self, Request};
use crate::logs::{self, LOG_DIR, Log};
use crate::services::{Supervisor, Unit};
use crate::supervise::{Exit, Service};
use crate::system::{Mount, Power, System, under};

/// SIGUSR2 powers off; SIGTERM and SIGINT (Ctrl-Alt-Del) reboot, as
/// busybox init reads them.
const SIGUSR2: i32 = 12;
const SIGKILL: i32 = 9;

/// Input events: `struct input_event` on 64-bit Linux, and the power key.
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// What the loop hands to its caller.
enum Event {
    Exit(i32, Exit),
    Request(Request, UnixStream),
}

/// The loop's state: what it polls and where output goes.
pub struct EventLoop<'s> {
    system: &'s mut dyn System,
    root: PathBuf,
    options: Options,
    /// Readable when a signal arrives.
    wake: Option<OwnedFd>,
    listener: Option<UnixListener>,
    inputs: Vec<std::fs::File>,
    /// Output pipes and their logs.
    logs: HashMap<i32, (OwnedFd, Log)>,
    /// The last log of each container whose output has ended.
    closed: HashMap<String, Log>,
    /// What a shutdown asked for, once one has.
    power: Option<Power>,
}

impl<'s> EventLoop<'s> {
    /// Opens the control socket and the input devices under `root`.
    pub fn new(
        system: &'s mut dyn System,
        root: &Path,
        options: Options,
        wake: Option<OwnedFd>,
    ) -> EventLoop<'s> {
        let listener = control_socket(system, root);
        let inputs = input_devices(root);
        EventLoop {
            system,
            root: root.to_path_buf(),
            options,
            wake,
            listener,
            inputs,
            logs: HashMap::new(),
            closed: HashMap::new(),
            power: None,
        }
    }

    /// Runs the onboot containers in order, each to its end.
    pub fn run_onboot(&mut self, bundles: &[Prepared]) {
        let debug = self.options.debug;
        for p in bundles {
            self.run_to_end(p, None, &mut |system, pid, exit| {
                if debug {
                    system.log(&format!("reaped {pid}: {exit}"));
                }
            });
        }
    }

    /// Starts the services and supervises them until a shutdown is asked
    /// for; returns what it asks for and the supervisor, which knows what
    /// still runs. `started_at` is when init started, for the log line
    /// that says when every service had started.
    pub fn supervise(&mut self, services: &[Prepared], started_at: Instant) -> (Power, Supervisor) {
        let debug = self.options.debug;
        let units = services
            .iter()
            .map(|p| {
                Unit::new(
                    Service::new(&p.found.name, p.restart, Default::default()),
                    bundle::launch(&self.root, p),
                    p.depends.clone(),
                    p.healthcheck.clone(),
                )
            })
            .collect();
        let mut supervisor = Supervisor::new(units);
        let binds: HashMap<String, Vec<(&'static str, String)>> = services
            .iter()
            .map(|p| (p.found.name.clone(), p.bind_namespaces.clone()))
            .collect();
        let mut all_started = supervisor.units.is_empty();
        let mut ever_started = HashSet::new();
        let power = loop {
            let now = self.system.now();
            for (name, started) in supervisor.tick(self.system, now) {
                let wanted = binds.get(&name).map_or(&[][..], Vec::as_slice);
                bind_namespaces(self.system, started.pid, wanted);
                ever_started.insert(name.clone());
                if let Some(output) = started.output {
                    self.follow(&name, output);
                }
            }
            if !all_started && ever_started.len() == supervisor.units.len() {
                all_started = true;
                let uptime = std::fs::read_to_string(under(&self.root, "/proc/uptime"));
                let uptime = uptime.unwrap_or_default();
                let uptime = uptime.split_whitespace().next().unwrap_or("?");
                let since = self.system.now().saturating_duration_since(started_at);
                self.system.log(&format!(
                    "all services started {} ms after init started ({uptime} s after the kernel)",
                    since.as_millis()
                ));
            }
            let wait = supervisor
                .next_wake(self.system.now())
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            let log_dir = under(&self.root, LOG_DIR);
            self.wait(wait, &mut |system, event| match event {
                Event::Exit(pid, exit) => {
                    let now = system.now();
                    if !supervisor.exited(system, pid, exit, now) && debug {
                        system.log(&format!("reaped {pid}: {exit}"));
                    }
                }
                Event::Request(request, stream) => {
                    answer(system, &mut supervisor, &log_dir, request, stream)
                }
            });
            if let Some(power) = self.power {
                break power;
            }
        };
        self.system.log(&format!("shutting down ({power:?})"));
        (power, supervisor)
    }

    /// Runs the onshutdown containers in order, each for at most the grace
    /// period; services that end meanwhile are not started again (nothing
    /// ticks the supervisor).
    pub fn run_onshutdown(&mut self, bundles: &[Prepared], supervisor: &mut Supervisor) {
        let grace = self.options.grace;
        for p in bundles {
            self.run_to_end(p, Some(grace), &mut |system, pid, exit| {
                let now = system.now();
                supervisor.exited(system, pid, exit, now);
            });
        }
    }

    fn follow(&mut self, name: &str, output: OwnedFd) {
        let log = Log::open(
            &under(&self.root, LOG_DIR),
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
        others: &mut dyn FnMut(&mut dyn System, i32, Exit),
    ) {
        let launch = bundle::launch(&self.root, p);
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
        let since = self.system.now();
        let mut killed = false;
        let exit = loop {
            let mut ended = None;
            self.wait(Duration::from_secs(1), &mut |system, event| match event {
                Event::Exit(pid, exit) if pid == started.pid => ended = Some(exit),
                Event::Exit(pid, exit) => others(system, pid, exit),
                Event::Request(_, mut stream) => {
                    let _ = stream.write_all(b"error: not running services yet\n");
                }
            });
            if let Some(exit) = ended {
                break exit;
            }
            // Onshutdown containers get the grace period; an onboot one runs
            // until it ends, unless a shutdown is asked for meanwhile.
            let give_up = match deadline {
                Some(limit) => self.system.now().saturating_duration_since(since) >= limit,
                None => self.power.is_some(),
            };
            if !killed && give_up {
                self.system
                    .log(&format!("{name}: still running; killing it"));
                let _ = self.system.kill(started.pid, SIGKILL);
                killed = true;
            }
        };
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
    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(&mut dyn System, Event)) {
        let mut fds = Vec::new();
        if let Some(wake) = &self.wake {
            fds.push(PollFd::new(wake, PollFlags::IN));
        }
        if let Some(listener) = &self.listener {
            fds.push(PollFd::new(listener, PollFlags::IN));
        }
        let inputs_at = fds.len();
        fds.extend(self.inputs.iter().map(|f| PollFd::new(f, PollFlags::IN)));
        let logs_at = fds.len();
        let log_fds: Vec<i32> = self.logs.keys().copied().collect();
        fds.extend(
            self.logs
                .values()
                .map(|(pipe, _)| PollFd::from_borrowed_fd(pipe.as_fd(), PollFlags::IN)),
        );
        self.system.poll(&mut fds, timeout);
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);

        if let Some(wake) = &self.wake {
            let mut byte = [0u8; 64];
            while matches!(rustix::io::read(wake, &mut byte), Ok(n) if n > 0) {}
        }
        // Output first, so that a container's last words precede its end.
        for (i, fd) in log_fds.iter().enumerate() {
            if ready.get(logs_at + i) == Some(&true) {
                self.drain(*fd);
            }
        }
        while let Some((pid, exit)) = self.system.reap(Duration::ZERO) {
            on(self.system, Event::Exit(pid, exit));
        }
        for (i, input) in self.inputs.iter_mut().enumerate() {
            if ready.get(inputs_at + i) == Some(&true) && power_pressed(input) {
                self.system.log("power button pressed");
                self.power = Some(Power::Off);
            }
        }
        if let Some(listener) = &self.listener {
            while let Ok((stream, _)) = listener.accept() {
                match read_request(self.system, stream) {
                    Some((Request::Poweroff, mut stream)) => {
                        self.power = Some(Power::Off);
                        let _ = stream.write_all(b"powering off\n");
                    }
                    Some((Request::Reboot, mut stream)) => {
                        self.power = Some(Power::Reboot);
                        let _ = stream.write_all(b"rebooting\n");
                    }
                    Some((request, stream)) => on(self.system, Event::Request(request, stream)),
                    None => {}
                }
            }
        }
        match self.system.take_signal() {
            None => {}
            Some(SIGUSR2) => self.power = Some(Power::Off),
            Some(_) => self.power = Some(Power::Reboot),
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
                Ok(n) => match log.write(buffer.get(..n).unwrap_or_default()) {
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

/// Binds a started container's namespaces where runtime.json asks.
fn bind_namespaces(system: &mut dyn System, pid: i32, binds: &[(&'static str, String)]) {
    for (kind, path) in binds {
        if let Some(parent) = Path::new(path).parent()
            && let Err(e) = system.mkdir(&parent.to_string_lossy())
        {
            system.log(&format!("making {}: {e}", parent.display()));
        }
        // A restart binds the new namespace over the old one's place.
        let _ = system.unmount(path);
        let bind = Mount {
            source: format!("/proc/{pid}/ns/{kind}"),
            target: path.clone(),
            kind: "none".into(),
            flags: vec!["bind"],
            data: String::new(),
        };
        if let Err(e) = system.mount(&bind) {
            system.log(&format!(
                "binding the {kind} namespace of {pid} to {path}: {e}"
            ));
        }
    }
}

/// The control socket, or `None` (logged) when it cannot be made.
fn control_socket(system: &mut dyn System, root: &Path) -> Option<UnixListener> {
    let _ = std::fs::create_dir_all(under(root, RUN));
    let socket = under(root, control::SOCKET);
    let _ = std::fs::remove_file(&socket);
    match UnixListener::bind(&socket) {
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
fn input_devices(root: &Path) -> Vec<std::fs::File> {
    let Ok(entries) = std::fs::read_dir(under(root, "/dev/input")) else {
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

fn read_request(system: &mut dyn System, mut stream: UnixStream) -> Option<(Request, UnixStream)> {
    // A client gets one second to send its line and to take the answer:
    // PID 1 serves it in its event loop.
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
            Ok(n) if n > 0 => line.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            _ => break,
        }
    }
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).into_owned();
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
    system: &mut dyn System,
    supervisor: &mut Supervisor,
    log_dir: &Path,
    request: Request,
    mut stream: UnixStream,
) {
    let now = system.now();
    let result = match request {
        Request::List => Ok(control::table(&supervisor.status())),
        Request::Start(name) => supervisor.start(&name, now),
        Request::Stop(name) => supervisor.stop(system, &name, now),
        Request::Restart(name) => supervisor.restart(system, &name, now),
        Request::Log(name, lines) => {
            logs::tail_of(log_dir, &name, lines).map_err(|e| format!("{LOG_DIR}/{name}.log: {e}"))
        }
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
        let events = buffer.get(..n).unwrap_or_default();
        for event in events.chunks_exact(INPUT_EVENT_SIZE) {
            // type, code and value follow the 16-byte time.
            let field = |at: usize, len: usize| event.get(at..at + len).unwrap_or_default();
            let kind = field(16, 2).try_into().ok().map(u16::from_ne_bytes);
            let code = field(18, 2).try_into().ok().map(u16::from_ne_bytes);
            let value = field(20, 4).try_into().ok().map(i32::from_ne_bytes);
            pressed |= kind == Some(EV_KEY) && code == Some(KEY_POWER) && value == Some(1);
        }
    }
    pressed
}
