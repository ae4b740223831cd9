//! User data (and vendor data) as a source hands it, decoded into what
//! cloud-config applies: `#cloud-config` documents and `#!` scripts.
//!
//! Accepted, as cloud-init accepts them: gzip (magic `1f 8b`), MIME
//! multipart (what `cloud-init devel make-mime` and Python's email package
//! write; parts in base64, quoted-printable, 7bit, 8bit or binary, nested
//! multiparts), `#cloud-config`, `#!` scripts. JSON user data is
//! LinuxKit's and is left to `/run/config`. Everything else is noted by its
//! type and skipped. This module does no I/O: the caller logs the notes.

use std::io::Read;

/// The most decompressed bytes accepted, like the sources' size cap.
pub const MAX_SIZE: u64 = 16 << 20;

/// How deep multiparts may nest.
const MAX_DEPTH: usize = 4;

/// What one piece of user data held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// `#cloud-config` documents in the order they came, each with where it
    /// came from for the log (`user data`, `user data part 2`).
    pub cloud_configs: Vec<(String, String)>,
    pub scripts: Vec<Script>,
    /// One line each for what was skipped and why.
    pub notes: Vec<String>,
}

/// A `#!` script: a whole user data, or a `text/x-shellscript*` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// A file name safe to use as one (the part's file name, else `part-N`).
    pub name: String,
    pub body: Vec<u8>,
    /// `text/x-shellscript-per-boot`: run at every boot, not once per
    /// instance.
    pub per_boot: bool,
}

/// Decodes user data; `what` names it in notes (`user data`, `vendor data`).
pub fn decode(data: &[u8], what: &str) -> Decoded {
    let mut decoded = Decoded::default();
    let mut counter = 0;
    decode_into(data, what, None, 0, &mut counter, &mut decoded);
    decoded
}

/// Decompresses gzip data, refusing more than [`MAX_SIZE`] bytes.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not valid gzip: {e}"))?;
    if out.len() as u64 > MAX_SIZE {
        return Err(format!("more than {MAX_SIZE} bytes once decompressed"));
    }
    Ok(out)
}

fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

fn decode_into(
    data: &[u8],
    what: &str,
    content_type: Option<&str>,
    depth: usize,
    counter: &mut usize,
    out: &mut Decoded,
) {
    let unzipped;
    let data = if is_gzip(data) {
        match gunzip(data) {
            Ok(bytes) => {
                unzipped = bytes;
                &unzipped[..]
            }
            Err(e) => {
                out.notes.push(format!("{what}: {e}; skipped"));
                return;
            }
        }
    } else {
        data
    };
    if content_type.is_none()
        && let Some(message) = Message::parse(data)
    {
        decode_message(&message, what, depth, counter, out);
        return;
    }
    let kind = match content_type.map(str::to_ascii_lowercase).as_deref() {
        None | Some("text/plain" | "text/x-not-multipart" | "application/octet-stream") => {
            Kind::from_content(data)
        }
        Some("text/cloud-config") => Kind::CloudConfig,
        Some("text/x-shellscript" | "text/x-shellscript-per-instance") => Kind::Script(false),
        Some("text/x-shellscript-per-once") => Kind::Script(false),
        Some("text/x-shellscript-per-boot") => Kind::Script(true),
        Some(other) => Kind::Unsupported(other.to_string()),
    };
    match kind {
        Kind::CloudConfig => match std::str::from_utf8(data) {
            Ok(text) => out.cloud_configs.push((what.to_string(), text.to_string())),
            Err(_) => out
                .notes
                .push(format!("{what}: #cloud-config is not UTF-8; skipped")),
        },
        Kind::Script(per_boot) => {
            *counter += 1;
            out.scripts.push(Script {
                name: format!("part-{:03}", *counter),
                body: data.to_vec(),
                per_boot,
            })
        }
        Kind::Json => out.notes.push(format!(
            "{what}: JSON (LinuxKit's user data): left to /run/config"
        )),
        Kind::Empty => {}
        Kind::Unsupported(t) => out
            .notes
            .push(format!("{what}: {t} is not supported; skipped")),
    }
}

