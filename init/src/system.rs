//! The one seam between PID 1's logic and the kernel.
//!
//! Every privileged call goes through [`System`], and so do the clock and
//! the waits, so that the boot sequence, supervision and shutdown are
//! tested against [`Fake`], which records what was asked and answers as
//! told, without root and without waiting. [`crate::kernel`] implements it
//! on the real kernel.
//! Reading and writing ordinary files is not here: the boot sequence takes
//! the directory that stands for `/`.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::PollFd;

use crate::supervise::Exit;

/// Where the absolute path `path` is when `root` stands for `/`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A mount as init makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub kind: String,
    pub flags: Vec<&'static str>,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Off,
    Reboot,
}

/// A container to start: its id (unique among running containers) and the
/// bundle directory prepared for it under `/run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub id: String,
    pub bundle: PathBuf,
    /// The container gets the host's device nodes, as listed at its start.
    pub host_dev: bool,
}

/// A started container: the pid of its first process and the read end of
/// the pipe that carries its stdout and stderr.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub output: Option<OwnedFd>,
}

/// What PID 1 asks of the kernel.
pub trait System {
    /// Catches the signals that ask PID 1 to stop (SIGUSR2, SIGTERM,
    /// SIGINT) and SIGCHLD, and turns Ctrl-Alt-Del into SIGINT. Returns a
    /// descriptor that becomes readable when one arrives.
    fn catch_signals(&mut self) -> Result<OwnedFd, String>;
    /// The last signal that asked PID 1 to stop since the last call.
    fn take_signal(&mut self) -> Option<i32>;
    /// Waits until one of `fds` is ready or `timeout` passes.
    fn poll(&mut self, fds: &mut [PollFd<'_>], timeout: Duration);
    /// Moves the tree at `new_root` onto `/` and makes it the root and the
    /// working directory of this process.
    fn switch_root(&mut self, new_root: &str) -> Result<(), String>;
    /// Executes this program again with `args`; returns only when that
    /// fails, with why.
    fn exec_self(&mut self, args: &[String]) -> String;
    fn mount(&mut self, mount: &Mount) -> Result<(), String>;
    fn remount_read_only(&mut self, target: &str) -> Result<(), String>;
    /// Writes a setting of the kernel: a file under `/proc/sys` or `/sys`.
    fn set_kernel_value(&mut self, path: &str, value: &str) -> Result<(), String>;
    /// The running kernel's release (`uname -r`).
    fn kernel_release(&mut self) -> String;
    fn set_hostname(&mut self, name: &str) -> Result<(), String>;
    /// Brings the loopback interface up.
    fn loopback_up(&mut self) -> Result<(), String>;
    fn mkdir(&mut self, path: &str) -> Result<(), String>;
    /// Loads one module file; one that is loaded already is no error.
    fn load_module(&mut self, path: &Path) -> Result<(), String>;
    /// Creates and starts a container; it runs detached, its end is reaped
    /// by [`System::reap`].
    fn start(&mut self, launch: &Launch) -> Result<Started, String>;
    /// Runs `args` inside the running container `id`; returns the pid.
    fn exec(&mut self, id: &str, args: &[String]) -> Result<i32, String>;
    /// Forgets an ended container (its state and cgroup).
    fn remove(&mut self, id: &str);
    /// Whether a TCP connection to `address` (`HOST:PORT`) succeeds soon.
    fn connect(&mut self, address: &str) -> bool;
    /// Detaches lazily when busy.
    fn unmount(&mut self, target: &str) -> Result<(), String>;
    fn kill(&mut self, pid: i32, signal: i32) -> Result<(), String>;
    /// Signals every process but PID 1 and kernel threads; returns how
    /// many were signalled.
    fn kill_all(&mut self, signal: i32) -> usize;
    /// The kernel's mount table (`/proc/self/mountinfo`), as text.
    fn mountinfo(&mut self) -> String;
    /// Reaps one ended child, waiting at most `timeout`.
    fn reap(&mut self, timeout: Duration) -> Option<(i32, Exit)>;
    fn now(&mut self) -> Instant;
    fn sync(&mut self);
    fn power(&mut self, power: Power);
    fn log(&mut self, line: &str);
}

/// A [`System`] that records every call and replays scripted child exits.
#[derive(Debug)]
pub struct Fake {
    pub calls: Vec<String>,
    /// Children that end, in order, each after the given time passes.
    pub exits: VecDeque<(Duration, i32, Exit)>,
    /// Targets whose unmount fails (busy).
    pub busy: Vec<String>,
    /// Container ids whose start fails, module files whose load fails.
    pub broken: Vec<String>,
    /// Addresses that accept connections.
    pub listening: Vec<String>,
    /// The pid the next started process gets.
    pub next_pid: i32,
    /// What `mountinfo` returns.
    pub mount_table: String,
    /// Signals that ask PID 1 to stop, each once this much time has passed
    /// since the fake was made, in order.
    pub signals: VecDeque<(Duration, i32)>,
    /// The other end of what `catch_signals` returns, kept open.
    signal_end: Option<UnixStream>,
    clock: Instant,
    made: Instant,
}

impl Fake {
    /// How long until the next scripted exit or signal, if any.
    fn next_event(&self) -> Option<Duration> {
        let exit = self.exits.front().map(|(after, _, _)| *after);
        let passed = self.clock - self.made;
        let signal = (self.signals.front()).map(|(at, _)| at.saturating_sub(passed));
        exit.into_iter().chain(signal).min()
    }
}

impl Default for Fake {
    fn default() -> Self {
        let now = Instant::now();
        Fake {
            calls: Vec::new(),
            exits: VecDeque::new(),
            busy: Vec::new(),
            broken: Vec::new(),
            listening: Vec::new(),
            next_pid: 100,
            mount_table: String::new(),
            signals: VecDeque::new(),
            signal_end: None,
            clock: now,
            made: now,
        }
    }
}

impl System for Fake {
    fn catch_signals(&mut self) -> Result<OwnedFd, String> {
        self.calls.push("catch signals".into());
        let (read, write) = UnixStream::pair().map_err(|e| e.to_string())?;
        read.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.signal_end = Some(write);
        Ok(read.into())
    }

    fn take_signal(&mut self) -> Option<i32> {
        let passed = self.clock - self.made;
        match self.signals.front() {
            Some((at, _)) if *at <= passed => self.signals.pop_front().map(|(_, s)| s),
            _ => None,
        }
    }

    /// Time passes up to the next scripted exit or signal; descriptors are
    /// looked at once, without waiting.
    fn poll(&mut self, fds: &mut [PollFd<'_>], timeout: Duration) {
        let _ = rustix::event::poll(fds, Some(&rustix::event::Timespec::default()));
        let step = self.next_event().map_or(timeout, |next| next.min(timeout));
        self.clock += step;
        if let Some(first) = self.exits.front_mut() {
            first.0 = first.0.saturating_sub(step);
        }
    }

    fn switch_root(&mut self, new_root: &str) -> Result<(), String> {
        self.calls.push(format!("switch root {new_root}"));
        Ok(())
    }

    fn exec_self(&mut self, args: &[String]) -> String {
        self.calls.push(format!("exec {}", args.join(" ")));
        "the fake does not execute".into()
    }

    fn mount(&mut self, mount: &Mount) -> Result<(), String> {
        self.calls
            .push(format!("mount {} {}", mount.kind, mount.target));
        Ok(())
    }

    fn remount_read_only(&mut self, target: &str) -> Result<(), String> {
        self.calls.push(format!("read-only {target}"));
        Ok(())
    }

    fn set_kernel_value(&mut self, path: &str, value: &str) -> Result<(), String> {
        self.calls.push(format!("set {path} {value}"));
        Ok(())
    }

    fn kernel_release(&mut self) -> String {
        "6.1-fake".into()
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), String> {
        self.calls.push(format!("hostname {name}"));
        Ok(())
    }

    fn loopback_up(&mut self) -> Result<(), String> {
        self.calls.push("lo up".into());
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), String> {
        self.calls.push(format!("mkdir {path}"));
        Ok(())
    }

    fn load_module(&mut self, path: &Path) -> Result<(), String> {
        self.calls.push(format!("load {}", path.display()));
        match self.broken.iter().any(|b| Path::new(b) == path) {
            true => Err("No such device".into()),
            false => Ok(()),
        }
    }

    fn start(&mut self, launch: &Launch) -> Result<Started, String> {
        self.calls.push(format!("start {}", launch.id));
        if self.broken.contains(&launch.id) {
            return Err(format!("{}: broken", launch.id));
        }
        self.next_pid += 1;
        Ok(Started {
            pid: self.next_pid - 1,
            output: None,
        })
    }

    fn exec(&mut self, id: &str, args: &[String]) -> Result<i32, String> {
        self.calls.push(format!("exec {id} {}", args.join(" ")));
        self.next_pid += 1;
        Ok(self.next_pid - 1)
    }

    fn remove(&mut self, id: &str) {
        self.calls.push(format!("remove {id}"));
    }

    fn connect(&mut self, address: &str) -> bool {
        self.calls.push(format!("connect {address}"));
        self.listening.iter().any(|a| a == address)
    }

    fn unmount(&mut self, target: &str) -> Result<(), String> {
        self.calls.push(format!("unmount {target}"));
        if self.busy.iter().any(|b| b == target) {
            Err(format!("{target}: busy"))
        } else {
            Ok(())
        }
    }

    fn kill(&mut self, pid: i32, signal: i32) -> Result<(), String> {
        self.calls.push(format!("kill {pid} {signal}"));
        Ok(())
    }

    fn kill_all(&mut self, signal: i32) -> usize {
        self.calls.push(format!("kill all {signal}"));
        0
    }

    fn reap(&mut self, timeout: Duration) -> Option<(i32, Exit)> {
        match self.exits.front() {
            Some((after, _, _)) if *after <= timeout => {
                let (after, pid, exit) = self.exits.pop_front()?;
                self.clock += after;
                Some((pid, exit))
            }
            Some((after, _, _)) => {
                let after = *after;
                self.clock += timeout;
                if let Some(first) = self.exits.front_mut() {
                    first.0 = after - timeout;
                }
                None
            }
            None => {
                self.clock += timeout;
                None
            }
        }
    }

    fn now(&mut self) -> Instant {
        self.clock
    }

    fn sync(&mut self) {
        self.calls.push("sync".into());
    }

    fn mountinfo(&mut self) -> String {
        self.mount_table.clone()
    }

    fn power(&mut self, power: Power) {
        self.calls.push(format!("power {power:?}"));
    }

    fn log(&mut self, line: &str) {
        self.calls.push(format!("log {line}"));
    }
}
