use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use super::*;
use crate::test_server::Server;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn urls() {
    let url = Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("169.254.169.254", 80, "/latest/meta-data/")
    );
    let url = Url::parse("http://[fd00:ec2::254]/latest").unwrap();
    assert_eq!((url.host.as_str(), url.port), ("[fd00:ec2::254]", 80));
    assert_eq!(
        url.addresses().unwrap()[0].to_string(),
        "[fd00:ec2::254]:80"
    );
    let url = Url::parse("http://[::1]:8080").unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("[::1]", 8080, "/")
    );
    assert_eq!(url.host_header(), "[::1]:8080");
    for (bad, why) in [
        (
            "https://seed.example/",
            "https is not supported (metadata is fetched over plain http)",
        ),
        ("ftp://x/", "not an http:// URL"),
        ("http://[fd00::1/x", "unclosed '[' in the host"),
        ("http://[nope]/", "\"nope\" is not an IPv6 address"),
        ("http://host:99999/", "bad port \":99999\""),
        (
            "http://user@host/",
            "user information in URLs is not supported",
        ),
        ("http:///path", "bad host"),
        ("http://h/a b", "spaces or control characters in the path"),
    ] {
        assert_eq!(Url::parse(bad).unwrap_err(), why, "{bad}");
    }
    let error = get("https://seed.example/meta-data", SECOND).unwrap_err();
    assert_eq!(
        error.to_string(),
        "https://seed.example/meta-data: https is not supported (metadata is fetched over plain http)"
    );
}

#[test]
fn responses_from_bytes() {
    let read = |bytes: &[u8]| read_response(&mut &bytes[..], false);
    assert_eq!(
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more").unwrap(),
        Response {
            status: 200,
            body: b"hello".to_vec()
        }
    );
    assert_eq!(
        read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\n").unwrap().body,
        b"hello!"
    );
    assert_eq!(
        read(b"HTTP/1.0 404 Not Found\r\n\r\nclose-delimited").unwrap(),
        Response {
            status: 404,
            body: b"close-delimited".to_vec()
        }
    );
    for (bytes, why) in [
        (
            &b"SSH-2.0-OpenSSH\r\n"[..],
            "not an HTTP/1 response: \"SSH-2.0-OpenSSH\"",
        ),
        (b"HTTP/1.1 abc\r\n\r\n", "bad status line \"HTTP/1.1 abc\""),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "connection closed after 5 of 10 body bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "bad Content-Length \"x\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            "body of 99999999999 bytes is larger than 16777216",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "unsupported Transfer-Encoding \"gzip\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "bad chunk size \"zz\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n",
            "body larger than 16777216 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nffffffffffffffff\r\n",
            "body larger than 16777216 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "bad header line \"no colon\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\n",
            "connection closed in the middle of the response",
        ),
        (b"", "connection closed in the middle of the response"),
    ] {
        assert_eq!(read(bytes).unwrap_err(), why);
    }
    let huge = [
        b"HTTP/1.1 200 OK\r\nX: ".to_vec(),
        vec![b'a'; MAX_HEAD + 10],
    ]
    .concat();
    assert!(read(&huge).unwrap_err().contains("longer than"));
}

/// `python3 -m http.server` on 127.0.0.1, serving `dir`, or a visible skip.
fn python_server(dir: &Path) -> Option<(Child, u16)> {
    let child = Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            crate::test_server::skip(&format!("python3: {e}"));
            return None;
        }
    };
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split(" port ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|p| p.parse().ok());
    Some((child, port.unwrap_or_else(|| panic!("no port in {line:?}"))))
}

use std::path::Path;

#[test]
fn plain_gets_from_pythons_http_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta-data"), "instance-id: iid-1\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("user-data"), &big).unwrap();
    let Some((mut child, port)) = python_server(dir.path()) else {
        return;
    };
    let base = format!("http://127.0.0.1:{port}");
    let got = get(&format!("{base}/meta-data"), 5 * SECOND);
    let big_got = get(&format!("{base}/user-data"), 5 * SECOND);
    let missing = get(&format!("{base}/vendor-data"), 5 * SECOND);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        got.unwrap(),
        Response {
            status: 200,
            body: b"instance-id: iid-1\n".to_vec()
        }
    );
    assert_eq!(big_got.unwrap().body, big);
    assert_eq!(missing.unwrap().status, 404);
}

#[test]
fn chunked_bodies_and_headers_sent() {
    let server = Server::start(|request| {
        let body = format!(
            "{} {}",
            request.method,
            request.header("x-test").unwrap_or("-")
        );
        Some(format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n", &body[..3], body.len() - 3, &body[3..]).into_bytes())
    });
    let response = Request {
        method: "PUT",
        url: &format!("{}/x", server.url()),
        headers: &[("X-Test", "yes")],
        timeout: 5 * SECOND,
    }
    .send()
    .unwrap();
    assert_eq!(
        response,
        Response {
            status: 200,
            body: b"PUT yes".to_vec()
        }
    );
    let request = &server.requests()[0];
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{}", server.port).as_str())
    );
    assert_eq!(request.header("content-length"), Some("0"));
    let injected = Request {
        method: "GET",
        url: &server.url(),
        headers: &[("X", "a\r\nEvil: 1")],
        timeout: SECOND,
    }
    .send()
    .unwrap_err();
    assert!(injected.reason.contains("line break"), "{injected}");
}

#[test]
fn a_server_that_never_answers_times_out_in_time() {
    let server = Server::start(|_| None);
    let started = std::time::Instant::now();
    let error = get(
        &format!("{}/latest", server.url()),
        Duration::from_millis(500),
    )
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < 2 * SECOND,
        "{took:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("{}/latest: reading the response: timed out", server.url())
    );
    // A server that answers too late is cut by the same deadline.
    let late = Server::start(|_| {
        let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
        out.extend(std::iter::repeat_n(b"X-A: b\r\n".to_vec(), 10).flatten());
        std::thread::sleep(Duration::from_secs(3));
        Some(out)
    });
    let started = std::time::Instant::now();
    assert!(get(&late.url(), Duration::from_millis(300)).is_err());
    assert!(started.elapsed() < 2 * SECOND);
}

#[test]
fn nothing_listening_is_an_error_naming_the_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = get(&format!("http://127.0.0.1:{port}/"), SECOND).unwrap_err();
    assert!(
        error
            .reason
            .starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
        "{error}"
    );
}