fn decode_message(
    message: &Message<'_>,
    what: &str,
    depth: usize,
    counter: &mut usize,
    out: &mut Decoded,
) {
    let content_type = message.content_type();
    let Some(boundary) = content_type
        .as_ref()
        .filter(|t| t.value.starts_with("multipart/"))
        .and_then(|t| t.param("boundary"))
    else {
        // A single part with MIME headers.
        decode_part(message, what, depth, counter, out);
        return;
    };
    if depth >= MAX_DEPTH {
        out.notes.push(format!(
            "{what}: multipart nested more than {MAX_DEPTH} deep; skipped"
        ));
        return;
    }
    for (index, body) in split_multipart(message.body, boundary.as_bytes())
        .into_iter()
        .enumerate()
    {
        let name = format!("{what} part {}", index + 1);
        match Message::parse_part(body) {
            Some(part) => decode_part(&part, &name, depth + 1, counter, out),
            None => out.notes.push(format!("{name}: no header block; skipped")),
        }
    }
}

fn decode_part(
    part: &Message<'_>,
    what: &str,
    depth: usize,
    counter: &mut usize,
    out: &mut Decoded,
) {
    let content_type = part.content_type();
    if let Some(t) = &content_type
        && t.value.starts_with("multipart/")
    {
        decode_message(part, what, depth, counter, out);
        return;
    }
    let encoding = part
        .header("content-transfer-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => part.body.to_vec(),
        "base64" => match base64_lenient(part.body) {
            Ok(bytes) => bytes,
            Err(e) => {
                out.notes
                    .push(format!("{what}: not valid base64 ({e}); skipped"));
                return;
            }
        },
        "quoted-printable" => quoted_printable(part.body),
        other => {
            out.notes.push(format!(
                "{what}: transfer encoding {other} is not supported; skipped"
            ));
            return;
        }
    };
    let scripts_before = out.scripts.len();
    let value = content_type.map(|t| t.value);
    decode_into(
        &body,
        what,
        Some(value.as_deref().unwrap_or("text/plain")),
        depth,
        counter,
        out,
    );
    // A script keeps its part's file name when it has a usable one.
    if out.scripts.len() > scripts_before
        && let Some(name) = part
            .header("content-disposition")
            .and_then(|d| HeaderValue::parse(d).param("filename"))
            .filter(|n| safe_file_name(n))
        && let Some(script) = out.scripts.last_mut()
    {
        script.name = name;
    }
}

fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

enum Kind {
    CloudConfig,
    Script(bool),
    Json,
    Empty,
    Unsupported(String),
}

impl Kind {
    /// What cloud-init decides from a text's first bytes.
    fn from_content(data: &[u8]) -> Kind {
        let start = data.trim_ascii_start();
        let first_line = data
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if start.is_empty() {
            Kind::Empty
        } else if first_line.eq_ignore_ascii_case(b"#cloud-config") {
            Kind::CloudConfig
        } else if data.starts_with(b"#!") {
            Kind::Script(false)
        } else if start.starts_with(b"{") || start.starts_with(b"[") {
            Kind::Json
        } else {
            let head = String::from_utf8_lossy(&first_line[..first_line.len().min(40)]);
            let name = match head.split_whitespace().next() {
                Some(word) if word.starts_with('#') => format!("{word:?}"),
                _ => "its first line".to_string(),
            };
            Kind::Unsupported(format!("content starting with {name}"))
        }
    }
}

