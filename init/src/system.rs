//! The one seam between PID 1's logic and the kernel.
//!
//! Every privileged call goes through [`System`], so that boot ordering,
//! supervision and shutdown are tested against [`Fake`], which records what
//! was asked and answers as told, without root. The implementation on the
//! real kernel lives beside the boot code.

use std::collections::VecDeque;
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

/// What PID 1 asks of the kernel.
pub trait System {
    fn mount(&mut self, mount: &Mount) -> Result<(), String>;
    /// Detaches lazily when busy.
    fn unmount(&mut self, target: &str) -> Result<(), String>;
    fn kill(&mut self, pid: i32, signal: i32) -> Result<(), String>;
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
    clock: Instant,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            calls: Vec::new(),
            exits: VecDeque::new(),
            busy: Vec::new(),
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

    fn power(&mut self, power: Power) {
        self.calls.push(format!("power {power:?}"));
    }

    fn log(&mut self, line: &str) {
        self.calls.push(format!("log {line}"));
    }
}
