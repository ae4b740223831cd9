//! [`System`] on the real kernel, through rustix's safe wrappers (and
//! signal-hook's for signals, libcontainer through [`crate::runtime`] for
//! containers): no `unsafe` here (see [`crate::sys`]).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::PollFd;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::system::RebootCommand;

use crate::supervise::Exit;
use crate::system::{Launch, Mount, Power, Started, System};

/// finit_module(2): the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

const SIGINT: i32 = 2;
const SIGPIPE: i32 = 13;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;
const SIGCHLD: i32 = 17;

#[derive(Debug, Default)]
pub struct Kernel {
    /// The last signal that asked PID 1 to stop, 0 when none has.
    requested: Arc<AtomicUsize>,
}

/// How often [`Kernel::reap`] looks again while nothing has ended. PID 1
/// reaps from its event loop; a short sleep keeps that loop cheap.
const POLL: Duration = Duration::from_millis(20);

impl System for Kernel {
    fn catch_signals(&mut self) -> Result<OwnedFd, String> {
        let (wake, wake_write) =
            UnixStream::pair().map_err(|e| format!("a socket pair for signals: {e}"))?;
        wake.set_nonblocking(true)
            .map_err(|e| format!("a socket pair for signals: {e}"))?;
        for signal in [SIGINT, SIGUSR2, SIGTERM] {
            let requested = Arc::clone(&self.requested);
            if let Err(e) = signal_hook::flag::register_usize(signal, requested, signal as usize) {
                self.log(&format!("cannot catch signal {signal}: {e}"));
            }
        }
        for signal in [SIGINT, SIGUSR2, SIGTERM, SIGCHLD] {
            let watched = wake_write
                .try_clone()
                .and_then(|writer| signal_hook::low_level::pipe::register(signal, writer));
            if let Err(e) = watched {
                self.log(&format!("cannot watch signal {signal}: {e}"));
            }
        }
        // Rust ignores SIGPIPE, and an ignored signal stays ignored across
        // exec: a handler instead is reset to the default in every container.
        if let Err(e) = signal_hook::flag::register(SIGPIPE, Arc::new(AtomicBool::new(false))) {
            self.log(&format!("cannot catch SIGPIPE: {e}"));
        }
        // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
        if let Err(e) = rustix::system::reboot(RebootCommand::CadOff) {
            self.log(&format!("cannot catch Ctrl-Alt-Del: {e}"));
        }
        Ok(wake.into())
    }

    fn take_signal(&mut self) -> Option<i32> {
        match self.requested.swap(0, Ordering::SeqCst) {
            0 => None,
            signal => i32::try_from(signal).ok(),
        }
    }

    fn poll(&mut self, fds: &mut [PollFd<'_>], timeout: Duration) {
        let timeout = rustix::event::Timespec::try_from(timeout).ok();
        let _ = rustix::event::poll(fds, timeout.as_ref());
    }

    fn switch_root(&mut self, new_root: &str) -> Result<(), String> {
        std::env::set_current_dir(new_root).map_err(|e| format!("{new_root}: {e}"))?;
        rustix::mount::mount_move(".", "/").map_err(|e| format!("moving the root: {e}"))?;
        rustix::process::chroot(".").map_err(|e| format!("chroot: {e}"))?;
        std::env::set_current_dir("/").map_err(|e| format!("/: {e}"))
    }

    fn exec_self(&mut self, args: &[String]) -> String {
        use std::os::unix::process::CommandExt;
        let Some((program, args)) = args.split_first() else {
            return "no program name".into();
        };
        let e = std::process::Command::new(program).args(args).exec();
        format!("executing {program} again: {e}")
    }

    fn remount_read_only(&mut self, target: &str) -> Result<(), String> {
        rustix::mount::mount_remount(target, MountFlags::RDONLY, c"").map_err(|e| e.to_string())
    }

    fn set_kernel_value(&mut self, path: &str, value: &str) -> Result<(), String> {
        std::fs::write(path, value).map_err(|e| e.to_string())
    }

    fn kernel_release(&mut self) -> String {
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), String> {
        rustix::system::sethostname(name.as_bytes()).map_err(|e| e.to_string())
    }

    fn loopback_up(&mut self) -> Result<(), String> {
        link_up(LOOPBACK).map_err(|e| e.to_string())
    }

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

/// The interface index of `lo`, always the first.
const LOOPBACK: i32 = 1;

/// Sets an interface up, through a route netlink message.
fn link_up(index: i32) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, netlink};
    // No protocol is NETLINK_ROUTE.
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    let message = link_up_request(index);
    rustix::net::sendto(&socket, &message, rustix::net::SendFlags::empty(), &kernel)?;
    let mut reply = [0u8; 256];
    let n = rustix::net::recv(&socket, &mut reply, rustix::net::RecvFlags::empty())?.0;
    match acked_error(reply.get(..n).unwrap_or_default()) {
        0 => Ok(()),
        error => Err(std::io::Error::from_raw_os_error(error)),
    }
}

/// RTM_NEWLINK for interface `index` with IFF_UP set, asking for an ack.
fn link_up_request(index: i32) -> Vec<u8> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const IFF_UP: u32 = 1;
    let mut message = Vec::with_capacity(32);
    // struct nlmsghdr: length, type, flags, sequence, port
    message.extend_from_slice(&32u32.to_ne_bytes());
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change
    message.extend_from_slice(&[0u8, 0]);
    message.extend_from_slice(&0u16.to_ne_bytes());
    message.extend_from_slice(&index.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes());
    message
}

/// The error number of a netlink ack (an NLMSG_ERROR whose error is 0 on
/// success, minus the error number otherwise); 0 for a reply too short to
/// be one.
fn acked_error(reply: &[u8]) -> i32 {
    match reply.get(16..20) {
        Some(&[a, b, c, d]) => i32::from_ne_bytes([a, b, c, d]).saturating_neg(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_request_is_a_netlink_message_of_its_own_length() {
        let message = link_up_request(LOOPBACK);
        assert_eq!(message.len(), 32);
        assert_eq!(message[..4], 32u32.to_ne_bytes());
        assert_eq!(message[20..24], 1i32.to_ne_bytes(), "ifindex");
        let mut ack = [0u8; 36];
        assert_eq!(acked_error(&ack), 0);
        ack[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
        assert_eq!(acked_error(&ack), 19);
        assert_eq!(acked_error(&ack[..10]), 0);
    }

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
        let mut kernel = Kernel::default();
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
