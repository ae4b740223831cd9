//! The server on loopback, checked with curl: bytes, ranges, lengths,
//! keep-alive, many clients at once, nothing outside the served set, the
//! access log and the generated boot scripts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serve::{Options, Served, Server};
use sha2::{Digest, Sha256};

/// The access log, shared with the server.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The last line containing `needle`, waiting a little: a line is
    /// written once its response is.
    fn line(&self, needle: &str) -> String {
        for _ in 0..100 {
            if let Some(line) = self.lines().into_iter().rev().find(|l| l.contains(needle)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle}: {:?}", self.lines());
    }
}

/// A server for `served` on a free loopback port, in a thread.
fn start(served: Served, options: Options) -> (String, Log) {
    let log = Log::default();
    let server = Server::bind("127.0.0.1:0", served, options)
        .unwrap()
        .log_to(log.clone());
    let address: SocketAddr = server.local_addr().unwrap();
    std::thread::spawn(move || server.run());
    (format!("http://{address}"), log)
}

fn start_dir(dir: &Path) -> (String, Log) {
    start(Served::from_dir(dir).unwrap(), Options::default())
}

fn have_curl() -> bool {
    fixtures::program_or_skip("curl", "curl")
}

/// What curl got: status, response headers (lower-case names), body.
struct Got {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn curl(args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let output = Command::new("curl")
        .args(["-sS", "--path-as-is", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&output.stdout).parse().unwrap();
    let headers = std::fs::read_to_string(&headers)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    Got {
        status,
        headers,
        body,
    }
}

/// `len` bytes that differ at every offset (a counter hashed in blocks).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while bytes.len() < len {
        let mut hasher = Sha256::new();
        hasher.update([seed]);
        hasher.update(block.to_le_bytes());
        bytes.extend_from_slice(&hasher.finalize());
        block += 1;
    }
    bytes.truncate(len);
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn whole_files_ranges_head_and_unsatisfiable_ranges() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = pattern(3_000_017, 1);
    write(dir.path(), "host-kernel", &kernel);
    write(dir.path(), "empty", b"");
    let (url, log) = start_dir(dir.path());
    let len = kernel.len();

    let got = curl(&[&format!("{url}/host-kernel")]);
    assert_eq!(got.status, 200);
    assert!(got.body == kernel, "the body differs from the file");
    assert_eq!(got.headers["content-length"], len.to_string());
    assert_eq!(got.headers["content-type"], "application/octet-stream");
    assert!(got.headers.contains_key("last-modified"));
    let line = log.line("\"GET /host-kernel HTTP/1.1\"");
    assert!(
        line.starts_with("127.0.0.1:") && line.contains(&format!("\" 200 {len} ")),
        "{line}"
    );

    for (range, start, end) in [
        ("100-199", 100, 200),
        ("2999990-", 2_999_990, len),
        ("-500", len - 500, len),
        ("0-0", 0, 1),
        ("3000000-9999999", 3_000_000, len),
    ] {
        let got = curl(&["-r", range, &format!("{url}/host-kernel")]);
        assert_eq!(got.status, 206, "{range}");
        assert_eq!(
            got.headers["content-range"],
            format!("bytes {start}-{}/{len}", end - 1),
            "{range}"
        );
        assert_eq!(got.headers["content-length"], (end - start).to_string());
        assert!(got.body == kernel[start..end], "{range}: wrong bytes");
    }

    // Several ranges: the whole file.
    let got = curl(&["-r", "0-1,5-6", &format!("{url}/host-kernel")]);
    assert_eq!(got.status, 200);
    assert!(got.body == kernel);

    let got = curl(&["-I", &format!("{url}/host-kernel")]);
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-length"], len.to_string());
    log.line("\"HEAD /host-kernel HTTP/1.1\" 200 0 ");

    for (range, file, size) in [
        (format!("{len}-"), "host-kernel", len),
        ("-0".to_string(), "host-kernel", len),
        ("-5".to_string(), "empty", 0),
    ] {
        let got = curl(&["-r", &range, &format!("{url}/{file}")]);
        assert_eq!(got.status, 416, "{range}");
        assert_eq!(got.headers["content-range"], format!("bytes */{size}"));
    }
    let got = curl(&[&format!("{url}/empty")]);
    assert_eq!((got.status, got.body.len()), (200, 0));
}