/// A MIME message or part: its headers, unfolded, and its body.
struct Message<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl<'a> Message<'a> {
    /// A whole user data that is a MIME message: it starts with header
    /// lines and one of them is `Content-Type`.
    fn parse(data: &'a [u8]) -> Option<Message<'a>> {
        let message = Message::parse_part(data)?;
        message.header("content-type")?;
        Some(message)
    }

    /// A part: header lines (perhaps none) up to an empty line, then the body.
    fn parse_part(data: &'a [u8]) -> Option<Message<'a>> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut rest = data;
        loop {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return Some(Message {
                    headers,
                    body: after,
                });
            }
            if after.is_empty() && rest.len() == line.len() {
                return None;
            }
            let line = std::str::from_utf8(line).ok()?;
            if line.starts_with([' ', '\t']) {
                let (_, value) = headers.last_mut()?;
                value.push(' ');
                value.push_str(line.trim());
            } else {
                let (name, value) = line.split_once(':')?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return None;
                }
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
            rest = after;
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> Option<HeaderValue> {
        self.header("content-type").map(HeaderValue::parse)
    }
}

/// `type/subtype; name=value; name="quoted value"`.
struct HeaderValue {
    value: String,
    params: Vec<(String, String)>,
}

impl HeaderValue {
    fn parse(text: &str) -> HeaderValue {
        let mut pieces = text.split(';');
        let value = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = pieces
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim().to_ascii_lowercase(), v.to_string())
            })
            .collect();
        HeaderValue { value, params }
    }

    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// The bodies between `--boundary` lines (RFC 2046 §5.1.1): the line break
/// before a delimiter belongs to the delimiter; the preamble and epilogue
/// are dropped.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    while offset <= body.len() {
        let end = body[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| offset + p);
        let line = body[offset..end].trim_ascii_end();
        if let Some(after) = line.strip_prefix(&delimiter[..])
            && (after.is_empty() || after == b"--")
        {
            if let Some(s) = start {
                // Drop the line break that precedes the delimiter.
                let mut part_end = offset.saturating_sub(1).max(s);
                if part_end > s && body[part_end - 1] == b'\r' {
                    part_end -= 1;
                }
                parts.push(&body[s..part_end]);
            }
            if after == b"--" {
                return parts;
            }
            start = Some((end + 1).min(body.len()));
        }
        offset = end + 1;
    }
    // No closing delimiter: the last part runs to the end.
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

