//! Boots berth's artifacts under QEMU and watches the serial console: the
//! QEMU command line, the KVM probe (KVM hangs on some hosts, so it is
//! proven with a short run before it is used), waiting for expected console
//! lines with a deadline, and keeping the transcript of a boot.
//!
//! What to build and what to expect is the test binaries' business
//! (`tests/boot.rs` discovers its cases under `cases/`); this library knows
//! nothing about berth's YAML. Looking inside an initrd is in [`initrd`].

pub mod initrd;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const QEMU: &str = "qemu-system-x86_64";

/// How long a boot may take to print every expected line.
pub const TCG_TIMEOUT: Duration = Duration::from_secs(120);
pub const KVM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the KVM probe may take before it is killed.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the KVM probe may take for KVM to be used. A working KVM runs
/// the probe (firmware included) in well under a second. The broken KVM of
/// the development machines finishes it too, but in 4 to 6 s of kernel
/// time, and then hangs a Linux boot at "Probing EDD": finishing is not
/// enough, finishing fast is the sign of health.
pub const KVM_PROBE_HEALTHY: Duration = Duration::from_secs(2);
/// How long QEMU gets to exit by itself once every line has been seen.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Whether this is a CI run (`CI=true`), where a skipped test is a failure:
/// a runner that lacks QEMU must not turn the suite green.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// The program `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// QEMU's accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// How long a small kernel+initrd boot may take with this accelerator.
    pub fn boot_timeout(self) -> Duration {
        match self {
            Accel::Kvm => KVM_TIMEOUT,
            Accel::Tcg => TCG_TIMEOUT,
        }
    }
}

/// The accelerator to boot with, decided once per process: KVM only if
/// [`probe`] proves it runs a guest, TCG otherwise. `BERTH_QEMU_ACCEL=tcg`
/// or `=kvm` skips the probe.
pub fn accel(qemu: &Path) -> Accel {
    static CHOSEN: OnceLock<Accel> = OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("BERTH_QEMU_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ => match probe(qemu, Accel::Kvm, KVM_PROBE_TIMEOUT) {
            Ok(elapsed) if elapsed <= KVM_PROBE_HEALTHY => Accel::Kvm,
            Ok(elapsed) => {
                eprintln!(
                    "qemu-tests: using TCG, KVM is too slow here: a trivial guest took {:.1} s",
                    elapsed.as_secs_f64()
                );
                Accel::Tcg
            }
            Err(reason) => {
                eprintln!("qemu-tests: using TCG, KVM does not work here: {reason:#}");
                Accel::Tcg
            }
        },
    })
}

/// A multiboot (a.out kludge) image of a few instructions: write 0x20 to
/// the `isa-debug-exit` port, which makes QEMU exit with status
/// (0x20 << 1) | 1 = 65. Guest code has to run for that to happen, which is
/// what KVM fails to do on the hosts this probe is for.
const PROBE_IMAGE: [u8; 40] = [
    0x02, 0xb0, 0xad, 0x1b, // magic 0x1badb002
    0x00, 0x00, 0x01, 0x00, // flags: the address fields below are valid
    0xfe, 0x4f, 0x51, 0xe4, // checksum: -(magic + flags)
    0x00, 0x00, 0x10, 0x00, // header_addr 0x100000
    0x00, 0x00, 0x10, 0x00, // load_addr 0x100000
    0x00, 0x00, 0x00, 0x00, // load_end_addr: the whole file
    0x00, 0x00, 0x00, 0x00, // bss_end_addr: no bss
    0x20, 0x00, 0x10, 0x00, // entry_addr 0x100020
    0xb0, 0x20, // mov al, 0x20
    0xe6, 0xf4, // out 0xf4, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp back to hlt
    0x90, // padding
];
const PROBE_EXIT_CODE: i32 = 65;

