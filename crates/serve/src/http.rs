//! The HTTP/1.1 pieces that do no I/O: a request head parsed (with
//! `httparse`) into what the server uses, the path decoded into a name,
//! and byte ranges (RFC 9110 §14).

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// What the server needs of a request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent, for the access log.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub host: Option<String>,
    pub range: Option<String>,
    pub keep_alive: bool,
    /// A body is announced (Content-Length above 0, or Transfer-Encoding).
    pub has_body: bool,
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug)]
pub enum Head {
    /// A whole head of this many bytes.
    Complete(Request, usize),
    /// More bytes are needed.
    Partial,
    /// Not HTTP/1.x: answered with 400.
    Malformed,
    /// Too many headers: answered with 431.
    TooLarge,
}

pub fn parse(buffer: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
        Err(_) => return Head::Malformed,
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Head::Malformed;
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .next()
    };
    let connection = header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
    let keep_alive = if minor == 0 {
        tokens.contains(&"keep-alive")
    } else {
        !tokens.contains(&"close")
    };
    let has_body =
        header("transfer-encoding").is_some() || header("content-length").is_some_and(|l| l != "0");
    Head::Complete(
        Request {
            method: method.to_string(),
            target: target.to_string(),
            minor,
            host: header("host"),
            range: header("range"),
            keep_alive,
            has_body,
        },
        length,
    )
}

/// Why a request target names nothing that could be served.
#[derive(Debug, PartialEq)]
pub enum BadTarget {
    /// Not a path (`*`, a bad percent escape): 400.
    Malformed,
    /// A path that decodes to no possible name (NUL, not UTF-8): 404.
    NoSuchName,
}

/// The served name a request target asks for: the path of an origin-form
/// (`/a/b?q`) or absolute-form (`http://host/a/b`) target, without its
/// leading `/` and query, percent-decoded once.
pub fn name(target: &str) -> Result<String, BadTarget> {
    let path = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return Err(BadTarget::Malformed);
    };
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadTarget::Malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadTarget::Malformed)?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| BadTarget::Malformed)?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    if decoded.contains(&0) {
        return Err(BadTarget::NoSuchName);
    }
    String::from_utf8(decoded).map_err(|_| BadTarget::NoSuchName)
}

/// What a Range header asks of a representation of `len` bytes.
#[derive(Debug, PartialEq)]
pub enum Range {
    /// No range, or one the server ignores (several ranges, not bytes,
    /// malformed): the whole representation, 200.
    Whole,
    /// Bytes `start..end` (end exclusive): 206.
    Part { start: u64, end: u64 },
    /// No byte of it exists: 416.
    Unsatisfiable,
}

pub fn range(header: Option<&str>, len: u64) -> Range {
    let Some((unit, spec)) = header.and_then(|h| h.split_once('=')) else {
        return Range::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.is_empty() {
        // `-n`: the last n bytes.
        return match number(last) {
            None => Range::Whole,
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(suffix) => Range::Part {
                start: len.saturating_sub(suffix),
                end: len,
            },
        };
    }
    let Some(start) = number(first) else {
        return Range::Whole;
    };
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            Some(last) if last >= start => last.saturating_add(1).min(len),
            // `5-2` is invalid, and an invalid range is ignored.
            _ => return Range::Whole,
        }
    };
    if start >= len {
        Range::Unsatisfiable
    } else {
        Range::Part { start, end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_a_ten_byte_file() {
        let part = |start, end| Range::Part { start, end };
        for (header, expected) in [
            ("bytes=0-3", part(0, 4)),
            ("bytes=2-", part(2, 10)),
            ("bytes=-3", part(7, 10)),
            ("bytes=-30", part(0, 10)),
            ("bytes=5-100", part(5, 10)),
            ("bytes=9-9", part(9, 10)),
            ("bytes=10-", Range::Unsatisfiable),
            ("bytes=10-12", Range::Unsatisfiable),
            ("bytes=-0", Range::Unsatisfiable),
            ("bytes=0-1,4-5", Range::Whole),
            ("bytes=5-2", Range::Whole),
            ("bytes=a-b", Range::Whole),
            ("bytes=-", Range::Whole),
            ("lines=1-2", Range::Whole),
            ("bytes=+1-2", Range::Whole),
        ] {
            assert_eq!(range(Some(header), 10), expected, "{header}");
        }
        assert_eq!(range(None, 10), Range::Whole);
        assert_eq!(range(Some("bytes=-1"), 0), Range::Unsatisfiable);
    }

    #[test]
    fn names_are_decoded_once() {
        assert_eq!(name("/host-kernel"), Ok("host-kernel".into()));
        assert_eq!(name("/a%20b?x=1"), Ok("a b".into()));
        assert_eq!(name("/%2e%2e/x"), Ok("../x".into()));
        assert_eq!(name("/%252e"), Ok("%2e".into()));
        assert_eq!(name("http://h:8080/boot.ipxe"), Ok("boot.ipxe".into()));
        assert_eq!(name("/a%00b"), Err(BadTarget::NoSuchName));
        assert_eq!(name("/%ff"), Err(BadTarget::NoSuchName));
        assert_eq!(name("/%zz"), Err(BadTarget::Malformed));
        assert_eq!(name("/%2"), Err(BadTarget::Malformed));
        assert_eq!(name("*"), Err(BadTarget::Malformed));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let keep = |head: &str| match parse(head.as_bytes()) {
            Head::Complete(request, _) => request.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(keep("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost"), Head::Partial));
        assert!(matches!(parse(b"GET / HTTP/2.0\r\n\r\n"), Head::Malformed));
    }
}
