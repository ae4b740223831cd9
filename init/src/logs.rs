//! Container output: `/var/log/NAME.log`, rotated at a size cap (one old
//! file, `NAME.log.1`, is kept), and a tail kept in memory so that an
//! onboot container's failure can be shown on the console.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the logs are.
pub const LOG_DIR: &str = "/var/log";
/// The size at which a log is rotated.
pub const DEFAULT_CAP: u64 = 1 << 20;
const TAIL: usize = 8 << 10;

pub struct Log {
    pub name: String,
    path: PathBuf,
    file: Option<File>,
    size: u64,
    cap: u64,
    tail: VecDeque<u8>,
    /// The start of a line not yet echoed, when echoing.
    partial: Vec<u8>,
    echo: bool,
    /// Why the file could not be opened, if it could not.
    problem: Option<String>,
}

impl Log {
    /// Appends to `DIR/NAME.log`; an unwritable file leaves the tail and
    /// the console.
    pub fn open(dir: &Path, name: &str, cap: u64, echo: bool) -> Log {
        let path = dir.join(format!("{name}.log"));
        let opened = OpenOptions::new().create(true).append(true).open(&path);
        let problem = opened
            .as_ref()
            .err()
            .map(|e| format!("{}: {e}", path.display()));
        let file = opened.ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Log {
            name: name.to_string(),
            path,
            file,
            size,
            cap: cap.max(1),
            tail: VecDeque::new(),
            partial: Vec::new(),
            echo,
            problem,
        }
    }

    /// Why output goes to no file, if it does not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Records output; returns the complete lines to echo on the console,
    /// each prefixed with the name.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<String> {
        if self.size + bytes.len() as u64 > self.cap && self.size > 0 {
            self.rotate()?;
        }
        if let Some(file) = &mut self.file {
            file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
        if !self.echo {
            return Ok(String::new());
        }
        self.partial.extend_from_slice(bytes);
        // Output with no newline is echoed in pieces rather than kept.
        if self.partial.len() > TAIL && !self.partial.contains(&b'\n') {
            self.partial.push(b'\n');
        }
        Ok(self.complete_lines())
    }

    fn complete_lines(&mut self) -> String {
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return String::new();
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&lines)
            .lines()
            .map(|l| format!("{}: {l}\n", self.name))
            .collect()
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old = self.path.with_extension("log.1");
        std::fs::rename(&self.path, old)?;
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }

    /// The last lines of output kept in memory.
    pub fn tail(&self) -> String {
        let bytes: Vec<u8> = self.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The last `lines` lines of `DIR/NAME.log`, reaching into the rotated file.
pub fn tail_of(dir: &Path, name: &str, lines: usize) -> io::Result<String> {
    let current = read_log(&dir.join(format!("{name}.log")))?;
    let old = read_log(&dir.join(format!("{name}.log.1"))).unwrap_or_default();
    let all = [old, current].concat();
    let text = String::from_utf8_lossy(&all);
    let kept: Vec<&str> = text.lines().collect();
    let from = kept.len().saturating_sub(lines);
    Ok(kept.iter().skip(from).map(|l| format!("{l}\n")).collect())
}

/// At most this much of the end of a log file is read: twice the cap.
const READ_AT_MOST: u64 = 2 << 20;

/// The end of the log file `path`, which a container with a bind of the
/// log directory may have replaced: a link is not followed, and a FIFO or
/// anything else that is not a regular file is refused without blocking.
fn read_log(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let skip = metadata.len().saturating_sub(READ_AT_MOST);
    file.seek(SeekFrom::Start(skip))?;
    let mut bytes = Vec::new();
    file.take(READ_AT_MOST).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_at_the_cap_and_the_tail_reaches_across() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), "svc", 100, false);
        for i in 0..30 {
            log.write(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(dir.path().join("svc.log")).unwrap();
        let old = std::fs::read_to_string(dir.path().join("svc.log.1")).unwrap();
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 29\n"));
        assert_eq!(
            tail_of(dir.path(), "svc", 3).unwrap(),
            "line 27\nline 28\nline 29\n"
        );
        let across = tail_of(dir.path(), "svc", 15).unwrap();
        assert_eq!(across.lines().count(), 15, "{across}");
        assert!(across.starts_with("line 15\n"), "{across}");
        assert!(log.tail().ends_with("line 29\n"));
        assert!(tail_of(dir.path(), "none", 3).is_err());
    }

    #[test]
    fn a_log_that_is_a_link_or_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "host data\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("link.log")).unwrap();
        let err = tail_of(dir.path(), "link", 3).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        let fifo = dir.path().join("fifo.log");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = tail_of(dir.path(), "fifo", 3).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file");
    }

    #[test]
    fn echo_gives_whole_lines_with_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), "getty", DEFAULT_CAP, true);
        assert_eq!(log.write(b"hel").unwrap(), "");
        assert_eq!(log.write(b"lo\nwor").unwrap(), "getty: hello\n");
        assert_eq!(log.write(b"ld\n\n").unwrap(), "getty: world\ngetty: \n");
        let mut quiet = Log::open(dir.path(), "q", DEFAULT_CAP, false);
        assert_eq!(quiet.write(b"x\n").unwrap(), "");
        assert!(quiet.problem().is_none());
        let long = vec![b'y'; TAIL + 1];
        assert_eq!(
            log.write(&long).unwrap().len(),
            TAIL + 1 + "getty: \n".len()
        );
        let nowhere = Log::open(&dir.path().join("missing"), "n", DEFAULT_CAP, false);
        assert!(nowhere.problem().unwrap().contains("missing/n.log"));
    }
}