/// Base64 as MIME writes it: in lines, perhaps with other whitespace.
pub fn base64_lenient(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            if text[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if text[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(&h), Some(&l)) = (text.get(i + 1), text.get(i + 2))
                && let (Some(h), Some(l)) = (hex(h), hex(l))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    const CLOUD_CONFIG: &str = "#cloud-config\nhostname: mime-host\n";
    const SCRIPT: &str = "#!/bin/sh\necho hello from a script\n";

    /// Python's email package writes MIME as `cloud-init devel make-mime`
    /// does (make-mime is a thin wrapper around email.mime.multipart).
    fn python_mime(encoding: &str) -> Option<Vec<u8>> {
        let program = format!(
            r#"
import sys
from email import charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
encoding = "{encoding}"
if encoding == "qp":
    charset.add_charset("utf-8", charset.QP, charset.QP, "utf-8")
outer = MIMEMultipart()
for name, subtype, text in [("config.yaml", "cloud-config", {config:?}), ("hello.sh", "x-shellscript", {script:?})]:
    part = MIMEText(text, subtype, "us-ascii" if encoding == "7bit" else "utf-8")
    part.add_header("Content-Disposition", "attachment", filename=name)
    outer.attach(part)
sys.stdout.write(outer.as_string())
"#,
            config = CLOUD_CONFIG,
            script = SCRIPT
        );
        match Command::new("python3").arg("-c").arg(program).output() {
            Ok(out) if out.status.success() => Some(out.stdout),
            Ok(out) => panic!("python3: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => {
                crate::test_support::skip(&format!("python3 is needed: {e}"));
                None
            }
        }
    }

    fn check_mime(encoding: &str) {
        let Some(mime) = python_mime(encoding) else {
            return;
        };
        let text = String::from_utf8_lossy(&mime);
        assert!(text.contains("multipart/mixed"), "{text}");
        let transfer = match encoding {
            "qp" => "quoted-printable",
            other => other,
        };
        assert!(
            text.contains(&format!("Content-Transfer-Encoding: {transfer}")),
            "{text}"
        );
        let decoded = decode(&mime, "user data");
        assert_eq!(
            decoded.cloud_configs,
            vec![("user data part 1".to_string(), CLOUD_CONFIG.to_string())],
            "{text}"
        );
        assert_eq!(
            decoded.scripts,
            vec![Script {
                name: "hello.sh".into(),
                body: SCRIPT.as_bytes().to_vec(),
                per_boot: false
            }]
        );
        assert_eq!(decoded.notes, Vec::<String>::new());
    }

    #[test]
    fn mime_7bit_as_make_mime_writes_it() {
        check_mime("7bit");
    }

    #[test]
    fn mime_base64_parts() {
        check_mime("base64");
    }

    #[test]
    fn mime_quoted_printable_parts() {
        check_mime("qp");
    }

    #[test]
    fn gzip_made_by_gzip() {
        let mut child = match Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                crate::test_support::skip(&format!("gzip: {e}"));
                return;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(CLOUD_CONFIG.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout[..2], [0x1f, 0x8b]);
        let decoded = decode(&out.stdout, "user data");
        assert_eq!(
            decoded.cloud_configs,
            vec![("user data".to_string(), CLOUD_CONFIG.to_string())]
        );
    }

    #[test]
    fn gzip_that_is_broken_is_one_note() {
        let decoded = decode(&[0x1f, 0x8b, 8, 0, 1, 2, 3], "user data");
        assert!(decoded.cloud_configs.is_empty());
        assert_eq!(decoded.notes.len(), 1, "{:?}", decoded.notes);
        assert!(decoded.notes[0].starts_with("user data: not valid gzip"));
    }

    #[test]
    fn plain_kinds() {
        let d = decode(SCRIPT.as_bytes(), "user data");
        assert_eq!(d.scripts.len(), 1);
        assert_eq!(d.scripts[0].name, "part-001");
        let d = decode(br#"{"ssh": {"entries": {}}}"#, "user data");
        assert_eq!(
            d.notes,
            ["user data: JSON (LinuxKit's user data): left to /run/config"]
        );
        let d = decode(b"#include\nhttp://example.org/x\n", "vendor data");
        assert_eq!(
            d.notes,
            ["vendor data: content starting with \"#include\" is not supported; skipped"]
        );
        assert_eq!(decode(b"\n \n", "user data"), Decoded::default());
    }

    #[test]
    fn part_types_and_broken_base64() {
        let mime = "Content-Type: multipart/mixed; boundary=XX\r\nMIME-Version: 1.0\r\n\r\n\
            preamble\r\n--XX\r\nContent-Type: text/x-shellscript-per-boot\r\n\r\n#!/bin/sh\r\ntrue\r\n\
            --XX\r\nContent-Type: text/cloud-boothook\r\n\r\n#!/bin/sh\r\n\
            --XX\r\nContent-Type: text/cloud-config\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n\
            --XX--\r\nepilogue\r\n";
        let d = decode(mime.as_bytes(), "user data");
        assert_eq!(d.scripts.len(), 1);
        assert!(d.scripts[0].per_boot);
        assert_eq!(d.scripts[0].body, b"#!/bin/sh\r\ntrue");
        assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
        assert_eq!(
            d.notes[0],
            "user data part 2: text/cloud-boothook is not supported; skipped"
        );
        assert!(d.notes[1].starts_with("user data part 3: not valid base64"));
    }

    #[test]
    fn quoted_printable_decodes_escapes_and_soft_breaks() {
        assert_eq!(quoted_printable(b"a=3Db=\r\nc=\nd"), b"a=bcd");
    }
}
