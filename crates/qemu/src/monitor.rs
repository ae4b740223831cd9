//! QEMU's human monitor, over the Unix socket a [`crate::Machine`] was given
//! ([`crate::Machine::monitor`]): one command at a time, such as
//! `system_powerdown` (the ACPI power button), `sendkey ctrl-alt-delete` or
//! `set_link NAME off`.
//!
//! What the guest does about a command, and whether to send it again, is
//! the caller's business; so is the reply, which is not read.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// How long QEMU may take to create the socket once it has been started.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the monitor's prompt.
const PROMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `command` to the monitor listening on `socket`, and returns once
/// the monitor has read it.
pub fn send(socket: &Path, command: &str) -> Result<(), Error> {
    send_within(socket, command, CONNECT_TIMEOUT)
}

fn send_within(socket: &Path, command: &str, connect_timeout: Duration) -> Result<(), Error> {
    let connect_by = Instant::now() + connect_timeout;
    let connect_error = |source| Error::MonitorConnect {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < connect_by => thread::sleep(Duration::from_millis(100)),
            Err(source) => return Err(connect_error(source)),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(connect_error)?;
    // Wait for the prompt, send the command, and stay until the monitor
    // has read it and prompted again: a connection closed before that may
    // lose the command.
    read_until_prompt(&mut stream);
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|source| Error::MonitorSend {
            socket: socket.to_path_buf(),
            command: command.to_string(),
            source,
        })?;
    read_until_prompt(&mut stream);
    Ok(())
}

/// Reads until the `(qemu)` prompt, the end of the stream or
/// [`PROMPT_TIMEOUT`], whichever comes first.
fn read_until_prompt(stream: &mut impl Read) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    let deadline = Instant::now() + PROMPT_TIMEOUT;
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains("(qemu)") {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A stand-in for QEMU's monitor: prompts, reads one line, prompts again.
    #[test]
    fn a_command_is_sent_after_the_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("monitor.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let monitor = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"QEMU 7.2.0 monitor\r\n(qemu) ").unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8];
            while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            stream.write_all(b"\r\n(qemu) ").unwrap();
            String::from_utf8(line).unwrap()
        });
        send(&socket, "system_powerdown").unwrap();
        assert_eq!(monitor.join().unwrap(), "system_powerdown");
    }

    #[test]
    fn no_socket_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let error = send_within(&socket, "quit", Duration::from_millis(300)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("connecting to the QEMU monitor at {}", socket.display())
        );
    }
}
