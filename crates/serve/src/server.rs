//! The server: a listening socket, a thread per connection (bounded; beyond
//! the bound a connection is answered 503), keep-alive, idle connections
//! closed after a timeout, file bodies sent with `sendfile`, and one
//! access-log line per request:
//! `127.0.0.1:5123 "GET /host-kernel HTTP/1.1" 200 9876543 12ms`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::http::{self, BadTarget, Head, MAX_HEAD, Range, Request};
use crate::served::Served;
use crate::{ServeError, ipxe};

/// How a server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The build the boot scripts boot when what is served holds several
    /// (and the machine names none); `None`: the only one.
    pub build: Option<String>,
    /// Connections served at once; one more is answered 503.
    pub max_connections: usize,
    /// An idle connection (between requests, or one that stops sending or
    /// receiving) is closed after this long.
    pub idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            build: None,
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    context: Arc<Context>,
}

struct Context {
    served: Served,
    options: Options,
    log: Mutex<Box<dyn Write + Send>>,
    active: AtomicUsize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("served", &self.context.served)
            .finish()
    }
}

impl Server {
    /// Listens on `address` (`HOST:PORT`; port 0 picks a free one, see
    /// [`Server::local_addr`]). The access log goes to standard error.
    pub fn bind(address: &str, served: Served, options: Options) -> Result<Server, ServeError> {
        if let Some(name) = &options.build {
            let files = served.files();
            let builds = ipxe::builds(files.keys().map(String::as_str));
            if !builds.contains_key(name) {
                return Err(ServeError::NoSuchBuild {
                    name: name.clone(),
                    available: if builds.is_empty() {
                        "none".to_string()
                    } else {
                        builds.keys().cloned().collect::<Vec<_>>().join(", ")
                    },
                });
            }
        }
        let listener = TcpListener::bind(address).map_err(|source| ServeError::Listen {
            address: address.to_string(),
            source,
        })?;
        Ok(Server {
            listener,
            context: Arc::new(Context {
                served,
                options,
                log: Mutex::new(Box::new(io::stderr())),
                active: AtomicUsize::new(0),
            }),
        })
    }

