//! Signed builds (`docs/signing.md`): `NAME.sha256` lists every artifact
//! of a build with its sha256 digest, one line each in the form GNU
//! `sha256sum` writes (`HEX  FILE`, sorted by name), so `sha256sum -c`
//! checks it; `NAME.sha256.sig` is the ed25519 signature of those bytes,
//! base64, as `cosign sign-blob` writes it (`oci::signature::sign_blob`).
//!
//! [`stage`] adds both to a build's [`Pending`] artifacts, so they appear
//! with the artifacts or not at all; [`verify`] checks a directory: the
//! signature first, then every file it lists, each inside the directory.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use oci::keys::{PublicKey, SigningKey};
use oci::signature;

use crate::outputs::{Pending, build_of};

/// What follows NAME in the name of the digests' file.
pub const SUMS: &str = ".sha256";
/// What follows NAME in the name of their signature.
pub const SIGNATURE: &str = ".sha256.sig";
/// The most bytes either may have: a build lists a few dozen files.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SignedBuildError {
    #[error(
        "build name {0:?}: a signed build's name may hold no backslash or line break (sha256sum would escape it)"
    )]
    Name(String),
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds no signed build (no NAME{SUMS})", dir.display())]
    NoBuild { dir: PathBuf },
    #[error("{} holds several signed builds ({names}): choose one with --name", dir.display())]
    Several { dir: PathBuf, names: String },
    #[error("{}: not a signature of {} by {keys}: it {reason}", signature.display(), sums.display())]
    Signature {
        signature: PathBuf,
        sums: PathBuf,
        keys: String,
        reason: &'static str,
    },
    #[error("{}, line {line}: {reason}", sums.display())]
    Malformed {
        sums: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: {reason} (listed in {})", file.display(), sums.display())]
    File {
        file: PathBuf,
        sums: PathBuf,
        reason: String,
    },
}

/// Refuses a build name `sha256sum` would write escaped.
pub fn check_name(name: &str) -> Result<(), SignedBuildError> {
    match name.contains(['\\', '\n', '\r']) {
        true => Err(SignedBuildError::Name(name.into())),
        false => Ok(()),
    }
}

/// The text of `NAME.sha256`: `HEX  FILE` for each (name, digest), in the
/// order given.
pub fn render(files: &[(String, String)]) -> String {
    files
        .iter()
        .map(|(name, digest)| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            format!("{hex}  {name}\n")
        })
        .collect()
}

/// Adds `NAME.sha256`, listing every artifact staged in `pending`, and
/// `NAME.sha256.sig`, its signature by `key`, to the artifacts. Staged
/// last, they are renamed into place last: a build killed while its files
/// are renamed leaves new artifacts beside the old list, or a new list
/// beside the old signature, which [`verify`] refuses, never a pair it
/// accepts for files that are not there.
pub fn stage(pending: &mut Pending, name: &str, key: &SigningKey) -> io::Result<()> {
    let sums = render(&pending.digests()?);
    let signature = signature::sign_blob(key, sums.as_bytes());
    pending.write(&format!("{name}{SUMS}"), sums.as_bytes())?;
    pending.write(&format!("{name}{SIGNATURE}"), signature.as_bytes())
}

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBuild {
    /// The build's name.
    pub name: String,
    /// The name of the key whose signature verified.
    pub key: String,
    /// Each file listed and its digest (`sha256:HEX`), as listed.
    pub files: Vec<(String, String)>,
    /// Files of the build in the directory that are not listed (an
    /// earlier build's formats, say).
    pub unlisted: Vec<String>,
}

/// Checks the signed build `name` in `dir` (without a name: the only one
/// there): `NAME.sha256.sig` against `keys`, then each file `NAME.sha256`
/// lists against its digest. Every failure names its file.
pub fn verify(
    dir: &Path,
    name: Option<&str>,
    keys: &[PublicKey],
) -> Result<VerifiedBuild, SignedBuildError> {
    let name = match name {
        Some(name) => name.to_string(),
        None => only_build(dir)?,
    };
    let sums = dir.join(format!("{name}{SUMS}"));
    let signature_path = dir.join(format!("{name}{SIGNATURE}"));
    let read = |path: &Path| {
        let failed = |source| SignedBuildError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        fs::File::open(path)
            .and_then(|file| file.take(MAX_BYTES + 1).read_to_end(&mut bytes))
            .map_err(failed)?;
        if bytes.len() as u64 > MAX_BYTES {
            let message = format!("larger than {MAX_BYTES} bytes: not a build's digests");
            return Err(failed(io::Error::new(io::ErrorKind::InvalidData, message)));
        }
        Ok(bytes)
    };
    let text = read(&sums)?;
    let signature = String::from_utf8_lossy(&read(&signature_path)?).into_owned();
    let key = signature::verify_blob(keys, &text, &signature).map_err(|reason| {
        SignedBuildError::Signature {
            signature: signature_path.clone(),
            sums: sums.clone(),
            keys: oci::keys::names(keys),
            reason,
        }
    })?;
    let files = parse(&sums, &text)?;
    let root = dir
        .canonicalize()
        .map_err(|source| SignedBuildError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    for (file, expected) in &files {
        let path = dir.join(file);
        let refuse = |reason: String| SignedBuildError::File {
            file: path.clone(),
            sums: sums.clone(),
            reason,
        };
        let actual = digest_inside(&root, &path).map_err(refuse)?;
        if &actual != expected {
            return Err(refuse(format!("its digest is {actual}, not {expected}")));
        }
    }
    let listed: BTreeSet<&str> = files.iter().map(|(file, _)| file.as_str()).collect();
    let unlisted = names_in(dir)?
        .into_iter()
        .filter(|file| build_of(file).is_some_and(|(build, _)| build == name))
        .filter(|file| {
            !listed.contains(file.as_str())
                && *file != format!("{name}{SUMS}")
                && *file != format!("{name}{SIGNATURE}")
        })
        .collect();
    Ok(VerifiedBuild {
        name,
        key: key.name.clone(),
        files,
        unlisted,
    })
}

/// The digest of the regular file at `path`, which must be inside `root`
/// (canonical) once symbolic links are followed.
fn digest_inside(root: &Path, path: &Path) -> Result<String, String> {
    let real = path.canonicalize().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "it is missing".to_string(),
        _ => e.to_string(),
    })?;
    if !real.starts_with(root) {
        return Err(format!(
            "it is a symbolic link out of {}, to {}",
            root.display(),
            real.display()
        ));
    }
    if !real.is_file() {
        return Err("it is not a regular file".into());
    }
    crate::outputs::file_digest(&real).map_err(|e| e.to_string())
}

