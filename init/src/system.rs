//! The one seam between PID 1's logic and the kernel.
//!
//! Every privileged call goes through [`System`], so that boot ordering,
//! supervision and shutdown are tested against [`Fake`], which records what
//! was asked and answers as told, without root. The implementation on the
//! real kernel lives beside the boot code.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::supervise::Exit;

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
    fn mount(&mut self, mount: &Mount) -> Result<(), String>;
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
    clock: Instant,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            calls: Vec::new(),
            exits: VecDeque::new(),
            busy: Vec::new(),
            broken: Vec::new(),
            listening: Vec::new(),
            next_pid: 100,
            mount_table: String::new(),
            clock: Instant::now(),
        }
    }
}

impl System for Fake {
    fn mount(&mut self, mount: &Mount) -> Result<(), String> {
        self.calls
            .push(format!("mount {} {}", mount.kind, mount.target));
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