#[test]
fn two_requests_share_one_connection() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", b"first\n");
    write(dir.path(), "b", b"second\n");
    let (url, log) = start_dir(dir.path());
    let output = Command::new("curl")
        .args(["-sS", &format!("{url}/a"), &format!("{url}/b")])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"first\nsecond\n");
    // The same client address and port: one connection.
    let client = |line: String| line.split(' ').next().unwrap().to_string();
    assert_eq!(
        client(log.line("\"GET /a HTTP/1.1\" 200 ")),
        client(log.line("\"GET /b HTTP/1.1\" 200 "))
    );
}

#[test]
fn fifty_clients_at_once_each_get_every_byte() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, String)> = (0..5)
        .map(|i| {
            let bytes = pattern(2_000_000 + i * 77_777, i as u8);
            let name = format!("file-{i}");
            write(dir.path(), &name, &bytes);
            (name, format!("{:x}", Sha256::digest(&bytes)))
        })
        .collect();
    let (url, log) = start_dir(dir.path());
    let clients: Vec<_> = (0..50)
        .map(|client| {
            let (name, digest) = files[client % files.len()].clone();
            let url = format!("{url}/{name}");
            std::thread::spawn(move || {
                let output = Command::new("curl").args(["-sS", &url]).output().unwrap();
                assert!(output.status.success(), "client {client}");
                assert_eq!(
                    format!("{:x}", Sha256::digest(&output.stdout)),
                    digest,
                    "client {client}, {url}"
                );
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    // One line per request (written just after its response).
    let count = || log.lines().iter().filter(|l| l.contains("\" 200 ")).count();
    for _ in 0..100 {
        if count() == 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(), 50);
    assert_eq!(log.lines().len(), 50);
}

#[test]
fn nothing_outside_the_served_set_is_served_and_every_attempt_is_logged() {
    if !have_curl() {
        return;
    }
    let top = tempfile::tempdir().unwrap();
    write(top.path(), "secret", b"outside\n");
    let dir = top.path().join("out");
    write(&dir, "host-kernel", b"kernel\n");
    write(&dir, ".hidden", b"hidden\n");
    std::os::unix::fs::symlink(top.path().join("secret"), dir.join("link-out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::os::unix::fs::symlink("host-kernel", dir.join("link-in")).unwrap();
    std::os::unix::fs::symlink(top.path(), dir.join("machines")).unwrap();
    let (url, log) = start_dir(&dir);

    for target in [
        "/../secret",
        "/%2e%2e/secret",
        "/%2E%2E%2Fsecret",
        "/..%2fsecret",
        "/../../../../etc/passwd",
        "/etc/passwd",
        "/passwd",
        "/link-out",
        "/machines/secret",
        "/.hidden",
        "/host-kernel%00",
        "/",
        "/out/host-kernel",
        &format!("/{}", dir.join("host-kernel").display()),
    ] {
        let got = curl(&[&format!("{url}{target}")]);
        assert_eq!(got.status, 404, "{target}");
        log.line(&format!("\"GET {target} HTTP/1.1\" 404 "));
    }
    // A link inside the directory is served; so is an escape of a name.
    assert_eq!(curl(&[&format!("{url}/link-in")]).body, b"kernel\n");
    assert_eq!(curl(&[&format!("{url}/host%2Dkernel")]).body, b"kernel\n");
}

#[test]
fn files_are_opened_when_asked_for() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, _log) = start_dir(dir.path());
    let get = |name: &str| curl(&[&format!("{url}/{name}")]);
    assert_eq!(get("host-kernel").status, 404);
    write(dir.path(), "host-kernel", b"one\n");
    assert_eq!(get("host-kernel").body, b"one\n");
    write(dir.path(), "host-kernel", b"two, rebuilt\n");
    assert_eq!(get("host-kernel").body, b"two, rebuilt\n");
    std::fs::remove_file(dir.path().join("host-kernel")).unwrap();
    assert_eq!(get("host-kernel").status, 404);
}

#[test]
fn other_methods_malformed_and_oversized_requests() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", b"a\n");
    let (url, log) = start_dir(dir.path());
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let got = curl(&["-X", method, &format!("{url}/a")]);
        assert_eq!(got.status, 405, "{method}");
        assert_eq!(got.headers["allow"], "GET, HEAD");
    }
    assert_eq!(
        log.lines()
            .iter()
            .filter(|l| l.contains("/a HTTP/1.1\" 405 "))
            .count(),
        4
    );

    let address = url.trim_start_matches("http://");
    let raw = |request: &[u8]| -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(raw(b"HELLO\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(
        raw(b"GET /a HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400 "),
        "no Host"
    );
    let huge = format!(
        "GET /a HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20_000)
    );
    assert!(raw(huge.as_bytes()).starts_with("HTTP/1.1 431 "));
    // HTTP/1.0 is answered, and its connection closed.
    let old = raw(b"GET /a HTTP/1.0\r\n\r\n");
    assert!(
        old.starts_with("HTTP/1.1 200 ") && old.ends_with("\r\n\r\na\n"),
        "{old}"
    );
    assert!(
        log.lines().iter().any(|l| l.contains(" \"-\" 400 ")),
        "{:?}",
        log.lines()
    );
}

#[test]
fn connections_beyond_the_bound_get_503_and_idle_ones_are_closed() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", b"a\n");
    let options = Options {
        max_connections: 1,
        idle_timeout: Duration::from_millis(700),
        ..Options::default()
    };
    let (url, log) = start(Served::from_dir(dir.path()).unwrap(), options);
    let address = url.trim_start_matches("http://");
    // One connection, kept alive after a request.
    let mut held = TcpStream::connect(address).unwrap();
    held.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut response = [0u8; 1024];
    let mut whole = Vec::new();
    while !whole.ends_with(b"\r\n\r\na\n") {
        let read = held.read(&mut response).unwrap();
        assert!(read > 0, "{}", String::from_utf8_lossy(&whole));
        whole.extend_from_slice(&response[..read]);
    }
    assert!(whole.starts_with(b"HTTP/1.1 200 "));
    let got = curl(&[&format!("{url}/a?second")]);
    assert_eq!(got.status, 503);
    log.line("\"GET /a?second HTTP/1.1\" 503 ");
    // The held connection is closed once idle; then there is room again.
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(held.read(&mut response).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(curl(&[&format!("{url}/a?third")]).status, 200);
}

/// The script a machine with this MAC address gets, through /boot.ipxe.
fn boot_script(url: &str, mac: &str) -> String {
    let chain = curl(&[&format!("{url}/boot.ipxe")]);
    assert_eq!(chain.status, 200);
    assert_eq!(chain.headers["content-type"], "text/plain");
    let chain = String::from_utf8(chain.body).unwrap();
    assert_eq!(
        chain,
        "#!ipxe\n\
         # berth serve: each machine boots the script written for its MAC address\n\
         chain boot-${netX/mac:hexhyp}.ipxe\n"
    );
    // What iPXE requests once it has expanded ${netX/mac:hexhyp}.
    let got = curl(&[&format!("{url}/boot-{mac}.ipxe")]);
    assert_eq!(got.status, 200, "boot-{mac}.ipxe");
    String::from_utf8(got.body).unwrap()
}

fn build(dir: &Path, name: &str, cmdline: &str, uki: bool) {
    write(dir, &format!("{name}-kernel"), b"kernel");
    write(dir, &format!("{name}-initrd.img"), b"initrd");
    write(
        dir,
        &format!("{name}-cmdline"),
        format!("{cmdline}\n").as_bytes(),
    );
    if uki {
        write(dir, &format!("{name}.efi"), b"MZ");
    }
}

#[test]
fn boot_script_of_a_kernel_and_initrd() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "host", "console=ttyS0 quiet", false);
    let (url, _log) = start_dir(dir.path());
    let expected = "#!ipxe\n\
         # berth serve: build host, machine 52-54-00-12-34-56\n\
         kernel host-kernel console=ttyS0 quiet initrd=host-initrd.img\n\
         initrd host-initrd.img\n\
         boot\n";
    assert_eq!(boot_script(&url, "52-54-00-12-34-56"), expected);
    // An iPXE that could not expand the address gets the same build.
    let got = curl(&[&format!("{url}/boot-.ipxe")]);
    assert!(
        String::from_utf8(got.body)
            .unwrap()
            .contains("kernel host-kernel console=ttyS0 quiet")
    );
    assert_eq!(curl(&[&format!("{url}/boot-52-54-00.ipxe")]).status, 404);
    assert_eq!(
        curl(&[&format!("{url}/host-cmdline")]).headers["content-type"],
        "text/plain"
    );
}

