//! ed25519 keys in the encodings cosign and OpenSSL read: the private key
//! as PKCS#8 PEM (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` when protected
//! by a password: PBES2, scrypt or PBKDF2 with AES), the public key as SPKI
//! PEM (`PUBLIC KEY`).
//!
//! Key files are written once: a file already at the path is never
//! replaced, and the private key is mode 0600 from the moment it exists.
//! The password of an encrypted key is the caller's to find
//! ([`PASSWORD_VARIABLE`] in `berth`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use pkcs8::LineEnding;

/// The environment variable that holds the password of an encrypted key.
pub const PASSWORD_VARIABLE: &str = "BERTH_KEY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "key {}: the private key is encrypted; give its password in {PASSWORD_VARIABLE}",
        path.display()
    )]
    NeedsPassword { path: PathBuf },
    #[error("key {}: the password in {PASSWORD_VARIABLE} does not decrypt it", path.display())]
    WrongPassword { path: PathBuf },
    #[error("key {}: a file is already there; berth never overwrites a key", path.display())]
    Exists { path: PathBuf },
    #[error("key {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A public key and the name it is known by in messages (its file).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

/// The names of `keys`, as refusals list them: `a.pub, b.pub`.
pub fn names(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|key| key.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new key from the operating system's randomness.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `PREFIX.key` and `PREFIX.pub`, the names [`write_pair`] writes.
pub fn pair_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |extension: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(extension);
        PathBuf::from(name)
    };
    (with(".key"), with(".pub"))
}

/// Writes `key` as `PREFIX.key` (PKCS#8 PEM, mode 0600; encrypted when
/// `password` is given) and its public half as `PREFIX.pub` (SPKI PEM).
/// Neither is written when either exists, and nothing is left if one
/// cannot be written.
pub fn write_pair(
    key: &SigningKey,
    prefix: &Path,
    password: Option<&[u8]>,
) -> Result<(PathBuf, PathBuf), KeyError> {
    let (private, public) = pair_paths(prefix);
    for path in [&private, &public] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let invalid = |path: &Path, e: &dyn std::fmt::Display| KeyError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // PKCS#8 version 1, the private key alone: OpenSSL and Go read no
    // other form of an ed25519 key.
    let bytes = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private_pem = match password {
        Some(password) => bytes.to_pkcs8_encrypted_pem(password, LineEnding::LF),
        None => bytes.to_pkcs8_pem(LineEnding::LF),
    }
    .map_err(|e| invalid(&private, &e))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| invalid(&public, &e))?;
    write_new(&private, private_pem.as_bytes(), 0o600)?;
    if let Err(error) = write_new(&public, public_pem.as_bytes(), 0o644) {
        let _ = fs::remove_file(&private);
        return Err(error);
    }
    Ok((private, public))
}

/// Creates `path` with `mode` (never replacing anything) and writes
/// `bytes`; a partial file is removed.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let failed = |source: io::Error| match source.kind() {
        io::ErrorKind::AlreadyExists => KeyError::Exists {
            path: path.to_path_buf(),
        },
        _ => KeyError::Write {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(path);
        return Err(failed(source));
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM label of the first block of `text`.
fn label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(&text[start..start + end])
}

/// Reads a private key: PKCS#8 PEM, or encrypted PKCS#8 PEM decrypted with
/// `password` (refused clearly without one).
pub fn read_private(path: &Path, password: Option<&[u8]>) -> Result<SigningKey, KeyError> {
    let text = read_text(path)?;
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    match label(&text) {
        Some("PRIVATE KEY") => SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| invalid(format!("not an ed25519 PKCS#8 key: {e}"))),
        Some("ENCRYPTED PRIVATE KEY") => {
            let password = password.ok_or_else(|| KeyError::NeedsPassword {
                path: path.to_path_buf(),
            })?;
            SigningKey::from_pkcs8_encrypted_pem(&text, password).map_err(|e| match e {
                pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed) => {
                    KeyError::WrongPassword {
                        path: path.to_path_buf(),
                    }
                }
                pkcs8::Error::EncryptedPrivateKey(e) => invalid(format!(
                    "encrypted in a way berth does not read ({e}); PBES2 with scrypt or PBKDF2 and AES-CBC is read"
                )),
                e => invalid(format!("not an ed25519 encrypted PKCS#8 key: {e}")),
            })
        }
        Some("ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY") => Err(invalid(
            "cosign's own encrypted format is not read; export the key as PKCS#8 PEM".into(),
        )),
        Some(other) => Err(invalid(format!(
            "a PEM {other:?} block, not a PKCS#8 private key"
        ))),
        None => Err(invalid("not PEM".into())),
    }
}