/// Runs a trivial guest with `accel` and fails unless it exits as planned
/// within `timeout`; returns how long it took.
pub fn probe(qemu: &Path, accel: Accel, timeout: Duration) -> Result<Duration> {
    let dir = tempfile::tempdir().context("creating a directory for the probe")?;
    let image = dir.path().join("probe.bin");
    fs::write(&image, PROBE_IMAGE).context("writing the probe image")?;
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-accel", accel.name(), "-machine", "q35", "-m", "64"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stderr = collect(child.stderr.take());
    let status = wait_timeout(&mut child, timeout)?;
    let elapsed = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = String::from_utf8_lossy(&join(stderr)).trim().to_string();
    match status {
        None => bail!("{} guest did not finish in {timeout:?}", accel.name()),
        Some(status) if status.code() == Some(PROBE_EXIT_CODE) => Ok(elapsed),
        Some(status) => bail!("{} guest: qemu {status}: {stderr}", accel.name()),
    }
}

/// Waits for `child` for at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to completion with its output captured, killing it after
/// `timeout`.
pub fn output_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = shell_line(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = wait_timeout(&mut child, timeout)?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{shown} did not finish in {timeout:?}");
    };
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn collect<R: Read + Send + 'static>(stream: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    stream.map(|mut stream| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn join(handle: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default()
}

/// A virtual machine booting a kernel directly (`-kernel`), its console on
/// the first serial port, which QEMU connects to its stdout.
#[derive(Clone, Debug)]
pub struct Machine {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Appended after the standard arguments (disks, network, firmware).
    pub extra_args: Vec<OsString>,
    /// A Unix socket for QEMU's monitor, for `> COMMAND` lines of `expect`.
    pub monitor: Option<PathBuf>,
    /// A reboot restarts the machine; otherwise QEMU exits (`-no-reboot`).
    pub allow_reboot: bool,
}

impl Machine {
    /// 512 MiB, q35, the given kernel and command line.
    pub fn new(qemu: &Path, accel: Accel, kernel: &Path, cmdline: &str) -> Machine {
        Machine {
            qemu: qemu.to_path_buf(),
            accel,
            memory_mib: 512,
            kernel: kernel.to_path_buf(),
            initrd: None,
            cmdline: cmdline.to_string(),
            extra_args: Vec::new(),
            monitor: None,
            allow_reboot: false,
        }
    }

    /// Gives QEMU a monitor socket at `path`.
    pub fn monitor(mut self, path: &Path) -> Self {
        self.monitor = Some(path.to_path_buf());
        self
    }

    pub fn initrd(mut self, initrd: &Path) -> Self {
        self.initrd = Some(initrd.to_path_buf());
        self
    }

    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "-machine",
            "q35",
            "-accel",
            self.accel.name(),
            "-m",
            &self.memory_mib.to_string(),
            "-nographic",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if !self.allow_reboot {
            args.push("-no-reboot".into());
        }
        args.push("-monitor".into());
        args.push(match &self.monitor {
            Some(path) => format!("unix:{},server,nowait", path.display()).into(),
            None => "none".into(),
        });
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        if let Some(initrd) = &self.initrd {
            args.push("-initrd".into());
            args.push(initrd.clone().into_os_string());
        }
        args.push("-append".into());
        args.push(self.cmdline.clone().into());
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.qemu);
        command.args(self.args());
        command
    }

    /// The command line, quoted for a POSIX shell, to rerun a boot by hand.
    pub fn command_line(&self) -> String {
        shell_line(&self.command())
    }
}

/// `command` as one line a POSIX shell would run the same way.
pub fn shell_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r#"'\''"#))
    }
}

