//! `berth serve` as a user runs it: the address it prints, the access log on
//! standard error, and its one-line errors (crates/serve/tests has the
//! server itself).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

/// A running `berth serve`; killed when dropped.
struct Serving {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    fn start(dir: &std::path::Path) -> Serving {
        let mut child = berth()
            .arg("serve")
            .arg(dir)
            .args(["--addr", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Read all of standard error, so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
        let url = first
            .split(" on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        assert!(
            first.starts_with(&format!(
                "berth serve: serving {} on http://127.0.0.1:",
                dir.display()
            )) && first.ends_with("/ (boot script: /boot.ipxe)"),
            "{first}"
        );
        Serving { child, url, lines }
    }

    /// The next access-log line.
    fn logged(&self) -> String {
        self.lines.recv_timeout(Duration::from_secs(10)).unwrap()
    }
}

fn have_curl() -> bool {
    fixtures::program_or_skip("curl", "curl")
}

fn curl(url: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--path-as-is", "-w", "\n%{http_code}", url])
        .output()
        .unwrap()
}

#[test]
fn serves_files_and_logs_every_request() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host-kernel"), b"kernel bytes\n").unwrap();
    std::fs::write(dir.path().join("host-initrd.img"), b"initrd\n").unwrap();
    std::fs::write(dir.path().join("host-cmdline"), b"console=ttyS0\n").unwrap();
    let serving = Serving::start(dir.path());

    let got = curl(&format!("{}/host-kernel", serving.url));
    assert_eq!(got.stdout, b"kernel bytes\n\n200");
    let line = serving.logged();
    assert!(
        line.starts_with("127.0.0.1:") && line.contains(" \"GET /host-kernel HTTP/1.1\" 200 13 "),
        "{line}"
    );

    for target in ["/../etc/passwd", "/%2e%2e/etc/passwd", "/etc/passwd"] {
        let got = curl(&format!("{}{target}", serving.url));
        assert!(got.stdout.ends_with(b"\n404"), "{target}");
        let line = serving.logged();
        assert!(
            line.contains(&format!(" \"GET {target} HTTP/1.1\" 404 ")),
            "{target}: {line}"
        );
    }

    let got = curl(&format!("{}/boot-52-54-00-12-34-56.ipxe", serving.url));
    assert!(
        String::from_utf8_lossy(&got.stdout)
            .contains("kernel host-kernel console=ttyS0 initrd=host-initrd.img\n"),
        "{}",
        String::from_utf8_lossy(&got.stdout)
    );
}

/// berth's exit status and standard error, which must be one line.
fn fails(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn a_port_in_use_is_one_line_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let error = fails(
        berth()
            .arg("serve")
            .arg(dir.path())
            .args(["--addr", &address]),
    );
    assert!(
        error.starts_with(&format!("berth: cannot listen on {address}: ")),
        "{error}"
    );
}

#[test]
fn a_missing_or_plain_file_dir_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let error = fails(
        berth()
            .arg("serve")
            .arg(&missing)
            .args(["--addr", "127.0.0.1:0"]),
    );
    assert!(
        error.starts_with(&format!(
            "berth: cannot read directory {}: ",
            missing.display()
        )),
        "{error}"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let error = fails(
        berth()
            .arg("serve")
            .arg(&file)
            .args(["--addr", "127.0.0.1:0"]),
    );
    assert_eq!(
        error,
        format!("berth: {} is not a directory", file.display())
    );
    let error = fails(berth().arg("serve").arg(dir.path()).args([
        "--addr",
        "127.0.0.1:0",
        "--name",
        "host",
    ]));
    assert_eq!(
        error,
        "berth: no build host to boot in what is served (builds: none)"
    );
}