/// Reads a public key: SPKI PEM (`PUBLIC KEY`) of an ed25519 key.
pub fn read_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_text(path)?;
    parse_public(&text, path)
}

/// A public key from SPKI PEM `text`; `place` names where the text was
/// (a file, or the place of a key written inline) in errors and is the
/// key's name.
pub fn parse_public(text: &str, place: &Path) -> Result<PublicKey, KeyError> {
    let key = VerifyingKey::from_public_key_pem(text).map_err(|e| KeyError::Invalid {
        path: place.to_path_buf(),
        reason: match label(text) {
            Some("PUBLIC KEY") => format!("not an ed25519 public key: {e}"),
            Some(other) => format!("a PEM {other:?} block, not a public key (SPKI PEM)"),
            None => "not PEM".into(),
        },
    })?;
    Ok(PublicKey {
        name: place.display().to_string(),
        key,
    })
}

impl PublicKey {
    /// `sha256:HEX` of the key's SPKI DER encoding: the same for one key
    /// however its PEM is laid out, and what OpenSSL hashes for
    /// `openssl pkey -pubin -outform DER | sha256sum`.
    pub fn fingerprint(&self) -> String {
        match self.key.to_public_key_der() {
            Ok(der) => crate::digest::sha256(der.as_bytes()),
            // An ed25519 key always encodes; the raw bytes are the next best name.
            Err(_) => crate::digest::sha256(self.key.as_bytes()),
        }
    }
}

/// The public key of `key`, named `name`.
pub fn public_of(key: &SigningKey, name: &str) -> PublicKey {
    PublicKey {
        name: name.into(),
        key: key.verifying_key(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_pair_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let prefix = dir.path().join("k");
        let (private, public) = write_pair(&key, &prefix, None).unwrap();
        assert_eq!(private, dir.path().join("k.key"));
        let mode = fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(&private).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        // Version 1 without the public key: 48 bytes of DER, 64 of base64.
        assert_eq!(text.lines().nth(1).unwrap().len(), 64, "{text}");
        assert!(
            fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        assert_eq!(
            read_private(&private, None).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(read_public(&public).unwrap().key, key.verifying_key());

        let before = fs::read(&private).unwrap();
        let error = write_pair(&generate().unwrap(), &prefix, None).unwrap_err();
        assert!(matches!(error, KeyError::Exists { .. }), "{error}");
        assert_eq!(fs::read(&private).unwrap(), before);

        // Only the public half there: the private one is not written either.
        fs::remove_file(&private).unwrap();
        assert!(write_pair(&key, &prefix, None).is_err());
        assert!(!private.exists());
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let (private, _) = write_pair(&key, &dir.path().join("e"), Some(b"secret")).unwrap();
        let text = fs::read_to_string(&private).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{text}"
        );
        let error = read_private(&private, None).unwrap_err().to_string();
        assert!(
            error.ends_with("give its password in BERTH_KEY_PASSWORD"),
            "{error}"
        );
        assert!(matches!(
            read_private(&private, Some(b"wrong")),
            Err(KeyError::WrongPassword { .. })
        ));
        let read = read_private(&private, Some(b"secret")).unwrap();
        assert_eq!(read.to_bytes(), key.to_bytes());
    }

    #[test]
    fn other_files_are_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pem");
        fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = read_public(&path).unwrap_err().to_string();
        assert!(
            error.contains("x.pem") && error.contains("CERTIFICATE"),
            "{error}"
        );
        let error = read_private(&path, None).unwrap_err().to_string();
        assert!(error.contains("not a PKCS#8 private key"), "{error}");
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_spki_der() {
        let key = generate().unwrap();
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let parsed = parse_public(&pem, Path::new("inline")).unwrap();
        assert_eq!(parsed.name, "inline");
        // The DER is the PEM's base64: a fixed 12-byte SPKI header, then
        // the 32 bytes of the key.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(key.verifying_key().as_bytes());
        assert_eq!(parsed.fingerprint(), crate::digest::sha256(&der));
        assert_eq!(public_of(&key, "x").fingerprint(), parsed.fingerprint());
        let error = parse_public("not a key", Path::new("t.yml:3:7"))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "key t.yml:3:7: not PEM");
    }
}
