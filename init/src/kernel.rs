//! [`System`] on the real kernel, through rustix's safe wrappers: no
//! `unsafe` in PID 1.

use std::ffi::CString;
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::system::RebootCommand;

use crate::supervise::Exit;
use crate::system::{Mount, Power, System};

#[derive(Debug, Default)]
pub struct Kernel;

/// How often [`Kernel::reap`] looks again while nothing has ended. PID 1
/// reaps from its main loop; a short sleep keeps that loop cheap.
const POLL: Duration = Duration::from_millis(20);

impl System for Kernel {
    fn mount(&mut self, mount: &Mount) -> Result<(), String> {
        let mut flags = MountFlags::empty();
        for flag in &mount.flags {
            flags |= match *flag {
                "nosuid" => MountFlags::NOSUID,
                "nodev" => MountFlags::NODEV,
                "noexec" => MountFlags::NOEXEC,
                "ro" => MountFlags::RDONLY,
                other => return Err(format!("unknown mount flag {other}")),
            };
        }
        std::fs::create_dir_all(&mount.target).map_err(|e| e.to_string())?;
        let data = CString::new(mount.data.as_str()).map_err(|e| e.to_string())?;
        rustix::mount::mount(
            mount.source.as_str(),
            mount.target.as_str(),
            mount.kind.as_str(),
            flags,
            Some(data.as_c_str()),
        )
        .map_err(|e| e.to_string())
    }

    fn unmount(&mut self, target: &str) -> Result<(), String> {
        rustix::mount::unmount(target, UnmountFlags::empty())
            .or_else(|_| rustix::mount::unmount(target, UnmountFlags::DETACH))
            .map_err(|e| e.to_string())
    }

    fn kill(&mut self, pid: i32, signal: i32) -> Result<(), String> {
        let pid = Pid::from_raw(pid).ok_or_else(|| format!("bad pid {pid}"))?;
        let signal =
            Signal::from_named_raw(signal).ok_or_else(|| format!("bad signal {signal}"))?;
        rustix::process::kill_process(pid, signal).map_err(|e| e.to_string())
    }

    fn reap(&mut self, timeout: Duration) -> Option<(i32, Exit)> {
        let deadline = Instant::now() + timeout;
        loop {
            // Nothing is reaped when no child has ended or there is none.
            if let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
                let exit = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    // Stopped or continued: not an end; look again.
                    (None, None) => continue,
                };
                return Some((pid.as_raw_nonzero().get(), exit));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn sync(&mut self) {
        rustix::fs::sync();
    }

    fn power(&mut self, power: Power) {
        let command = match power {
            Power::Off => RebootCommand::PowerOff,
            Power::Reboot => RebootCommand::Restart,
        };
        if let Err(e) = rustix::system::reboot(command) {
            self.log(&format!("reboot({power:?}) failed: {e}"));
        }
    }

    fn log(&mut self, line: &str) {
        eprintln!("berth-init: {line}");
        // The kernel log too, so that the line survives the console.
        let _ = std::fs::write("/dev/kmsg", format!("berth-init: {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ended_child_is_reaped_with_its_status() {
        // Children of this test process; nothing else waits for them.
        let mut expected = std::collections::BTreeMap::new();
        for (code, script) in [(3, "exit 3"), (0, "exit 0"), (-9, "kill -9 $$")] {
            let child = std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap();
            let exit = if code < 0 {
                Exit::Signal(-code)
            } else {
                Exit::Code(code)
            };
            expected.insert(child.id() as i32, exit);
            std::mem::forget(child);
        }
        let mut kernel = Kernel;
        let mut reaped = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while reaped.len() < expected.len() && Instant::now() < deadline {
            if let Some((pid, exit)) = kernel.reap(Duration::from_secs(1))
                && expected.contains_key(&pid)
            {
                reaped.insert(pid, exit);
            }
        }
        assert_eq!(reaped, expected);
    }
}
