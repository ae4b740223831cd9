//! sha256 digests as OCI writes them: `sha256:` and 64 hex digits.
//!
//! Only sha256 is supported, as by every registry berth talks to; a digest
//! of any other form is refused wherever one is turned into a path.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// The digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    finish(Sha256::new_with_prefix(bytes))
}

/// The digest of what `hasher` has seen.
pub fn finish(hasher: Sha256) -> String {
    format!("sha256:{:x}", hasher.finalize())
}

/// The hex part of a well-formed sha256 digest, `None` for anything else, so
/// that a digest read from a manifest can never name a path outside
/// `blobs/sha256/`.
pub fn hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some(hex)
}

/// A writer that hashes and counts what passes through it to `inner`.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// How many bytes have passed through.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of what passed through, and the writer it went to.
    pub fn finish(self) -> (String, W) {
        (finish(self.hasher), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `digest` is a well-formed sha256 digest.
pub fn is_valid(digest: &str) -> bool {
    hex(digest).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashing_writer_counts_and_hashes_what_it_passes_on() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"hel").unwrap();
        writer.write_all(b"lo").unwrap();
        assert_eq!(writer.written(), 5);
        let (digest, bytes) = writer.finish();
        assert_eq!(digest, sha256(b"hello"));
        assert_eq!(bytes, b"hello");
    }

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        let good = sha256(b"hello");
        assert_eq!(
            good,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(hex(&good).is_some());
        for bad in [
            "sha256:",
            "sha512:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha256:../../../../etc/passwd",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            assert_eq!(hex(bad), None, "{bad}");
        }
    }
}