/// The entries of `NAME.sha256`: each line `HEX  FILE`, FILE relative and
/// staying inside the directory, none twice, at least one.
fn parse(sums: &Path, text: &[u8]) -> Result<Vec<(String, String)>, SignedBuildError> {
    let malformed = |line: usize, reason: String| SignedBuildError::Malformed {
        sums: sums.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(text).map_err(|_| malformed(1, "not UTF-8".into()))?;
    let Some(body) = text.strip_suffix('\n') else {
        return Err(malformed(
            text.lines().count().max(1),
            "no final line break".into(),
        ));
    };
    let mut files: Vec<(String, String)> = Vec::new();
    for (n, line) in body.split('\n').enumerate() {
        let n = n + 1;
        let (hex, file) = line
            .split_once("  ")
            .filter(|(hex, file)| {
                hex.len() == 64
                    && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    && !file.is_empty()
            })
            .ok_or_else(|| malformed(n, format!("{line:?} is not \"HEX  FILE\"")))?;
        let path = Path::new(file);
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(malformed(n, format!("{file:?} is outside the directory")));
        }
        if files.iter().any(|(listed, _)| listed == file) {
            return Err(malformed(n, format!("{file:?} is listed twice")));
        }
        files.push((file.to_string(), format!("sha256:{hex}")));
    }
    Ok(files)
}

/// The names of the regular files in `dir`, sorted; names that are not
/// UTF-8 and hidden files left out.
fn names_in(dir: &Path) -> Result<Vec<String>, SignedBuildError> {
    let failed = |source| SignedBuildError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if let (true, Ok(name)) = (regular, entry.file_name().into_string())
            && !name.starts_with('.')
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The name of the only signed build in `dir`.
fn only_build(dir: &Path) -> Result<String, SignedBuildError> {
    let builds: Vec<String> = names_in(dir)?
        .into_iter()
        .filter_map(|file| Some(file.strip_suffix(SUMS)?.to_string()))
        .filter(|name| !name.is_empty())
        .collect();
    match builds.as_slice() {
        [] => Err(SignedBuildError::NoBuild {
            dir: dir.to_path_buf(),
        }),
        [one] => Ok(one.clone()),
        _ => Err(SignedBuildError::Several {
            dir: dir.to_path_buf(),
            names: builds.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn lines_are_sha256sums_and_anything_else_is_refused_by_line() {
        let files = vec![
            ("a-kernel".to_string(), format!("sha256:{HEX}")),
            ("a.lock".to_string(), format!("sha256:{HEX}")),
        ];
        let text = render(&files);
        assert_eq!(text, format!("{HEX}  a-kernel\n{HEX}  a.lock\n"));
        let sums = Path::new("a.sha256");
        assert_eq!(parse(sums, text.as_bytes()).unwrap(), files);
        for (bad, line, reason) in [
            (format!("{HEX}  a\n{HEX} b\n"), 2, "is not \"HEX  FILE\""),
            (format!("{HEX}  a"), 1, "no final line break"),
            (format!("{}  a\n", HEX.to_uppercase()), 1, "is not"),
            (format!("{HEX}  \n"), 1, "is not"),
            (format!("{HEX}  ../a\n"), 1, "outside the directory"),
            (format!("{HEX}  /etc/passwd\n"), 1, "outside the directory"),
            (format!("{HEX}  x/../../a\n"), 1, "outside the directory"),
            (format!("{HEX}  a\n{HEX}  a\n"), 2, "listed twice"),
            ("\n".to_string(), 1, "is not"),
            (String::new(), 1, "no final line break"),
        ] {
            let error = parse(sums, bad.as_bytes()).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("a.sha256, line {line}: ")) && error.contains(reason),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn names_sha256sum_would_escape_are_refused() {
        assert!(check_name("host.v1").is_ok());
        for bad in ["a\\b", "a\nb", "a\rb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
