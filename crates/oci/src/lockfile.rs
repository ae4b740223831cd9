//! Lock files: `NAME.lock` records the digest every image reference of a
//! build resolved to, so that `berth build --lock NAME.lock` rebuilds with
//! exactly those images even after their tags move.
//!
//! One line per reference, `REFERENCE DIGEST`, sorted; `#` starts a comment.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// Fully expanded reference → manifest digest.
    pub digests: BTreeMap<String, String>,
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
            let (Some(reference), Some(digest), None) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(fail(format!("{line:?} is not REFERENCE DIGEST")));
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
        }
        Ok(lock)
    }

    pub fn render(&self) -> String {
        let mut text = String::from("# berth lock: the image each reference resolved to\n");
        for (reference, digest) in &self.digests {
            text.push_str(&format!("{reference} {digest}\n"));
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
}
