//! The boot tests' harness: boots a [`qemu::Machine`] and watches its
//! serial console for expected lines with a deadline, typing on the
//! console, running host commands and sending monitor commands along the
//! way, and keeps the transcript of each boot. Which accelerator the tests
//! use is decided here too (`BERTH_QEMU_ACCEL`, else [`qemu::choose_accel`]).
//!
//! Launching QEMU (the machine description and its command line, the KVM
//! probe, the monitor protocol) is the `qemu` crate's; what to build and
//! what to expect is the test binaries' business (`tests/boot.rs` discovers
//! its cases under `cases/`); this library knows nothing about berth's
//! YAML. Looking inside an initrd is in [`initrd`].

pub mod initrd;
pub mod media;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use qemu::process::Capture;
use qemu::{Accel, Machine, output_with_timeout, wait_timeout};

/// How long a boot may take to print every expected line.
pub const TCG_TIMEOUT: Duration = Duration::from_secs(120);
pub const KVM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU gets to exit by itself once every line has been seen.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Whether this is a CI run (`CI=true`), where a skipped test is a failure:
/// a runner that lacks QEMU must not turn the suite green.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// How long a small kernel+initrd boot may take with `accel`.
pub fn boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => KVM_TIMEOUT,
        Accel::Tcg => TCG_TIMEOUT,
    }
}

