//! What cloud-config does to the running system beyond writing files:
//! mounting, setting the host name, running commands, logging. One small
//! trait, so unit tests record these instead of doing them.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The time a command (bootcmd, runcmd, a script) may take before it is
/// killed (docs/cloud-config.md).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// A mount as fstab spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    /// Empty for a bind mount.
    pub fstype: String,
    /// fstab's comma-separated options (`bind`, `ro`, `lowerdir=...`).
    pub options: String,
}

/// A command: run as argv (a list in the document, or `/bin/sh -c TEXT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub limit: Duration,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signalled(i32),
    TimedOut,
}

pub trait System {
    fn mount(&self, mount: &Mount) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Runs a command, handing each line of its output (stdout and stderr
    /// together) to `line` as it comes.
    fn run(&self, command: &Command, line: &mut dyn FnMut(&str)) -> io::Result<Outcome>;
    /// One line of the agent's log (stdout, which init keeps).
    fn log(&self, line: &str);
}

/// The system itself.
#[derive(Debug, Default)]
pub struct Live;

impl System for Live {
    fn mount(&self, mount: &Mount) -> io::Result<()> {
        let (flags, data) = mount_flags(&mount.options);
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        let data = (!data.is_empty()).then_some(data.as_c_str());
        rustix::mount::mount(
            mount.source.as_str(),
            &mount.target,
            mount.fstype.as_str(),
            flags,
            data,
        )?;
        Ok(())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        rustix::system::sethostname(name.as_bytes())?;
        Ok(())
    }

    fn run(&self, command: &Command, line: &mut dyn FnMut(&str)) -> io::Result<Outcome> {
        static APPLETS: std::sync::Once = std::sync::Once::new();
        APPLETS.call_once(|| {
            if let Err(e) = install_applets(Path::new("/")) {
                self.log(&format!(
                    "cloud-config: busybox's applets: {e}; commands have /bin/sh only"
                ));
            }
        });
        run_with_limit(command, line)
    }

    fn log(&self, line: &str) {
        println!("{line}");
    }
}

/// The container's image has only `/bin/busybox` and `/bin/sh`: before
/// the first command, busybox's applets become links to it where busybox
/// puts them (`/bin/ls`, `/usr/bin/env`, ...), as `busybox --install -s`
/// would (the container's root is writable). Nothing when `/bin/ls` is
/// there; a file already in an applet's place stays. The number of links
/// made.
pub fn install_applets(root: &Path) -> io::Result<usize> {
    if std::fs::symlink_metadata(root.join("bin/ls")).is_ok() {
        return Ok(0);
    }
    let busybox = root.join("bin/busybox");
    let out = std::process::Command::new(&busybox)
        .arg("--list-full")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| io::Error::other(format!("{}: {e}", busybox.display())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list-full: {}",
            busybox.display(),
            out.status
        )));
    }
    let mut made = 0;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if crate::files::check(&format!("/{applet}")).is_err() {
            continue;
        }
        let link = root.join(applet);
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
        made += 1;
    }
    Ok(made)
}

/// fstab options into mount(2) flags and the filesystem's own data;
/// options that only mean something to mount(8), fstab or systemd
/// (`defaults`, `nofail`, `auto`, `_netdev`, `x-*`) are dropped.
pub fn mount_flags(options: &str) -> (rustix::mount::MountFlags, String) {
    use rustix::mount::MountFlags as F;
    let mut flags = F::empty();
    let mut data: Vec<&str> = Vec::new();
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option {
            "ro" => flags |= F::RDONLY,
            "rw" => flags -= F::RDONLY,
            "nosuid" => flags |= F::NOSUID,
            "nodev" => flags |= F::NODEV,
            "noexec" => flags |= F::NOEXEC,
            "sync" => flags |= F::SYNCHRONOUS,
            "dirsync" => flags |= F::DIRSYNC,
            "noatime" => flags |= F::NOATIME,
            "nodiratime" => flags |= F::NODIRATIME,
            "relatime" => flags |= F::RELATIME,
            "strictatime" => flags |= F::STRICTATIME,
            "lazytime" => flags |= F::LAZYTIME,
            "bind" => flags |= F::BIND,
            "rbind" => flags |= F::BIND | F::REC,
            "suid" | "dev" | "exec" | "async" | "atime" | "diratime" | "defaults" | "auto"
            | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev" => {}
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o => data.push(o),
        }
    }
    (flags, data.join(","))
}

/// Runs `command` with its output through one pipe, killing it at its time
/// limit. Lines are handed on as they come; a background process that
/// keeps the pipe open does not hold the run up past the command's end.
fn run_with_limit(command: &Command, line: &mut dyn FnMut(&str)) -> io::Result<Outcome> {
    let dropped = Arc::new(AtomicU64::new(0));
    let outcome = run_and_read(command, line, &dropped);
    let dropped = dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        line(&format!(
            "[{dropped} more bytes of output not logged: at most {OUTPUT_CAP} bytes a command]"
        ));
    }
    outcome
}

