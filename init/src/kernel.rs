//! [`System`] on the real kernel, through rustix's safe wrappers: no
//! `unsafe` in PID 1.

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::system::RebootCommand;

use crate::supervise::Exit;
use crate::system::{Launch, Mount, Power, Started, System};

/// finit_module(2): the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

#[derive(Debug, Default)]
pub struct Kernel;

/// How often [`Kernel::reap`] looks again while nothing has ended. PID 1
/// reaps from its main loop; a short sleep keeps that loop cheap.
const POLL: Duration = Duration::from_millis(20);

impl System for Kernel {
    fn mount(&mut self, mount: &Mount) -> Result<(), String> {
        let mut flags = MountFlags::empty();
        let mut propagation = MountPropagationFlags::empty();
        let (mut bind, mut recursive, mut remount) = (false, false, false);
        for flag in &mount.flags {
            match *flag {
                "nosuid" => flags |= MountFlags::NOSUID,
                "nodev" => flags |= MountFlags::NODEV,
                "noexec" => flags |= MountFlags::NOEXEC,
                "ro" => flags |= MountFlags::RDONLY,
                "noatime" => flags |= MountFlags::NOATIME,
                "nodiratime" => flags |= MountFlags::NODIRATIME,
                "relatime" => flags |= MountFlags::RELATIME,
                "bind" => bind = true,
                "rbind" => (bind, recursive) = (true, true),
                "remount" => remount = true,
                "private" => propagation |= MountPropagationFlags::PRIVATE,
                "rprivate" => {
                    propagation |= MountPropagationFlags::PRIVATE | MountPropagationFlags::REC
                }
                "shared" => propagation |= MountPropagationFlags::SHARED,
                "rshared" => {
                    propagation |= MountPropagationFlags::SHARED | MountPropagationFlags::REC
                }
                "slave" => propagation |= MountPropagationFlags::DOWNSTREAM,
                "rslave" => {
                    propagation |= MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC
                }
                other => return Err(format!("unknown mount flag {other}")),
            }
        }
        let target = mount.target.as_str();
        if !std::path::Path::new(target).exists() {
            // A bind of a file needs a file to bind onto.
            let file_source = bind && std::path::Path::new(&mount.source).is_file();
            let made = match file_source {
                true => std::fs::File::create(target).map(drop),
                false => std::fs::create_dir_all(target),
            };
            made.map_err(|e| format!("making {target}: {e}"))?;
        }
        let data = CString::new(mount.data.as_str()).map_err(|e| e.to_string())?;
        // `remount` with nothing but propagation (runtime.json's
        // ["remount", "private"]) only changes the propagation.
        let only_propagation = !propagation.is_empty()
            && !bind
            && flags.is_empty()
            && (remount || mount.kind == "none");
        let mounted = if only_propagation {
            Ok(())
        } else if bind {
            let bound = match recursive {
                true => rustix::mount::mount_bind_recursive(mount.source.as_str(), target),
                false => rustix::mount::mount_bind(mount.source.as_str(), target),
            };
            // A bind takes its other flags only from a remount.
            bound.and_then(|()| match flags.is_empty() {
                true => Ok(()),
                false => rustix::mount::mount_remount(target, flags | MountFlags::BIND, c""),
            })
        } else if remount {
            rustix::mount::mount_remount(target, flags, data.as_c_str())
        } else {
            rustix::mount::mount(
                mount.source.as_str(),
                target,
                mount.kind.as_str(),
                flags,
                Some(data.as_c_str()),
            )
        };
        let done = mounted.and_then(|()| match propagation.is_empty() {
            true => Ok(()),
            false => rustix::mount::mount_change(target, propagation),
        });
        done.map_err(|e| e.to_string())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())
    }

    fn load_module(&mut self, path: &Path) -> Result<(), String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let name = path.to_string_lossy();
        // The kernel decompresses what it was built to read.
        let flags = match [".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            true => MODULE_INIT_COMPRESSED_FILE,
            false => 0,
        };
        match rustix::system::finit_module(&file, c"", flags) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn start(&mut self, launch: &Launch) -> Result<Started, String> {
        crate::runtime::start(launch)
    }

    fn exec(&mut self, id: &str, args: &[String]) -> Result<i32, String> {
        crate::runtime::exec(id, args)
    }

    fn remove(&mut self, id: &str) {
        if let Err(e) = crate::runtime::remove(id) {
            self.log(&format!("removing container {id}: {e}"));
        }
    }

    fn connect(&mut self, address: &str) -> bool {
        use std::net::ToSocketAddrs;
        let Some(address) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
            return false;
        };
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
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
            // Any child: wait(2), since rustix's waitpid(None) is pid 0,
            // this process group only. Nothing is reaped when no child has
            // ended or there is none.
            if let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
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

    fn kill_all(&mut self, signal: i32) -> usize {
        let Some(signal) = Signal::from_named_raw(signal) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut count = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // Not PID 1, and not kernel threads (kthreadd, pid 2, and its
            // children): they have no command line.
            let user = std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| !c.is_empty());
            if pid == 1 || !user {
                continue;
            }
            if let Some(pid) = Pid::from_raw(pid)
                && rustix::process::kill_process(pid, signal).is_ok()
            {
                count += 1;
            }
        }
        count
    }

    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn sync(&mut self) {
        rustix::fs::sync();
    }

    fn mountinfo(&mut self) -> String {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
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
            // In a process group of their own, as containers are.
            use std::os::unix::process::CommandExt;
            let child = std::process::Command::new("sh")
                .args(["-c", script])
                .process_group(0)
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