    /// Writes the access log to `log` instead of standard error.
    pub fn log_to(mut self, log: impl Write + Send + 'static) -> Server {
        // Not shared until `run`, which takes the server.
        if let Some(context) = Arc::get_mut(&mut self.context) {
            context.log = Mutex::new(Box::new(log));
        }
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends.
    pub fn run(self) -> io::Result<()> {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                // Out of file descriptors, a connection reset before it was
                // accepted: the next one may do better.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let context = Arc::clone(&self.context);
            if context.active.fetch_add(1, Ordering::SeqCst) >= context.options.max_connections {
                context.active.fetch_sub(1, Ordering::SeqCst);
                overloaded(&context, stream, peer);
                continue;
            }
            let spawned = std::thread::Builder::new()
                .name(format!("serve {peer}"))
                .stack_size(256 * 1024)
                .spawn({
                    let context = Arc::clone(&context);
                    move || {
                        connection(&context, stream, peer);
                        context.active.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            if spawned.is_err() {
                context.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// A response before it is written.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    close: bool,
}

enum Body {
    Bytes(Vec<u8>),
    File {
        file: std::fs::File,
        start: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

impl Response {
    fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(format!("{status} {}\n{text}", reason(status)).into_bytes()),
            close: false,
        }
    }

    fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Serves the requests of one connection, one after the other.
fn connection(context: &Context, mut stream: TcpStream, peer: SocketAddr) {
    let timeout = Some(context.options.idle_timeout);
    if stream.set_read_timeout(timeout).is_err()
        || stream.set_write_timeout(timeout).is_err()
        || stream.set_nodelay(true).is_err()
    {
        return;
    }
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let head = loop {
            let refused = match http::parse(&buffer) {
                Head::Partial if buffer.len() < MAX_HEAD => None,
                Head::Partial | Head::TooLarge => Some((431, "request head too large\n")),
                Head::Malformed => Some((400, "malformed request\n")),
                Head::Complete(request, length) => break (request, length),
            };
            if let Some((status, text)) = refused {
                let response = Response::text(status, text).closing();
                let started = Instant::now();
                answer(context, &mut stream, peer, None, false, response, started);
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Idle too long, or reset: a connection that never sent a
                // whole request has nothing to log.
                Err(_) => return,
            }
        };
        let started = Instant::now();
        let (request, length) = head;
        buffer.drain(..length);
        let head_only = request.method == "HEAD";
        let response = respond(context, &request);
        let keep_alive = request.keep_alive && !response.close;
        let response = if keep_alive {
            response
        } else {
            response.closing()
        };
        if !answer(
            context,
            &mut stream,
            peer,
            Some(&request),
            head_only,
            response,
            started,
        ) || !keep_alive
        {
            return;
        }
    }
}

/// The response to one request.
fn respond(context: &Context, request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        let mut response = Response::text(405, "only GET and HEAD\n").closing();
        response.headers.push(("Allow", "GET, HEAD".into()));
        return response;
    }
    // A body would have to be read to find the next request.
    if request.has_body {
        return Response::text(400, "a GET or HEAD request has no body\n").closing();
    }
    if request.minor == 1 && request.host.is_none() {
        return Response::text(400, "an HTTP/1.1 request names its Host\n").closing();
    }
    let name = match http::name(&request.target) {
        Ok(name) => name,
        Err(BadTarget::Malformed) => return Response::text(400, "malformed path\n").closing(),
        Err(BadTarget::NoSuchName) => return Response::text(404, ""),
    };
    let served = &context.served;
    // A file served under a generated name (a hand-written boot.ipxe) wins.
    let (body, content_type, modified) = match served.open(&name) {
        Some(opened) => (
            Body::File {
                file: opened.file,
                start: 0,
                len: opened.len,
            },
            content_type(&name),
            opened.modified,
        ),
        None => match ipxe::generated(&name, served, context.options.build.as_deref()) {
            Some(script) => (Body::Bytes(script.into_bytes()), "text/plain", None),
            None => return Response::text(404, ""),
        },
    };
    let len = body.len();
    let mut headers = vec![
        ("Content-Type", content_type.to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if let Some(modified) = modified {
        headers.push(("Last-Modified", httpdate::fmt_http_date(modified)));
    }
    match http::range(request.range.as_deref(), len) {
        Range::Whole => Response {
            status: 200,
            headers,
            body,
            close: false,
        },
        Range::Unsatisfiable => {
            let mut response = Response::text(416, "");
            response
                .headers
                .push(("Content-Range", format!("bytes */{len}")));
            response
        }
        Range::Part { start, end } => {
            headers.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
            let body = match body {
                Body::Bytes(bytes) => Body::Bytes(bytes[start as usize..end as usize].to_vec()),
                Body::File { file, .. } => Body::File {
                    file,
                    start,
                    len: end - start,
                },
            };
            Response {
                status: 206,
                headers,
                body,
                close: false,
            }
        }
    }
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".ipxe") || name.ends_with("cmdline") || name.ends_with("/build") {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// Writes a response and its access-log line; whether the whole response
/// went out.
fn answer(
    context: &Context,
    stream: &mut TcpStream,
    peer: SocketAddr,
    request: Option<&Request>,
    head_only: bool,
    response: Response,
    started: Instant,
) -> bool {
    let len = response.body.len();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: berth\r\nContent-Length: {len}\r\n",
        response.status,
        reason(response.status),
        httpdate::fmt_http_date(SystemTime::now()),
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if response.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let (sent, complete) = if stream.write_all(head.as_bytes()).is_err() {
        (0, false)
    } else if head_only {
        (0, true)
    } else {
        match response.body {
            Body::Bytes(bytes) => match stream.write_all(&bytes) {
                Ok(()) => (len, true),
                Err(_) => (0, false),
            },
            Body::File { file, start, len } => send_file(stream, &file, start, len),
        }
    };
    log(context, peer, request, response.status, sent, started);
    if response.close {
        close(stream);
    }
    complete
}

/// Sends `len` bytes of `file` from `start` with `sendfile`: the bytes sent
/// and whether that was all of them (a file cut short while it is sent ends
/// the connection, whose Content-Length promised more).
fn send_file(stream: &TcpStream, file: &std::fs::File, start: u64, len: u64) -> (u64, bool) {
    let end = start + len;
    let mut offset = start;
    while offset < end {
        // sendfile moves at most about 2 GiB at once.
        let count = (end - offset).min(1 << 30) as usize;
        match rustix::fs::sendfile(stream, file, Some(&mut offset), count) {
            Ok(0) => return (offset - start, false),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return (offset - start, false),
        }
    }
    (len, true)
}

/// Ends a connection without a reset: a request the server did not read
/// whole (a body, a pipelined request) would otherwise make the kernel
/// discard the response before the client reads it.
fn close(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let started = Instant::now();
    while drained < 1024 * 1024 && started.elapsed() < Duration::from_secs(1) {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
}

/// A connection beyond the bound: its request read if it comes at once,
/// answered 503, logged.
fn overloaded(context: &Context, mut stream: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).unwrap_or(0);
    let request = match http::parse(&buffer[..read]) {
        Head::Complete(request, _) => Some(request),
        _ => None,
    };
    let mut response = Response::text(503, "too many connections\n").closing();
    response.headers.push(("Retry-After", "1".into()));
    let head_only = request.as_ref().is_some_and(|r| r.method == "HEAD");
    answer(
        context,
        &mut stream,
        peer,
        request.as_ref(),
        head_only,
        response,
        started,
    );
}

/// One access-log line: client, request line as sent, status, body bytes
/// sent, duration.
fn log(
    context: &Context,
    peer: SocketAddr,
    request: Option<&Request>,
    status: u16,
    sent: u64,
    started: Instant,
) {
    let what = match request {
        Some(r) => format!(
            "{} {} HTTP/1.{}",
            printable(&r.method),
            printable(&r.target),
            r.minor
        ),
        None => "-".to_string(),
    };
    let line = format!(
        "{peer} \"{what}\" {status} {sent} {}ms\n",
        started.elapsed().as_millis()
    );
    if let Ok(mut log) = context.log.lock() {
        let _ = log.write_all(line.as_bytes());
        let _ = log.flush();
    }
}

/// Text from the network as it can go into one log line: quotes,
/// backslashes and anything not printable ASCII escaped as `\xNN`.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (byte.is_ascii_graphic() && byte != b'"' && byte != b'\\') || byte == b' ' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}