fn run_and_read(
    command: &Command,
    line: &mut dyn FnMut(&str),
    dropped: &Arc<AtomicU64>,
) -> io::Result<Outcome> {
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    use std::os::unix::process::CommandExt;
    let (reader, writer) = io::pipe()?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .env_clear()
        .env("HOME", "/root")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .current_dir("/")
        // Its own process group, so the time limit kills what it started too.
        .process_group(0)
        .spawn()?;
    let (sender, lines) = mpsc::sync_channel::<String>(64);
    let counter = dropped.clone();
    std::thread::spawn(move || read_lines(reader, &sender, &counter));
    let deadline = Instant::now() + command.limit;
    let mut ended: Option<(Outcome, Instant)> = None;
    loop {
        let idle = match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(text) => {
                line(&text);
                false
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some((outcome, _)) = ended {
                    return Ok(outcome);
                }
                let status = wait_until(&mut child, deadline)?;
                return Ok(status);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
        };
        match ended {
            // Output left in the pipe after the command ended is read
            // while it comes; a pipe a background process holds open but
            // is quiet gets a short grace.
            Some((outcome, at))
                if (idle && at.elapsed() > Duration::from_millis(500))
                    || Instant::now() >= deadline =>
            {
                return Ok(outcome);
            }
            Some(_) => {}
            None => {
                if let Some(status) = child.try_wait()? {
                    ended = Some((outcome_of(status), Instant::now()));
                } else if Instant::now() >= deadline {
                    return Ok(kill(&mut child));
                }
            }
        }
    }
}

/// The longest line handed on; the rest of a longer one is dropped.
pub const LINE_CAP: usize = 4096;
/// The most output of one command handed on (lines counted with their
/// newline); the rest is counted and drained.
pub const OUTPUT_CAP: u64 = 1 << 20;

/// Reads the command's output in blocks, hands on its lines (each cut at
/// [`LINE_CAP`], [`OUTPUT_CAP`] in all) and counts what it drops in
/// `dropped`; it reads to the end however much there is, so the command
/// never blocks on a full pipe. Memory: one block and one line.
fn read_lines(mut reader: impl io::Read, sender: &mpsc::SyncSender<String>, dropped: &AtomicU64) {
    let mut block = [0u8; 8192];
    let mut current: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    let mut handed: u64 = 0;
    let mut receiver_gone = false;
    let mut flush = |current: &mut Vec<u8>, cut: &mut bool, receiver_gone: &mut bool| {
        let size = current.len() as u64 + 1;
        if !*receiver_gone && handed + size <= OUTPUT_CAP {
            handed += size;
            let text = String::from_utf8_lossy(current);
            let mut text = text.trim_end_matches('\r').to_string();
            if *cut {
                text.push_str(" [line cut]");
            }
            *receiver_gone = sender.send(text).is_err();
        } else {
            dropped.fetch_add(size, Ordering::Relaxed);
        }
        current.clear();
        *cut = false;
    };
    loop {
        let count = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for piece in block[..count].split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = LINE_CAP.saturating_sub(current.len());
            if body.len() > room {
                current.extend_from_slice(&body[..room]);
                dropped.fetch_add((body.len() - room) as u64, Ordering::Relaxed);
                cut = true;
            } else {
                current.extend_from_slice(body);
            }
            if ends {
                flush(&mut current, &mut cut, &mut receiver_gone);
            }
        }
    }
    if !current.is_empty() || cut {
        flush(&mut current, &mut cut, &mut receiver_gone);
    }
}