/// The lines of an `expect` file: blank lines and `#` comments dropped,
/// surrounding white space trimmed.
pub fn parse_expect(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Console text that ends a boot at once: nothing good comes after it, and
/// waiting out the timeout would only slow the failure down.
pub const FATAL_MARKERS: &[&str] = &["Kernel panic - not syncing"];

/// What happened during one boot.
#[derive(Debug)]
pub struct BootReport {
    pub command_line: String,
    /// Everything the guest wrote to its serial console.
    pub serial: Vec<u8>,
    /// QEMU's own messages.
    pub stderr: Vec<u8>,
    /// How many expected lines were seen before the boot ended.
    pub matched: usize,
    pub elapsed: Duration,
    /// `Err` says why the boot failed.
    pub verdict: std::result::Result<(), String>,
}

/// Where [`BootReport::save`] put the transcript.
#[derive(Debug)]
pub struct SavedReport {
    pub serial: PathBuf,
    pub command: PathBuf,
    pub stderr: PathBuf,
}

impl BootReport {
    /// Writes `serial.log`, `qemu-command.txt` and `qemu-stderr.log` into
    /// `dir`.
    pub fn save(&self, dir: &Path) -> Result<SavedReport> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let saved = SavedReport {
            serial: dir.join("serial.log"),
            command: dir.join("qemu-command.txt"),
            stderr: dir.join("qemu-stderr.log"),
        };
        fs::write(&saved.serial, &self.serial)
            .with_context(|| format!("writing {}", saved.serial.display()))?;
        fs::write(&saved.command, format!("{}\n", self.command_line))
            .with_context(|| format!("writing {}", saved.command.display()))?;
        fs::write(&saved.stderr, &self.stderr)
            .with_context(|| format!("writing {}", saved.stderr.display()))?;
        Ok(saved)
    }

    /// The last `n` lines of the serial console, for failure messages.
    pub fn serial_tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.serial);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Boots `machine` and waits until every line of `expect` has appeared on
