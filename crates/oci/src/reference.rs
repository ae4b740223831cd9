//! Image references, parsed and normalised the way Docker does
//! (`alpine` is `docker.io/library/alpine:latest`), and LinuxKit's
//! `@pkg:PATH` templates.
//!
//! Parsing only: no lookups. What a reference resolves to is the
//! layout's and the registry's business.

use std::fmt;

/// What an `image:` value names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// An image in a registry (or already in the cache under that name).
    Registry(RegistryRef),
    /// `@pkg:PATH`: a package directory, relative to the YAML file, built by
    /// `berth pkg build`.
    Package(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, …
    pub registry: String,
    /// `library/alpine`, `linuxkit/init`, …
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:…`
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

pub const DEFAULT_REGISTRY: &str = "docker.io";

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = text.strip_prefix("@pkg:") {
            if path.trim().is_empty() {
                return Err(fail("@pkg: needs a package directory"));
            }
            return Ok(Reference::Package(path.to_string()));
        }
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if text.chars().any(|c| c.is_whitespace()) {
            return Err(fail("contains white space"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            let (algorithm, hex) = digest
                .split_once(':')
                .ok_or_else(|| fail("digest must be algorithm:hex"))?;
            let hex_ok = match algorithm {
                "sha256" => hex.len() == 64,
                "sha512" => hex.len() == 128,
                _ => return Err(fail("digest algorithm must be sha256 or sha512")),
            } && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(fail("digest is not lowercase hex of the right length"));
            }
        }
        // A tag is after the last ':' that follows the last '/', so that
        // `host:5000/name` is not read as a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(fail(
                    "tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
            None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        };
        if !repository.split('/').all(component_ok) {
            return Err(fail(
                "repository must be lowercase letters, digits and separators (. _ -)",
            ));
        }
        Ok(Reference::Registry(RegistryRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        }))
    }
}

impl RegistryRef {
    /// The tag, or `latest` when neither a tag nor a digest is given.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }
}

/// The fully qualified form: `docker.io/library/alpine:latest`.
impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = self.tag_or_default() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Registry(r) => r.fmt(f),
            Reference::Package(p) => write!(f, "@pkg:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(full("linuxkit/init:v1.0"), "docker.io/linuxkit/init:v1.0");
        assert_eq!(
            full("127.0.0.1:5000/bench/kernel:6.1"),
            "127.0.0.1:5000/bench/kernel:6.1"
        );
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            full(&format!("host:5000/n@{digest}")),
            format!("host:5000/n@{digest}")
        );
        assert_eq!(
            full(&format!("n:t@{digest}")),
            format!("docker.io/library/n:t@{digest}")
        );
    }

    #[test]
    fn packages_and_bad_references() {
        assert_eq!(
            Reference::parse("@pkg:../images/getty").unwrap(),
            Reference::Package("../images/getty".into())
        );
        for bad in [
            "",
            "Alpine",
            "a b",
            "x:",
            "x@sha256:12",
            "x@md5:00",
            "@pkg:",
            "x:-t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