#[test]
fn boot_script_of_a_build_with_a_uki() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "host", "console=ttyS0", true);
    let (url, _log) = start_dir(dir.path());
    assert_eq!(
        boot_script(&url, "52-54-00-12-34-56"),
        "#!ipxe\n\
         # berth serve: build host, machine 52-54-00-12-34-56\n\
         iseq ${platform} efi && goto efi || goto bios\n\
         :bios\n\
         kernel host-kernel console=ttyS0 initrd=host-initrd.img\n\
         initrd host-initrd.img\n\
         boot\n\
         :efi\n\
         chain host.efi console=ttyS0\n"
    );

    // A UKI alone boots under UEFI only.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "lone.efi", b"MZ");
    let (url, _log) = start_dir(dir.path());
    assert_eq!(
        boot_script(&url, "52-54-00-12-34-56"),
        "#!ipxe\n\
         # berth serve: build lone, machine 52-54-00-12-34-56\n\
         iseq ${platform} efi && goto efi || goto bios\n\
         :bios\n\
         echo berth serve: build lone is a UKI alone (lone.efi), which boots under UEFI only\n\
         shell\n\
         :efi\n\
         chain lone.efi\n"
    );
}

#[test]
fn machines_override_the_command_line_and_the_build() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "host", "console=ttyS0", true);
    build(dir.path(), "rescue", "console=ttyS0 rescue", false);
    // Colons or hyphens, any case.
    write(
        dir.path(),
        "machines/52:54:00:AB:CD:EF/cmdline",
        b"berth.debug=1\n  ip=dhcp\n",
    );
    write(dir.path(), "machines/52-54-00-12-34-56/build", b"rescue\n");
    write(dir.path(), "machines/52-54-00-00-00-01/build", b"gone\n");
    let served = Served::from_dir(dir.path()).unwrap();
    let options = Options {
        build: Some("host".into()),
        ..Options::default()
    };
    let (url, _log) = start(served, options);
    assert_eq!(
        boot_script(&url, "52-54-00-ab-cd-ef"),
        "#!ipxe\n\
         # berth serve: build host, machine 52-54-00-ab-cd-ef\n\
         iseq ${platform} efi && goto efi || goto bios\n\
         :bios\n\
         kernel host-kernel console=ttyS0 berth.debug=1 ip=dhcp initrd=host-initrd.img\n\
         initrd host-initrd.img\n\
         boot\n\
         :efi\n\
         chain host.efi console=ttyS0 berth.debug=1 ip=dhcp\n"
    );
    assert_eq!(
        boot_script(&url, "52-54-00-12-34-56"),
        "#!ipxe\n\
         # berth serve: build rescue, machine 52-54-00-12-34-56\n\
         kernel rescue-kernel console=ttyS0 rescue initrd=rescue-initrd.img\n\
         initrd rescue-initrd.img\n\
         boot\n"
    );
    assert_eq!(
        boot_script(&url, "52-54-00-00-00-01"),
        "#!ipxe\n\
         # berth serve, machine 52-54-00-00-00-01\n\
         echo berth serve: machines/52-54-00-00-00-01/build names gone, which is not served (builds: host, rescue)\n\
         shell\n"
    );
    // Any other machine boots the default build as it is.
    assert!(boot_script(&url, "52-54-00-99-99-99").contains("\nchain host.efi console=ttyS0\n"));
    // The overrides are served too, under their own names.
    assert_eq!(
        curl(&[&format!("{url}/machines/52-54-00-12-34-56/build")]).body,
        b"rescue\n"
    );
}

