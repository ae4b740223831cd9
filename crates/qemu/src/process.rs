//! Running QEMU and the programs around it (`qemu-img`, `ssh`, a build)
//! with deadlines: a guest that hangs must not hang its caller. Also how a
//! command is shown: as one line a shell would run the same way, so a
//! failed boot can be rerun by hand.
//!
//! What the programs are for is the caller's business.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

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
pub fn output_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output, Error> {
    let shown = shell_line(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Start {
            command: shown.clone(),
            source,
        })?;
    let stdout = Capture::start(child.stdout.take());
    let stderr = Capture::start(child.stderr.take());
    let status = wait_timeout(&mut child, timeout).map_err(|source| Error::Wait {
        command: shown.clone(),
        source,
    })?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Timeout {
            command: shown,
            timeout,
        });
    };
    Ok(Output {
        status,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
    })
}

/// One output stream of a child, read to its end on a thread of its own so
/// that a full pipe never stops the child.
#[derive(Debug)]
pub struct Capture(Option<thread::JoinHandle<Vec<u8>>>);

impl Capture {
    /// Starts reading `stream`; `None` (a stream that was not piped) reads
    /// as empty.
    pub fn start<R: Read + Send + 'static>(stream: Option<R>) -> Capture {
        Capture(stream.map(|mut stream| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                bytes
            })
        }))
    }

    /// Everything the stream carried, once the child has closed it.
    pub fn bytes(self) -> Vec<u8> {
        self.0
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_a_shell_needs_it() {
        for (word, shown) in [
            ("plain-word_1.2/x=y:z,w+v@u%", "plain-word_1.2/x=y:z,w+v@u%"),
            ("", "''"),
            ("two words", "'two words'"),
            ("it's", r#"'it'\''s'"#),
            ("$HOME", "'$HOME'"),
        ] {
            assert_eq!(shell_quote(OsStr::new(word)), shown, "{word:?}");
        }
    }

    #[test]
    fn output_is_captured() {
        let output = output_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let started = Instant::now();
        let error =
            output_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200))
                .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(error.to_string(), "sleep 30 did not finish in 200ms");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let error = output_with_timeout(
            &mut Command::new("berth-no-such-program"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(error, Error::Start { .. }), "{error:?}");
        assert_eq!(error.to_string(), "starting berth-no-such-program");
        assert_eq!(find_program("berth-no-such-program"), None);
        assert!(find_program("sh").is_some());
    }
}
