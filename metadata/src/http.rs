//! A small blocking HTTP/1.1 client over `std::net::TcpStream`, enough for
//! metadata services: GET and PUT with headers, bodies delimited by
//! `Content-Length`, chunked transfer coding or the connection's close.
//! Every request has one deadline (connect, send and read together) and a
//! cap on the body's size. Only `http://`: metadata services are link-local
//! and TLS would be the program's largest part, so an `https://` URL is
//! refused by name. One connection per request (`Connection: close`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest body read: user data and network documents are far smaller.
pub const MAX_BODY: usize = 16 << 20;
/// The largest response head (status line and headers).
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct Error {
    pub url: String,
    pub reason: String,
}

/// A URL this client can fetch: `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The host as written, IPv6 literals with their brackets.
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(match url.starts_with("https://") {
                true => "https is not supported (metadata is fetched over plain http)".into(),
                false => "not an http:// URL".into(),
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("user information in URLs is not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some(end) = v6.find(']') else {
                return Err("unclosed '[' in the host".into());
            };
            let address = &v6[..end];
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{address:?} is not an IPv6 address"));
            }
            (&authority[..end + 2], &v6[end + 1..])
        } else {
            match authority.rfind(':') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            }
        };
        let port = match port {
            "" => 80,
            _ => port
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("bad port {port:?}"))?,
        };
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("bad host".into());
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("spaces or control characters in the path".into());
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The addresses to connect to: IP literals directly, names resolved.
    fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        (bare, self.port)
            .to_socket_addrs()
            .map(|a| a.collect())
            .map_err(|e| format!("resolving {bare}: {e}"))
    }

    /// The `Host` header's value.
    fn host_header(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }
}

/// A response: its status and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// For connecting, sending and reading the whole response together.
    pub timeout: Duration,
}

impl Request<'_> {
    pub fn send(&self) -> Result<Response, Error> {
        let error = |reason: String| Error {
            url: self.url.to_string(),
            reason,
        };
        let url = Url::parse(self.url).map_err(error)?;
        let deadline = Instant::now() + self.timeout;
        let addresses = url.addresses().map_err(error)?;
        let mut last = String::from("no address");
        let mut stream = None;
        for address in addresses {
            let Some(left) = remaining(deadline) else {
                break;
            };
            match TcpStream::connect_timeout(&address, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting to {address}: {e}"),
            }
        }
        let mut stream = stream.ok_or_else(|| error(last))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: berth-metadata\r\nAccept: */*\r\nConnection: close\r\n",
            self.method,
            url.path,
            url.host_header()
        );
        for (name, value) in self.headers {
            if [name, value]
                .iter()
                .any(|s| s.bytes().any(|b| b == b'\r' || b == b'\n'))
            {
                return Err(error(format!("header {name:?} has a line break")));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.method != "GET" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut reader = Deadlined {
            stream: &mut stream,
            deadline,
        };
        reader
            .write_all(head.as_bytes())
            .map_err(|e| error(format!("sending the request: {e}")))?;
        read_response(&mut reader, self.method == "HEAD").map_err(error)
    }
}

/// A GET with no extra headers.
pub fn get(url: &str, timeout: Duration) -> Result<Response, Error> {
    Request {
        method: "GET",
        url,
        headers: &[],
        timeout,
    }
    .send()
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// A stream whose every read and write ends by one deadline.
struct Deadlined<'a> {
    stream: &'a mut TcpStream,
    deadline: Instant,
}

impl Deadlined<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        remaining(self.deadline)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf).map_err(timed_out)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A socket timeout says "would block" on Linux; say what it means.
fn timed_out(e: std::io::Error) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock => {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")
        }
        _ => e,
    }
}

/// Reads a whole response from `input`: the head, then the body as its
/// headers delimit it. Pure over any reader, so tests feed it bytes.
pub fn read_response(input: &mut impl Read, head_only: bool) -> Result<Response, String> {
    let mut buffered = Buffered {
        input,
        buf: Vec::new(),
        pos: 0,
    };
    let status_line = buffered.line()?;
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {:?}", clip(&status_line)));
    }
    let status: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| format!("bad status line {:?}", clip(&status_line)))?;
    let (mut length, mut chunked) = (None, false);
    let mut head_size = status_line.len();
    loop {
        let line = buffered.line()?;
        head_size += line.len() + 2;
        if head_size > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {:?}", clip(&line)));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", clip(value)))?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(format!("unsupported Transfer-Encoding {:?}", clip(value)));
            }
            chunked = true;
        }
    }
    if (100..200).contains(&status) {
        return Err(format!("unexpected informational status {status}"));
    }
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        loop {
            let size_line = buffered.line()?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size {:?}", clip(&size_line)))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !buffered.line()?.is_empty() {}
                break;
            }
            if size > MAX_BODY - body.len() {
                return Err(format!("body larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&buffered.exact(size)?);
            if !buffered.line()?.is_empty() {
                return Err("chunk not followed by CRLF".into());
            }
        }
        body
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(format!("body of {length} bytes is larger than {MAX_BODY}"));
        }
        buffered.exact(length)?
    } else {
        buffered.rest()?
    };
    Ok(Response { status, body })
}

/// A text for an error message, cut short.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

struct Buffered<'a, R> {
    input: &'a mut R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Buffered<'_, R> {
    /// More bytes into the buffer; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, String> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        let n = self
            .input
            .read(&mut chunk)
            .map_err(|e| format!("reading the response: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// One line without its CRLF (or bare LF).
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(format!("a line longer than {MAX_HEAD} bytes"));
            }
            if !self.fill()? {
                return Err("connection closed in the middle of the response".into());
            }
        }
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() - self.pos < n {
            if !self.fill()? {
                return Err(format!(
                    "connection closed after {} of {n} body bytes",
                    self.buf.len() - self.pos
                ));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    fn rest(&mut self) -> Result<Vec<u8>, String> {
        while self.fill()? {
            if self.buf.len() - self.pos > MAX_BODY {
                return Err(format!("body larger than {MAX_BODY} bytes"));
            }
        }
        Ok(self.buf[self.pos..].to_vec())
    }
}

#[cfg(test)]
mod tests;