#[test]
fn several_builds_and_no_default_say_so_in_the_script() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "a", "", false);
    build(dir.path(), "b", "", false);
    let (url, _log) = start_dir(dir.path());
    assert_eq!(
        boot_script(&url, "52-54-00-12-34-56"),
        "#!ipxe\n\
         # berth serve, machine 52-54-00-12-34-56\n\
         echo berth serve: several builds are served (a, b): start berth serve with --name, or write machines/MAC/build\n\
         shell\n"
    );
    // A hand-written boot.ipxe in the directory wins over the generated one.
    write(dir.path(), "boot.ipxe", b"#!ipxe\nchain a-kernel\n");
    assert_eq!(
        curl(&[&format!("{url}/boot.ipxe")]).body,
        b"#!ipxe\nchain a-kernel\n"
    );
    // --name that names no build is refused when the server starts.
    let error = Server::bind(
        "127.0.0.1:0",
        Served::from_dir(dir.path()).unwrap(),
        Options {
            build: Some("c".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no build c to boot in what is served (builds: a, b)"
    );
}

#[test]
fn served_files_by_name() {
    if !have_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blob = write(dir.path(), "sha256-0123", b"blob bytes\n");
    write(dir.path(), "other", b"not listed\n");
    let files = BTreeMap::from([("host-kernel".to_string(), blob)]);
    let (url, _log) = start(Served::from_files(files), Options::default());
    assert_eq!(curl(&[&format!("{url}/host-kernel")]).body, b"blob bytes\n");
    assert_eq!(curl(&[&format!("{url}/sha256-0123")]).status, 404);
    assert_eq!(curl(&[&format!("{url}/other")]).status, 404);
}
