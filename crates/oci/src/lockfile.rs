//! Lock files: `NAME.lock` records the digest every image reference of a
//! build resolved to, so that `berth build --lock NAME.lock` rebuilds with
//! exactly those images even after their tags move, and which keys of the
//! trust policy verified each image's signature.
//!
//! One line per reference, `REFERENCE DIGEST`, sorted: the digest of the
//! image manifest the build used. For an image chosen from an image index
//! (a multi-arch tag), the index's digest follows, so that a locked build
//! sees the index as the first did: the attestations and signatures it
//! carries. Then, for an image a key verified, `NAME=sha256:FINGERPRINT`
//! for each such key (sorted by name); `#` starts a comment. Lock files
//! written before indexes or keys were recorded read as they always did.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// Fully expanded reference → manifest digest.
    pub digests: BTreeMap<String, String>,
    /// Fully expanded reference → the digest of the image index its
    /// manifest was chosen from; references that named a manifest are
    /// absent.
    pub indexes: BTreeMap<String, String>,
    /// Fully expanded reference → the keys whose signatures verified it,
    /// sorted by name; references no key verified are absent.
    pub verified_by: BTreeMap<String, Vec<KeyUse>>,
}

/// A key that verified an image: its name in the trust policy and its
/// fingerprint (`sha256:` of its SPKI DER, [`crate::keys::PublicKey::fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyUse {
    pub name: String,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
#[error("lock file {file}:{line}: {message}")]
pub struct LockFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl LockFile {
    pub fn parse(text: &str, file: &str) -> Result<LockFile, LockFileError> {
        let mut lock = LockFile::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fail = |message: String| LockFileError {
                file: file.into(),
                line: number + 1,
                message,
            };
            let mut fields = line.split_whitespace();
            let (Some(reference), Some(digest)) = (fields.next(), fields.next()) else {
                return Err(fail(format!(
                    "{line:?} is not REFERENCE DIGEST [INDEX] [NAME=FINGERPRINT ...]"
                )));
            };
            if !crate::digest::is_valid(digest) {
                return Err(fail(format!("{digest:?} is not a sha256 digest")));
            }
            if lock
                .digests
                .insert(reference.into(), digest.into())
                .is_some()
            {
                return Err(fail(format!("{reference} is listed twice")));
            }
            let mut fields = fields.peekable();
            if let Some(index) = fields.next_if(|field| crate::digest::is_valid(field)) {
                lock.indexes.insert(reference.into(), index.into());
            }
            let mut keys = Vec::new();
            for field in fields {
                match field.split_once('=') {
                    Some((name, fingerprint))
                        if !name.is_empty() && crate::digest::is_valid(fingerprint) =>
                    {
                        keys.push(KeyUse {
                            name: name.into(),
                            fingerprint: fingerprint.into(),
                        });
                    }
                    _ => {
                        return Err(fail(format!(
                            "{field:?} is neither the digest of an index nor NAME=sha256:FINGERPRINT (a key that verified {reference})"
                        )));
                    }
                }
            }
            if !keys.is_empty() {
                keys.sort();
                lock.verified_by.insert(reference.into(), keys);
            }
        }
        Ok(lock)
    }

    pub fn render(&self) -> String {
        let mut text = String::from("# berth lock: the image each reference resolved to\n");
        for (reference, digest) in &self.digests {
            text.push_str(&format!("{reference} {digest}"));
            if let Some(index) = self.indexes.get(reference) {
                text.push_str(&format!(" {index}"));
            }
            for key in self.verified_by.get(reference).into_iter().flatten() {
                text.push_str(&format!(" {}={}", key.name, key.fingerprint));
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!("# c\ndocker.io/library/alpine:3 {digest}\n\n");
        let lock = LockFile::parse(&text, "x.lock").unwrap();
        assert_eq!(lock.digests["docker.io/library/alpine:3"], digest);
        assert!(lock.verified_by.is_empty());
        assert_eq!(LockFile::parse(&lock.render(), "x.lock").unwrap(), lock);
        let bad = LockFile::parse("a sha256:12\n", "x.lock")
            .unwrap_err()
            .to_string();
        assert_eq!(
            bad,
            "lock file x.lock:1: \"sha256:12\" is not a sha256 digest"
        );
        assert!(LockFile::parse("a\n", "x.lock").is_err());
    }

    #[test]
    fn keys_that_verified_an_image_follow_its_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let fingerprint = format!("sha256:{}", "b".repeat(64));
        let other = format!("sha256:{}", "c".repeat(64));
        let text =
            format!("x.io/a:1 {digest} release={fingerprint} ci={other}\nx.io/b:1 {digest}\n");
        let lock = LockFile::parse(&text, "x.lock").unwrap();
        assert_eq!(
            lock.verified_by["x.io/a:1"],
            vec![
                KeyUse {
                    name: "ci".into(),
                    fingerprint: other.clone()
                },
                KeyUse {
                    name: "release".into(),
                    fingerprint: fingerprint.clone()
                },
            ]
        );
        assert!(!lock.verified_by.contains_key("x.io/b:1"));
        let rendered = lock.render();
        assert!(
            rendered.contains(&format!(
                "x.io/a:1 {digest} ci={other} release={fingerprint}\n"
            )),
            "{rendered}"
        );
        assert_eq!(LockFile::parse(&rendered, "x.lock").unwrap(), lock);
        let bad = LockFile::parse(&format!("x.io/a:1 {digest} release\n"), "x.lock")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains(
                "\"release\" is neither the digest of an index nor NAME=sha256:FINGERPRINT"
            ),
            "{bad}"
        );
    }

    #[test]
    fn the_index_an_image_was_chosen_from_follows_its_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let index = format!("sha256:{}", "b".repeat(64));
        let fingerprint = format!("sha256:{}", "c".repeat(64));
        let text = format!("x.io/a:1 {digest} {index} release={fingerprint}\nx.io/b:1 {digest}\n");
        let lock = LockFile::parse(&text, "x.lock").unwrap();
        assert_eq!(lock.digests["x.io/a:1"], digest);
        assert_eq!(lock.indexes["x.io/a:1"], index);
        assert!(!lock.indexes.contains_key("x.io/b:1"));
        assert_eq!(lock.verified_by["x.io/a:1"][0].name, "release");
        let rendered = lock.render();
        assert_eq!(
            rendered.lines().skip(1).collect::<Vec<_>>(),
            [
                format!("x.io/a:1 {digest} {index} release={fingerprint}"),
                format!("x.io/b:1 {digest}"),
            ]
        );
        assert_eq!(LockFile::parse(&rendered, "x.lock").unwrap(), lock);
        let bad = LockFile::parse(&format!("x.io/a:1 {digest} sha256:12\n"), "x.lock")
            .unwrap_err()
            .to_string();
        assert!(
            bad.starts_with("lock file x.lock:1: \"sha256:12\" is neither"),
            "{bad}"
        );
    }
}