/// the serial console, in order (a console line matches when it contains
/// the expected text), or `timeout` passes, or QEMU exits first, or the
/// console shows one of [`FATAL_MARKERS`]. QEMU is killed if it is still
/// running once the verdict is in (after a grace period for a guest that
/// is powering off). `Err` only if QEMU could not be started.
pub fn boot(machine: &Machine, expect: &[String], timeout: Duration) -> Result<BootReport> {
    let started = Instant::now();
    let mut child = machine
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", machine.command_line()))?;
    let serial = Arc::new(Mutex::new(Vec::new()));
    let (lines_tx, lines) = mpsc::channel();
    let reader = {
        let stdout = child.stdout.take().context("qemu stdout")?;
        let serial = Arc::clone(&serial);
        thread::spawn(move || read_console(stdout, &serial, &lines_tx))
    };
    let stderr = collect(child.stderr.take());
    let mut console_input = child.stdin.take();

    let deadline = started + timeout;
    let mut matched = 0;
    // The last monitor command, sent again until the line after it shows:
    // a guest may not be listening yet (a key press before its keyboard
    // driver is up is lost).
    let mut resend: Option<(&str, Instant)> = None;
    let verdict = loop {
        let Some(expected) = expect.get(matched) else {
            break Ok(());
        };
        // `> COMMAND` is not a line to wait for but a monitor command to
        // send once the lines before it have appeared.
        // `< TEXT` is typed on the serial console (with a carriage return).
        if let Some(text) = expected.strip_prefix("< ") {
            let typed = console_input
                .as_mut()
                .map(|input| input.write_all(format!("{text}\r").as_bytes()));
            match typed {
                Some(Ok(())) => {
                    matched += 1;
                    continue;
                }
                _ => break Err(format!("typing {text:?} on the serial console failed")),
            }
        }
        // `! COMMAND` runs on the host, again every 2 s until it succeeds.
        if let Some(command) = expected.strip_prefix("! ") {
            match host_command(command, deadline, &mut child) {
                Ok(()) => {
                    matched += 1;
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        if let Some(command) = expected.strip_prefix("> ") {
            match send_monitor(machine.monitor.as_deref(), command) {
                Ok(()) => {
                    matched += 1;
                    resend = Some((command, Instant::now() + RESEND));
                    continue;
                }
                Err(e) => break Err(format!("sending {command:?} to the QEMU monitor: {e:#}")),
            }
        }
        let wait_until = resend.map_or(deadline, |(_, at)| at.min(deadline));
        let received = lines.recv_timeout(wait_until.saturating_duration_since(Instant::now()));
        if let (Err(RecvTimeoutError::Timeout), Some((command, _))) = (&received, resend)
            && Instant::now() < deadline
        {
            if let Err(e) = send_monitor(machine.monitor.as_deref(), command) {
                break Err(format!("sending {command:?} to the QEMU monitor: {e:#}"));
            }
            resend = Some((command, Instant::now() + RESEND));
            continue;
        }
        match received {
            Ok(line) => {
                if let Some(marker) = FATAL_MARKERS.iter().find(|m| line.contains(*m)) {
                    break Err(format!(
                        "the console showed {marker:?} while waiting for {expected:?}: {line}"
                    ));
                }
                if line.contains(expected.as_str()) {
                    matched += 1;
                    // Only the line the command was waiting for stops the
                    // resending; any other output (a kernel echo) does not.
                    resend = None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "timed out after {timeout:?} waiting for line {} of {}: {expected:?}",
                    matched + 1,
                    expect.len()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                break Err(format!(
                    "qemu exited ({status}) before line {} of {} appeared: {expected:?}",
                    matched + 1,
                    expect.len()
                ));
            }
        }
    };
    let grace = if verdict.is_ok() {
        EXIT_GRACE
    } else {
        Duration::ZERO
    };
    if wait_timeout(&mut child, grace)?.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reader.join();
    let serial = std::mem::take(&mut *serial.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(BootReport {
        command_line: machine.command_line(),
        serial,
        stderr: join(stderr),
        matched,
        elapsed: started.elapsed(),
        verdict,
    })
}

/// Runs `command` with `sh -c` until it exits 0, at most until `deadline`
/// (each try gets up to 60 s) and while the machine runs; the error carries
/// the last try's output.
fn host_command(
    command: &str,
    deadline: Instant,
    machine: &mut Child,
) -> std::result::Result<(), String> {
    loop {
        if let Ok(Some(status)) = machine.try_wait() {
            return Err(format!(
                "qemu exited ({status}) before host command {command:?} succeeded"
            ));
        }
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(60));
        let output = output_with_timeout(Command::new("sh").args(["-c", command]), limit);
        let failure = match output {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() + Duration::from_secs(2) >= deadline {
            return Err(format!(
                "host command {command:?} never succeeded; last try: {failure}"
            ));
        }
        thread::sleep(Duration::from_secs(2));
    }
}

/// How long to wait for the guest to react to a monitor command before
/// sending it again.
const RESEND: Duration = Duration::from_secs(3);

/// Sends one command to QEMU's human monitor over its Unix socket.
fn send_monitor(socket: Option<&Path>, command: &str) -> Result<()> {
    let socket = socket.context("the machine has no monitor socket")?;
    // QEMU makes the socket a moment after it starts.
    let connect_by = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < connect_by => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
        }
    };
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    // Wait for the prompt, send the command, and stay until the monitor
    // has read it and prompted again: a connection closed before that may
    // lose the command.
    let read_until_prompt = |stream: &mut std::os::unix::net::UnixStream, after: usize| {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&seen);
            if text.matches("(qemu)").count() > after {
                break;
            }
        }
    };
    read_until_prompt(&mut stream, 0);
    stream.write_all(format!("{command}\n").as_bytes())?;
    read_until_prompt(&mut stream, 0);
    Ok(())
}

/// Copies the console into `serial` and hands each complete line (without
/// its `\r\n`) to `lines`. A line still unterminated when the guest stops
/// writing (a prompt such as `login: `) is handed over as it is too, and
/// again once it is complete.
fn read_console(mut stdout: impl Read, serial: &Mutex<Vec<u8>>, lines: &mpsc::Sender<String>) {
    let mut pending = Vec::new();
    // How much of `pending` was last handed over unterminated.
    let mut shown = 0;
    let mut buffer = [0u8; 8192];
    loop {
        let n = match stdout.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(chunk);
        pending.extend_from_slice(chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            // The receiver is gone once the verdict is in; keep copying.
            let _ = lines.send(console_line(&line));
            shown = 0;
        }
        if pending.len() > shown && pending.iter().any(|b| !b.is_ascii_whitespace()) {
            let _ = lines.send(console_line(&pending));
            shown = pending.len();
        }
    }
    if pending.len() > shown {
        let _ = lines.send(console_line(&pending));
    }
}

fn console_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// Writes `text` to standard error in one call, so lines of parallel tests
/// do not interleave.
pub fn note(text: &str) {
    let _ = io::stderr()
        .lock()
        .write_all(format!("{text}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_files_drop_comments_and_blanks() {
        let lines = parse_expect("# header\n\n  BERTH-E2E: done  \nreboot: Power down\n");
        assert_eq!(lines, ["BERTH-E2E: done", "reboot: Power down"]);
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let machine = Machine::new(
            Path::new("qemu-system-x86_64"),
            Accel::Tcg,
            Path::new("out/a-kernel"),
            "console=ttyS0 root=it's",
        )
        .initrd(Path::new("out/a-initrd.img"));
        assert_eq!(
            machine.command_line(),
            "qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic -serial stdio \
             -no-reboot -monitor none -kernel out/a-kernel -initrd out/a-initrd.img \
             -append 'console=ttyS0 root=it'\\''s'"
        );
        let mut rebooting = machine.clone();
        rebooting.allow_reboot = true;
        assert!(!rebooting.command_line().contains("-no-reboot"));
    }

    #[test]
    fn console_lines_are_split_and_kept() {
        let serial = Mutex::new(Vec::new());
        let (tx, rx) = mpsc::channel();
        read_console(&b"one\r\ntwo\nthree"[..], &serial, &tx);
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), ["one", "two", "three"]);
        assert_eq!(serial.into_inner().unwrap(), b"one\r\ntwo\nthree");
    }

    /// A multiboot guest that prints `ok` on the first serial port, then
    /// exits through `isa-debug-exit` or halts for ever.
    fn serial_guest(dir: &Path, then_exit: bool) -> Machine {
        let mut image = PROBE_IMAGE[..32].to_vec();
        image.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        for byte in b"ok\n" {
            image.extend_from_slice(&[0xb0, *byte, 0xee]); // mov al, byte; out dx, al
        }
        if then_exit {
            image.extend_from_slice(&[0xb0, 0x20, 0xe6, 0xf4]); // exit 65
        }
        image.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp back to hlt
        let kernel = dir.join(if then_exit { "exits.bin" } else { "hangs.bin" });
        fs::write(&kernel, image).unwrap();
        let qemu = find_program(QEMU).unwrap();
        let mut machine = Machine::new(&qemu, Accel::Tcg, &kernel, "");
        machine.memory_mib = 64;
        machine.extra_args = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
            .map(OsString::from)
            .to_vec();
        machine
    }

    #[test]
    fn boot_sees_expected_lines() {
        if find_program(QEMU).is_none() {
            assert!(!ci(), "{QEMU} is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let machine = serial_guest(dir.path(), true);
        let report = boot(&machine, &["ok".to_string()], Duration::from_secs(30)).unwrap();
        assert_eq!(report.verdict, Ok(()), "{report:?}");
        assert_eq!(report.matched, 1);
        assert!(String::from_utf8_lossy(&report.serial).contains("ok\n"));

        let saved = report.save(&dir.path().join("report")).unwrap();
        let command = fs::read_to_string(saved.command).unwrap();
        assert!(command.contains("-accel tcg"), "{command}");
    }

    #[test]
    fn boot_times_out_and_kills_qemu() {
        if find_program(QEMU).is_none() {
            assert!(!ci(), "{QEMU} is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let machine = serial_guest(dir.path(), false);
        let expect = ["ok".to_string(), "never".to_string()];
        let started = Instant::now();
        let report = boot(&machine, &expect, Duration::from_secs(3)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(report.matched, 1);
        let reason = report.verdict.unwrap_err();
        assert!(
            reason.contains("timed out") && reason.contains("\"never\""),
            "{reason}"
        );
    }

    #[test]
    fn boot_reports_an_early_exit() {
        if find_program(QEMU).is_none() {
            assert!(!ci(), "{QEMU} is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let machine = serial_guest(dir.path(), true);
        let expect = ["ok".to_string(), "never".to_string()];
        let report = boot(&machine, &expect, Duration::from_secs(30)).unwrap();
        let reason = report.verdict.unwrap_err();
        assert!(reason.contains("qemu exited"), "{reason}");
    }

    /// The probe guest itself works: under TCG it must exit as planned, so a
    /// failed KVM probe means KVM, not the probe.
    #[test]
    fn probe_guest_runs_under_tcg() {
        let Some(qemu) = find_program(QEMU) else {
            assert!(!ci(), "{QEMU} is missing");
            eprintln!("skipped: {QEMU} is not installed");
            return;
        };
        probe(&qemu, Accel::Tcg, Duration::from_secs(30)).unwrap();
    }
}
