//! The one place in the builder that runs external programs: apt-cache,
//! apt-config and apt-get (the Debian archive), dpkg-deb (unpacking
//! packages) and cargo (static binaries).
//!
//! A program either gives its output whole ([`output`], for the small
//! outputs of apt and cargo) or as a stream ([`stream`], for a package's
//! files, which are never held whole). Either way a failure is a
//! [`ToolError`] that names the program, its arguments and what it said on
//! stderr, so the user can run the same command by hand.
//!
//! What the commands are, and what their output means, is left to the
//! callers (`pkg::debian`, `pkg`).

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {command} (is it installed?)")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("reading the output of {command}")]
    Read {
        command: String,
        #[source]
        source: io::Error,
    },
}

/// `program arg arg…`, as the user would type it.
fn shown(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn failed(command: &Command, status: ExitStatus, stderr: &[u8]) -> ToolError {
    ToolError::Failed {
        command: shown(command),
        status,
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

/// Runs `command` to its end; its standard output, or an error naming it.
pub fn output(command: &mut Command) -> Result<Vec<u8>, ToolError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Start {
            command: shown(command),
            source,
        })?;
    if !output.status.success() {
        return Err(failed(command, output.status, &output.stderr));
    }
    Ok(output.stdout)
}

/// [`output`] as text.
pub fn text(command: &mut Command) -> Result<String, ToolError> {
    output(command).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Starts `command` with its standard output as a stream; read it, then
/// call [`Stream::finish`], which says whether the program succeeded.
pub fn stream(mut command: Command) -> Result<Stream, ToolError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Start {
            command: shown(&command),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // Read on the side, so a program that writes much on stderr cannot
    // block while its stdout is being read.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    Ok(Stream {
        command,
        child: Some(child),
        stdout,
        stderr: Some(stderr),
    })
}

/// The standard output of a running program.
pub struct Stream {
    command: Command,
    child: Option<Child>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Stream {
    /// Reads what is left of the output (a tar reader stops at the end
    /// marker, before the padding), waits for the program and says whether
    /// it succeeded.
    pub fn finish(mut self) -> Result<(), ToolError> {
        let read = |source| ToolError::Read {
            command: shown(&self.command),
            source,
        };
        io::copy(&mut self.stdout, &mut io::sink()).map_err(read)?;
        let status = self
            .child
            .take()
            .expect("waited for once")
            .wait()
            .map_err(read)?;
        let stderr = self
            .stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(failed(&self.command, status, &stderr));
        }
        Ok(())
    }
}

impl Drop for Stream {
    /// A stream given up early (its reader failed) stops the program, so
    /// no process is left behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_program_its_arguments_and_its_stderr() {
        let error = text(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "sh -c echo oops >&2; exit 3 failed (exit status: 3): oops"
        );
        let missing = text(&mut Command::new("berth-no-such-program")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot run berth-no-such-program (is it installed?)"
        );
    }

    #[test]
    fn a_stream_is_read_then_judged() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf hello; echo bad >&2; exit 1"]);
        let mut failing = stream(command).unwrap();
        let mut out = String::new();
        failing.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");
        let error = failing.finish().unwrap_err();
        assert!(error.to_string().ends_with("failed (exit status: 1): bad"));
        let mut command = Command::new("sh");
        command.args(["-c", "printf ok"]);
        stream(command).unwrap().finish().unwrap();
    }
}