fn wait_until(child: &mut std::process::Child, deadline: Instant) -> io::Result<Outcome> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(outcome_of(status));
        }
        if Instant::now() >= deadline {
            return Ok(kill(child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a command's process group at its time limit.
fn kill(child: &mut std::process::Child) -> Outcome {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();
    Outcome::TimedOut
}

fn outcome_of(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signalled(signal),
        (None, None) => Outcome::Exited(-1),
    }
}

/// A system that records what it is asked to do, for unit tests; commands
/// are run for real (through `/bin/sh`) only when `run_commands` is set,
/// else they print their argv.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    pub mounts: std::cell::RefCell<Vec<Mount>>,
    pub hostnames: std::cell::RefCell<Vec<String>>,
    pub commands: std::cell::RefCell<Vec<Vec<String>>>,
    pub lines: std::cell::RefCell<Vec<String>>,
    pub run_commands: bool,
}

#[cfg(test)]
impl System for Recorder {
    fn mount(&self, mount: &Mount) -> io::Result<()> {
        self.mounts.borrow_mut().push(mount.clone());
        Ok(())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.hostnames.borrow_mut().push(name.to_string());
        Ok(())
    }

    fn run(&self, command: &Command, line: &mut dyn FnMut(&str)) -> io::Result<Outcome> {
        self.commands.borrow_mut().push(command.argv.clone());
        if self.run_commands {
            return run_with_limit(command, line);
        }
        line(&format!("ran {}", command.argv.join(" ")));
        Ok(Outcome::Exited(0))
    }

    fn log(&self, line: &str) {
        self.lines.borrow_mut().push(line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], limit: Duration) -> (Outcome, Vec<String>) {
        let mut lines = Vec::new();
        let command = Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            limit,
        };
        let outcome = run_with_limit(&command, &mut |l| lines.push(l.to_string())).unwrap();
        (outcome, lines)
    }

    #[test]
    fn output_and_status() {
        let (outcome, lines) = run(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(10),
        );
        assert_eq!(outcome, Outcome::Exited(3));
        assert_eq!(lines, ["out", "err"]);
    }

    #[test]
    fn time_limit_kills() {
        let started = Instant::now();
        // The shell forks sleep (it is not the last command): both go.
        let (outcome, lines) = run(
            &["/bin/sh", "-c", "echo $$; sleep 30; echo never"],
            Duration::from_millis(500),
        );
        assert_eq!(outcome, Outcome::TimedOut);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let group: &str = &lines[0];
        std::thread::sleep(Duration::from_millis(100));
        // No process of its group is left running (a zombie waits for
        // whoever reaps orphans here).
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                fields.get(2) == Some(&group) && fields.first() != Some(&"Z")
            })
            .collect();
        assert!(alive.is_empty(), "{alive:?}");
    }

    #[test]
    fn a_background_child_does_not_hold_the_run() {
        let started = Instant::now();
        let (outcome, _) = run(
            &["/bin/sh", "-c", "sleep 20 & echo done"],
            Duration::from_secs(60),
        );
        assert_eq!(outcome, Outcome::Exited(0));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A command's output costs bounded memory however it comes: one
    /// endless line (`head -c 20000000 /dev/zero`) or many lines; what is
    /// logged is cut, and what is dropped is counted in one line.
    #[test]
    fn output_is_bounded() {
        let (outcome, lines) = run(
            &[
                "/bin/sh",
                "-c",
                "echo first; head -c 20000000 /dev/zero | tr '\\0' x; echo; yes 0123456789 | head -n 200000; echo last >&2",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], format!("{} [line cut]", "x".repeat(LINE_CAP)));
        assert!(
            lines.iter().all(|l| l.len() <= LINE_CAP + 11),
            "a long line"
        );
        let logged: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(logged <= OUTPUT_CAP as usize + 200, "{logged} bytes");
        // 20000000 - 4096 + 1 + 11 * 200000 + 5, less what was logged.
        let total: u64 = 6 + 20_000_001 + 11 * 200_000 + 5;
        let logged_bytes: u64 = lines[..lines.len() - 1]
            .iter()
            .map(|l| l.trim_end_matches(" [line cut]").len() as u64 + 1)
            .sum();
        assert_eq!(
            lines.last().unwrap(),
            &format!(
                "[{} more bytes of output not logged: at most {OUTPUT_CAP} bytes a command]",
                total - logged_bytes
            )
        );
        assert!(lines.iter().any(|l| l == "0123456789"));
    }

    /// busybox's own list of applets made links (the way `busybox
    /// --install -s` places them), so list-form commands (`[ls, -l, /]`)
    /// and `#!/usr/bin/env sh` scripts start.
    #[test]
    fn busybox_applets() {
        let Ok(busybox) = std::fs::read("/bin/busybox") else {
            return crate::test_support::skip("/bin/busybox (busybox-static) is needed");
        };
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("busybox"), busybox).unwrap();
        std::fs::set_permissions(
            bin.join("busybox"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
        let made = install_applets(root.path()).unwrap();
        assert!(made > 100, "{made}");
        for applet in ["bin/ls", "usr/bin/env", "bin/mkdir", "sbin/ifconfig"] {
            assert_eq!(
                std::fs::read_link(root.path().join(applet)).unwrap(),
                Path::new("/bin/busybox"),
                "{applet}"
            );
        }
        assert_eq!(
            std::fs::read_link(bin.join("sh")).unwrap(),
            Path::new("busybox")
        );
        let out = std::process::Command::new(root.path().join("usr/bin/env"))
            .arg("true")
            .status()
            .unwrap();
        assert!(out.success());
        // Once there, nothing again.
        assert_eq!(install_applets(root.path()).unwrap(), 0);
        let empty = tempfile::tempdir().unwrap();
        assert!(install_applets(empty.path()).is_err());
    }

    #[test]
    fn fstab_options() {
        use rustix::mount::MountFlags as F;
        let (flags, data) = mount_flags("defaults,nofail,ro,noexec,x-systemd.requires=x,uid=1000");
        assert_eq!(flags, F::RDONLY | F::NOEXEC);
        assert_eq!(data, "uid=1000");
    }
}