/// The accelerator to boot `kernel` with: `BERTH_QEMU_ACCEL=tcg` or `=kvm`
/// if set, otherwise [`qemu::choose_accel`]'s choice, which probes KVM with
/// a trivial guest and then with `kernel` (KVM hangs Linux on some hosts).
/// The choice and its reason are said on standard error.
pub fn accel(qemu: &Path, kernel: &Path) -> Accel {
    if let Ok(Ok(accel)) = std::env::var("BERTH_QEMU_ACCEL").map(|value| value.parse()) {
        note(&format!(
            "qemu-tests: using {accel}, as BERTH_QEMU_ACCEL says"
        ));
        return accel;
    }
    let choice = qemu::choose_accel(qemu, Some(kernel));
    note(&format!(
        "qemu-tests: using {}: {}",
        choice.accel, choice.reason
    ));
    choice.accel
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

/// How a boot is started: a [`Machine`] launched by the harness itself, or
/// `berth run qemu`, which launches the same kind of machine.
#[derive(Debug)]
pub struct Launch {
    command: Command,
    command_line: String,
    monitor: Option<PathBuf>,
    berth_run: bool,
    /// `berth run` on a terminal of its own (`script`): `^C` is the Ctrl-C
    /// byte typed on it, which the terminal turns into SIGINT.
    terminal: bool,
}

impl Launch {
    pub fn machine(machine: &Machine) -> Launch {
        Launch {
            command: machine.command(),
            command_line: machine.command_line(),
            monitor: machine.monitor.clone(),
            berth_run: false,
            terminal: false,
        }
    }

    /// `berth run qemu ARGS…`: its console is QEMU's, `^C` in an expect
    /// file is a Ctrl-C to it, and it must end with status 0 (the machine
    /// powered off).
    pub fn berth_run(mut command: Command) -> Launch {
        command.env_remove("RUST_BACKTRACE");
        Launch {
            command_line: qemu::shell_line(&command),
            command,
            monitor: None,
            berth_run: true,
            terminal: false,
        }
    }

    /// `berth run qemu` as [`Launch::berth_run`], on a terminal: util-linux's
    /// `script` runs it on a new pseudo-terminal whose input is what the
    /// harness types, so berth sees a terminal as a user's shell gives it.
    pub fn berth_run_on_terminal(command: &Command) -> Launch {
        // `exec`: the shell `script` starts (dash does not exec a lone
        // command) would get the Ctrl-C too and die of it after berth
        // exited, so its status, not berth's, would be the one returned.
        let inner = format!("exec {}", qemu::shell_line(command));
        let mut outer = Command::new("script");
        outer.args([
            "--quiet",
            "--flush",
            "--return",
            "--command",
            &inner,
            "/dev/null",
        ]);
        // The shell line carries the program and its arguments; where it
        // runs is the command's too (a case's run-args are relative to it).
        if let Some(dir) = command.get_current_dir() {
            outer.current_dir(dir);
        }
        Launch {
            terminal: true,
            ..Launch::berth_run(outer)
        }
    }
}

/// Boots `machine` (see [`boot_launch`]).
pub fn boot(machine: &Machine, expect: &[String], timeout: Duration) -> Result<BootReport> {
    boot_launch(Launch::machine(machine), expect, timeout)
}

/// Boots and waits until every line of `expect` has appeared on the serial
/// console, in order (a console line matches when it contains the
/// expected text), or `timeout` passes, or QEMU exits first, or the
/// console shows one of [`FATAL_MARKERS`]. QEMU is stopped if it is still
/// running once the verdict is in (after a grace period for a guest that
/// is powering off). `Err` only if QEMU could not be started.
///
/// `^C` in `expect` presses the machine's power button as its user
/// would: a Ctrl-C (SIGINT) to `berth run qemu`, `system_powerdown` on
/// the monitor of a machine the harness launched itself.
pub fn boot_launch(launch: Launch, expect: &[String], timeout: Duration) -> Result<BootReport> {
    let started = Instant::now();
    let Launch {
        mut command,
        command_line,
        monitor,
        berth_run,
        terminal,
    } = launch;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command_line}"))?;
    let serial = Arc::new(Mutex::new(Vec::new()));
    let (lines_tx, lines) = mpsc::channel();
    let reader = {
        let stdout = child.stdout.take().context("qemu stdout")?;
        let serial = Arc::clone(&serial);
        thread::spawn(move || read_console(stdout, &serial, &lines_tx))
    };
    let stderr = Capture::start(child.stderr.take());
    let mut console_input = child.stdin.take();

    let deadline = started + timeout;
    let mut matched = 0;
    let mut once = OnceALine::default();
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
        if expected == "^C" && terminal {
            let typed = console_input.as_mut().map(|input| input.write_all(b"\x03"));
            match typed {
                Some(Ok(())) => {
                    matched += 1;
                    continue;
                }
                _ => break Err("typing Ctrl-C on the terminal failed".to_string()),
            }
        }
        if expected == "^C" && berth_run {
            match interrupt(&child) {
                Ok(()) => {
                    matched += 1;
                    continue;
                }
                Err(e) => break Err(format!("sending Ctrl-C to berth run: {e}")),
            }
        }
        let monitor_command = match expected.as_str() {
            "^C" => Some("system_powerdown"),
            other => other.strip_prefix("> "),
        };
        if let Some(command) = monitor_command {
            match send_monitor(monitor.as_deref(), command) {
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
            if let Err(e) = send_monitor(monitor.as_deref(), command) {
                break Err(format!("sending {command:?} to the QEMU monitor: {e:#}"));
            }
            resend = Some((command, Instant::now() + RESEND));
            continue;
        }
        match received {
            Ok(ConsoleLine {
                text: line,
                finished,
                continues,
            }) => {
                if let Some(marker) = FATAL_MARKERS.iter().find(|m| line.contains(*m)) {
                    break Err(format!(
                        "the console showed {marker:?} while waiting for {expected:?}: {line}"
                    ));
                }
                if once.matches(&line, finished, continues, expected) {
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
    let mut verdict = verdict;
    match wait_timeout(&mut child, grace)? {
        Some(status) if berth_run && verdict.is_ok() && !status.success() => {
            verdict = Err(format!(
                "berth run qemu ended with {status}, not 0 (powered off)"
            ));
        }
        Some(_) => {}
        None => {
            if berth_run {
                // berth stops its QEMU on SIGTERM; a SIGKILL would leave
                // QEMU running in its own process group.
                let _ = signal(&child, "TERM");
                if wait_timeout(&mut child, Duration::from_secs(10))?.is_none() {
                    let _ = child.kill();
                }
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
            if verdict.is_ok() && berth_run {
                verdict = Err(format!("berth run qemu did not end within {grace:?}"));
            }
        }
    }
    let _ = reader.join();
    let serial = std::mem::take(&mut *serial.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(BootReport {
        command_line,
        serial,
        stderr: stderr.bytes(),
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
            Err(e) => format!("{:#}", anyhow::Error::new(e)),
        };
        if Instant::now() + Duration::from_secs(2) >= deadline {
            return Err(format!(
                "host command {command:?} never succeeded; last try: {failure}"
            ));
        }
        thread::sleep(Duration::from_secs(2));
    }
}

/// A Ctrl-C to `child`, as a terminal sends it.
fn interrupt(child: &Child) -> std::result::Result<(), String> {
    signal(child, "INT")
}

/// Sends `child` a signal with kill(1).
fn signal(child: &Child, name: &str) -> std::result::Result<(), String> {
    let output = output_with_timeout(
        Command::new("kill").args([format!("-{name}"), child.id().to_string()]),
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// How long to wait for the guest to react to a monitor command before
/// sending it again.
const RESEND: Duration = Duration::from_secs(3);

/// Sends one command to the machine's QEMU monitor.
fn send_monitor(socket: Option<&Path>, command: &str) -> Result<()> {
    let socket = socket.context("the machine has no monitor socket")?;
    Ok(qemu::monitor::send(socket, command)?)
}

/// One line of the console as the reader hands it over.
#[derive(Debug, PartialEq, Eq)]
struct ConsoleLine {
    text: String,
    /// It ended with a newline; otherwise the guest stopped writing in the
    /// middle of it (a prompt such as `login: `).
    finished: bool,
    /// An unfinished start of this same line was handed over before.
    continues: bool,
}

/// A console line matches one expected line at most, however many reads
/// it took to arrive: once its unfinished start has matched, the rest of
/// it is not matched again.
#[derive(Default)]
struct OnceALine {
    /// The last line that matched was unfinished.
    unfinished_matched: bool,
}

impl OnceALine {
    fn matches(&mut self, text: &str, finished: bool, continues: bool, expected: &str) -> bool {
        let already = continues && self.unfinished_matched;
        self.unfinished_matched = already && !finished;
        if already || !text.contains(expected) {
            return false;
        }
        self.unfinished_matched = !finished;
        true
    }
}

/// Copies the console into `serial` and hands each line (without its
/// `\r\n`) to `lines`. A line still unfinished when the guest stops
/// writing is handed over as it is too, and again once it grows, marked
/// as continuing the earlier one: a console line is one line however many
/// reads it took to arrive.
fn read_console(mut stdout: impl Read, serial: &Mutex<Vec<u8>>, lines: &mpsc::Sender<ConsoleLine>) {
    let mut pending = Vec::new();
    // How much of `pending` was last handed over unfinished.
    let mut shown = 0;
    let mut buffer = [0u8; 8192];
    let send = |bytes: &[u8], finished: bool, continues: bool| {
        // The receiver is gone once the verdict is in; keep copying.
        let _ = lines.send(ConsoleLine {
            text: String::from_utf8_lossy(bytes)
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            finished,
            continues,
        });
    };
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
            send(&line, true, shown > 0);
            shown = 0;
        }
        if pending.len() > shown && pending.iter().any(|b| !b.is_ascii_whitespace()) {
            send(&pending, false, shown > 0);
            shown = pending.len();
        }
    }
    if pending.len() > shown {
        send(&pending, true, shown > 0);
    }
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
    fn console_lines_are_split_and_kept() {
        let serial = Mutex::new(Vec::new());
        let (tx, rx) = mpsc::channel();
        read_console(&b"one\r\ntwo\nthree"[..], &serial, &tx);
        drop(tx);
        let texts: Vec<String> = rx.iter().map(|line| line.text).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert_eq!(serial.into_inner().unwrap(), b"one\r\ntwo\nthree");
    }

    /// Hands out `chunks` one read at a time, as a serial port does.
    struct Chunks(Vec<&'static [u8]>);

    impl Read for Chunks {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let chunk = self.0.remove(0);
            buffer[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn a_line_in_several_reads_is_one_line_matched_once() {
        let serial = Mutex::new(Vec::new());
        let (tx, rx) = mpsc::channel();
        let reads = vec![
            &b"metadata: nocloud: "[..],
            b"no meta-data\r\nlogin: ",
            b"root\r\n",
        ];
        read_console(Chunks(reads), &serial, &tx);
        drop(tx);
        let lines: Vec<ConsoleLine> = rx.iter().collect();
        let line = |text: &str, finished, continues| ConsoleLine {
            text: text.to_string(),
            finished,
            continues,
        };
        assert_eq!(
            lines,
            [
                line("metadata: nocloud: ", false, false),
                line("metadata: nocloud: no meta-data", true, true),
                line("login: ", false, false),
                line("login: root", true, true),
            ]
        );
        let count = |expected: &[&str]| {
            let mut once = OnceALine::default();
            let mut matched = 0;
            for l in &lines {
                if let Some(wanted) = expected.get(matched)
                    && once.matches(&l.text, l.finished, l.continues, wanted)
                {
                    matched += 1;
                }
            }
            matched
        };
        // Two expected lines cannot both be found in one console line...
        assert_eq!(count(&["nocloud", "meta-data"]), 1);
        assert_eq!(count(&["nocloud", "meta-data", "login:"]), 1);
        // ...but the whole line matches once it has arrived, and the next
        // line is a line of its own.
        assert_eq!(count(&["no meta-data", "login:", "root"]), 2);
        assert_eq!(count(&["nocloud", "login:"]), 2);
        assert_eq!(count(&["login: root"]), 1);
    }

    /// A multiboot guest that prints `ok` on the first serial port, then
    /// exits through `isa-debug-exit` or halts for ever.
    fn serial_guest(dir: &Path, then_exit: bool) -> Machine {
        let kernel = dir.join(if then_exit { "exits.bin" } else { "hangs.bin" });
        fs::write(&kernel, qemu::guest::image(b"ok\n", then_exit)).unwrap();
        let qemu = qemu::locate().unwrap();
        Machine {
            memory_mib: 64,
            debug_exit: true,
            ..Machine::new(&qemu, Accel::Tcg).kernel(qemu::Kernel::new(&kernel, ""))
        }
    }

    #[test]
    fn boot_sees_expected_lines() {
        if let Err(error) = qemu::locate() {
            assert!(!ci(), "{error}");
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
        if let Err(error) = qemu::locate() {
            assert!(!ci(), "{error}");
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
        if let Err(error) = qemu::locate() {
            assert!(!ci(), "{error}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let machine = serial_guest(dir.path(), true);
        let expect = ["ok".to_string(), "never".to_string()];
        let report = boot(&machine, &expect, Duration::from_secs(30)).unwrap();
        let reason = report.verdict.unwrap_err();
        assert!(reason.contains("qemu exited"), "{reason}");
    }
}
