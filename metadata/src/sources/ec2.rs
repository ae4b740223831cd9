//! EC2's instance metadata service, IMDSv2: a session token from
//! `PUT /latest/api/token`, sent with every request; a 401 (the token
//! expired) gets a new token and one retry. Tried at 169.254.169.254, then
//! at [fd00:ec2::254] (Nitro instances on IPv6). When the token is refused
//! (403, 404, 405: an IMDSv1-only service, or a proxy in the way), plain
//! IMDSv1 requests are made only with `berth.imdsv1=allow`.

use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use crate::found::{Found, Metadata, Source};
use crate::http::{self, Response};

const TOKEN_PATH: &str = "/latest/api/token";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, the longest AWS allows.
const TTL_SECONDS: &str = "21600";
/// The most keys read from `public-keys/`.
const MAX_KEYS: usize = 100;

/// A session with one IMDS address.
#[derive(Debug)]
pub struct Session {
    base: String,
    /// The end of the reading budget.
    until: Instant,
    /// `None`: IMDSv1, allowed by the options.
    token: RefCell<Option<String>>,
}

/// Why no session was had.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSession {
    /// Nothing answered.
    Unreachable(String),
    /// The token was refused, and IMDSv1 is not allowed.
    Refused(String),
}

impl Session {
    /// A session with the service at `base` (`http://169.254.169.254`).
    pub fn open(base: &str, imdsv1: bool, deadline: Instant) -> Result<Session, NoSession> {
        match token(base, deadline) {
            Ok(token) => Ok(Session {
                base: base.to_string(),
                until: Instant::now() + super::READING_BUDGET,
                token: RefCell::new(Some(token)),
            }),
            Err(Token::Refused(status)) if imdsv1 => {
                println!(
                    "ec2: {base}{TOKEN_PATH}: token refused with status {status}; using IMDSv1 (berth.imdsv1=allow)"
                );
                Ok(Session {
                    base: base.to_string(),
                    until: Instant::now() + super::READING_BUDGET,
                    token: RefCell::new(None),
                })
            }
            Err(Token::Refused(status)) => Err(NoSession::Refused(format!(
                "{base}{TOKEN_PATH}: token refused with status {status}, and IMDSv1 is not allowed (berth.imdsv1=allow allows it)"
            ))),
            Err(Token::Failed(e)) => Err(NoSession::Unreachable(e)),
        }
    }

    /// `GET /latest/PATH`: the body on 200, `None` on 404. A 401 renews
    /// the token once.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let url = format!("{}/latest/{path}", self.base);
        let mut response = self.get_once(&url)?;
        if response.status == 401 && self.token.borrow().is_some() {
            let renewed =
                token(&self.base, super::document_deadline(self.until)).map_err(|e| match e {
                    Token::Refused(status) => {
                        format!("{url}: 401, and a new token refused with status {status}")
                    }
                    Token::Failed(e) => format!("{url}: 401, and no new token: {e}"),
                })?;
            *self.token.borrow_mut() = Some(renewed);
            response = self.get_once(&url)?;
        }
        match response.status {
            200 => Ok(Some(response.body)),
            404 => Ok(None),
            status => Err(format!("{url}: status {status}")),
        }
    }

    fn get_once(&self, url: &str) -> Result<Response, String> {
        let token = self.token.borrow().clone();
        let headers: Vec<(&str, &str)> = token.iter().map(|t| (TOKEN_HEADER, t.as_str())).collect();
        super::retried(url, super::document_deadline(self.until), |timeout| {
            http::Request {
                method: "GET",
                url,
                headers: &headers,
                timeout,
            }
            .send()
        })
    }

    /// A text item of the meta-data, trimmed; `None` when absent or empty.
    fn item(&self, path: &str) -> Result<Option<String>, String> {
        Ok(self
            .get(&format!("meta-data/{path}"))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// The instance's metadata, its public keys and its user data.
    pub fn read(&self) -> Result<Found, String> {
        let mut metadata = Metadata {
            instance_id: self.item("instance-id")?,
            hostname: self.item("hostname")?,
            local_hostname: self.item("local-hostname")?,
            local_ipv4: self.item("local-ipv4")?,
            public_ipv4: self.item("public-ipv4")?,
            availability_zone: self.item("placement/availability-zone")?,
            instance_type: self.item("instance-type")?,
            public_keys: Vec::new(),
        };
        if metadata.instance_id.is_none() {
            return Err(format!("{}/latest/meta-data/instance-id: none", self.base));
        }
        if let Some(listing) = self.item("public-keys/")? {
            for index in key_indices(&listing) {
                match self.item(&format!("public-keys/{index}/openssh-key")) {
                    Ok(Some(key)) => metadata.public_keys.extend(
                        key.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    ),
                    Ok(None) => {}
                    Err(e) => println!("ec2: {e}; key left out"),
                }
            }
        }
        let user_data = self.get("user-data")?;
        Ok(Found {
            source: Source::Ec2,
            origin: self.base.clone(),
            metadata,
            user_data,
            vendor_data: None,
            network: None,
        })
    }
}

enum Token {
    /// 403, 404 or 405.
    Refused(u16),
    Failed(String),
}

fn token(base: &str, deadline: Instant) -> Result<String, Token> {
    let url = format!("{base}{TOKEN_PATH}");
    let response = super::retried(&url, deadline, |timeout| {
        http::Request {
            method: "PUT",
            url: &url,
            headers: &[(TTL_HEADER, TTL_SECONDS)],
            timeout,
        }
        .send()
    })
    .map_err(Token::Failed)?;
    match response.status {
        200 => {
            let token = String::from_utf8(response.body)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| {
                    !t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| b.is_ascii_graphic())
                });
            token.ok_or_else(|| Token::Failed(format!("{url}: the token is not printable ASCII")))
        }
        status @ 403..=405 => Err(Token::Refused(status)),
        status => Err(Token::Failed(format!("{url}: status {status}"))),
    }
}

/// The indices in a `public-keys/` listing (`0=my-key` lines).
pub fn key_indices(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split('=').next())
        .map(str::trim)
        .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        .take(MAX_KEYS)
        .map(String::from)
        .collect()
}

/// EC2 at the first of `bases` with a route and an answer.
pub fn from_service(
    bases: &[String],
    imdsv1: bool,
    proc: &Path,
    deadline: Instant,
) -> Result<Found, String> {
    let urls: Vec<&str> = bases.iter().map(String::as_str).collect();
    let routed = super::route::wait_any(&urls, proc, deadline)?;
    let mut errors = Vec::new();
    for base in routed {
        match Session::open(base, imdsv1, deadline) {
            Ok(session) => return session.read(),
            Err(NoSession::Refused(e)) => return Err(e),
            Err(NoSession::Unreachable(e)) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_listing_as_imds_answers_it() {
        assert_eq!(key_indices("0=my-key\n1=other key"), ["0", "1"]);
        assert_eq!(key_indices("0=k\n\n../x=y\n"), ["0"]);
        assert!(key_indices("").is_empty());
    }
}
