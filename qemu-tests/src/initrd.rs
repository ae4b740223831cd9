//! Looking inside an initrd with the real tools (`gzip`/`zstd` and GNU
//! `cpio`), not with berth's own code, so a test checks berth against an
//! independent reader; and the `inspect` checks the boot cases declare.
//!
//! Only the first cpio archive of an initrd is read: berth writes one.
//! A case may add a second ([`append`]), as a boot loader concatenates
//! initrds, to change what berth built (a broken bundle).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The programs this module runs, for skip checks.
pub const TOOLS: &[&str] = &["cpio", "gzip"];

/// The entry names of the initrd, normalised: no leading `./` or `/`, no
/// trailing `/`.
pub fn list(initrd: &Path) -> Result<Vec<String>> {
    let output = cpio(initrd, &["-t", "--quiet"])?;
    Ok(String::from_utf8_lossy(&output)
        .lines()
        .map(normalise)
        .filter(|name| !name.is_empty())
        .collect())
}

/// The contents of the regular file `path` (a normalised name from
/// [`list`]) in the initrd.
pub fn read(initrd: &Path, path: &str) -> Result<Vec<u8>> {
    // cpio matches the name as stored, which may carry a `./` prefix.
    let output = cpio(initrd, &["-t", "--quiet"])?;
    let stored = String::from_utf8_lossy(&output)
        .lines()
        .find(|name| normalise(name) == path)
        .map(str::to_string)
        .with_context(|| format!("{path} is not in {}", initrd.display()))?;
    cpio(
        initrd,
        &["-i", "--to-stdout", "--quiet", &glob_escape(&stored)],
    )
}

/// Appends the regular files under `dir`, named by their paths relative to
/// it and owned by root, to `initrd` as a second, uncompressed newc archive
/// written by GNU `cpio`. The kernel unpacks the archives in order, a later
/// file replacing an earlier one; it looks for an archive's magic only at
/// a multiple of 4 bytes and skips zeros in between, hence the padding.
pub fn append(initrd: &Path, dir: &Path) -> Result<()> {
    use std::io::Write;
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| format!("{}", next.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cpio -o")?;
    cpio.stdin
        .take()
        .context("cpio stdin")?
        .write_all(format!("{}\n", files.join("\n")).as_bytes())?;
    let archive = cpio.wait_with_output().context("running cpio -o")?;
    if !archive.status.success() {
        bail!(
            "cpio -o in {} failed ({}): {}",
            dir.display(),
            archive.status,
            String::from_utf8_lossy(&archive.stderr).trim()
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(initrd)
        .with_context(|| format!("opening {}", initrd.display()))?;
    let length = file.metadata()?.len();
    let padding = vec![0u8; ((4 - length % 4) % 4) as usize];
    file.write_all(&[padding, archive.stdout].concat())
        .with_context(|| format!("appending to {}", initrd.display()))
}

fn normalise(name: &str) -> String {
    let name = name.trim_start_matches("./").trim_start_matches('/');
    name.trim_end_matches('/').to_string()
}

fn glob_escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Runs `cpio ARGS` on the initrd, decompressed by the tool its magic
/// number names.
fn cpio(initrd: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut file =
            std::fs::File::open(initrd).with_context(|| format!("opening {}", initrd.display()))?;
        file.read_exact(&mut magic)
            .with_context(|| format!("reading {}", initrd.display()))?;
    }
    let decompressor = match magic {
        [0x1f, 0x8b, _, _] => Some("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd] => Some("zstd"),
        _ => None,
    };
    let shown = format!("cpio {}", args.join(" "));
    let cpio_stdin = match decompressor {
        Some(tool) => {
            let mut decompress = Command::new(tool)
                .arg("-dc")
                .arg(initrd)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {tool} -dc {}", initrd.display()))?;
            let stdout = decompress.stdout.take().context("decompressor stdout")?;
            let output = Command::new("cpio")
                .args(args)
                .stdin(stdout)
                .output()
                .with_context(|| format!("starting {shown}"))?;
            let status = decompress
                .wait()
                .with_context(|| format!("waiting for {tool}"))?;
            if !status.success() {
                bail!("{tool} -dc {} failed ({status})", initrd.display());
            }
            output
        }
        None => Command::new("cpio")
            .args(args)
            .stdin(
                std::fs::File::open(initrd)
                    .with_context(|| format!("opening {}", initrd.display()))?,
            )
            .output()
            .with_context(|| format!("starting {shown}"))?,
    };
    if !cpio_stdin.status.success() {
        bail!(
            "{shown} on {} failed ({}): {}",
            initrd.display(),
            cpio_stdin.status,
            String::from_utf8_lossy(&cpio_stdin.stderr).trim()
        );
    }
    Ok(cpio_stdin.stdout)
}

/// One line of a case's `inspect` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `has PATH`: an entry named PATH; `has DIR/` (trailing slash): some
    /// entry below DIR.
    Has(String),
    /// `capability CONFIG CAP`: the OCI runtime config at CONFIG grants CAP
    /// in its bounding set.
    Capability { config: String, capability: String },
    /// `bind CONFIG SOURCE:DESTINATION`: the OCI runtime config at CONFIG
    /// bind-mounts SOURCE at DESTINATION.
    Bind {
        config: String,
        source: String,
        destination: String,
    },
    /// `same PATH FILE`: PATH in the initrd has the bytes of FILE, a path
    /// relative to the workspace (a binary built from this tree).
    Same { path: String, file: String },
}

/// Parses an `inspect` file: one check per line, `#` comments and blank
/// lines ignored.
pub fn parse_checks(text: &str) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let check = match words.as_slice() {
            ["has", path] => Check::Has(path.trim_start_matches('/').to_string()),
            ["same", path, file] => Check::Same {
                path: path.trim_start_matches('/').to_string(),
                file: file.to_string(),
            },
            ["capability", config, capability] => Check::Capability {
                config: config.to_string(),
                capability: capability.to_string(),
            },
            ["bind", config, mount] => {
                let (source, destination) = mount
                    .split_once(':')
                    .with_context(|| format!("line {}: bind needs SOURCE:DESTINATION", n + 1))?;
                Check::Bind {
                    config: config.to_string(),
                    source: source.to_string(),
                    destination: destination.to_string(),
                }
            }
            _ => bail!(
                "line {}: expected `has PATH`, `same PATH FILE`, `capability CONFIG CAP` or `bind CONFIG SRC:DST`, found {line:?}",
                n + 1
            ),
        };
        checks.push(check);
    }
    Ok(checks)
}

/// Runs `checks` against the initrd; the error lists every check that
/// failed.
pub fn inspect(initrd: &Path, checks: &[Check], workspace: &Path) -> Result<()> {
    let names = list(initrd)?;
    let mut failures = Vec::new();
    for check in checks {
        if let Err(error) = run_check(initrd, &names, check, workspace) {
            failures.push(format!("{error:#}"));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} checks failed on {}:\n  {}",
            failures.len(),
            checks.len(),
            initrd.display(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn run_check(initrd: &Path, names: &[String], check: &Check, workspace: &Path) -> Result<()> {
    match check {
        Check::Same { path, file } => {
            let want = std::fs::read(workspace.join(file))
                .with_context(|| format!("reading {file} in the workspace"))?;
            if read(initrd, path)? != want {
                bail!("{path} in the initrd differs from {file}");
            }
        }
        Check::Has(path) => {
            let found = match path.strip_suffix('/') {
                Some(dir) => names
                    .iter()
                    .any(|name| name.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))),
                None => names.iter().any(|name| name == path),
            };
            if !found {
                bail!("no {path} in the initrd");
            }
        }
        Check::Capability { config, capability } => {
            let json = read_json(initrd, config)?;
            let bounding = json
                .pointer("/process/capabilities/bounding")
                .and_then(|b| b.as_array())
                .with_context(|| format!("{config} has no process.capabilities.bounding"))?;
            if !bounding.iter().any(|c| c == capability.as_str()) {
                bail!("{config} does not grant {capability}: bounding set is {bounding:?}");
            }
        }
        Check::Bind {
            config,
            source,
            destination,
        } => {
            let json = read_json(initrd, config)?;
            let mounts = json
                .get("mounts")
                .and_then(|m| m.as_array())
                .with_context(|| format!("{config} has no mounts"))?;
            let found = mounts.iter().any(|mount| {
                let options = mount.get("options").and_then(|o| o.as_array());
                mount.get("source").is_some_and(|s| s == source.as_str())
                    && mount
                        .get("destination")
                        .is_some_and(|d| d == destination.as_str())
                    && options.is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
            });
            if !found {
                bail!("{config} does not bind {source} at {destination}: mounts are {mounts:?}");
            }
        }
    }
    Ok(())
}

fn read_json(initrd: &Path, path: &str) -> Result<serde_json::Value> {
    let bytes = read(initrd, path)?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {path} from the initrd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_parsed() {
        let checks = parse_checks(
            "# comment\nhas /init\nhas lib/modules/\n\
             capability c.json CAP_SYS_ADMIN\nbind c.json /a:/b\n",
        )
        .unwrap();
        assert_eq!(
            checks,
            [
                Check::Has("init".into()),
                Check::Has("lib/modules/".into()),
                Check::Capability {
                    config: "c.json".into(),
                    capability: "CAP_SYS_ADMIN".into()
                },
                Check::Bind {
                    config: "c.json".into(),
                    source: "/a".into(),
                    destination: "/b".into()
                },
            ]
        );
        let error = parse_checks("has\n").unwrap_err().to_string();
        assert!(error.starts_with("line 1:"), "{error}");
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalise("./bin/"), "bin");
        assert_eq!(normalise("/init"), "init");
        assert_eq!(glob_escape("a[1]*"), r"a\[1\]\*");
    }

    /// Lists and reads an archive written by the real cpio, gzip-compressed.
    #[test]
    fn reads_a_gzip_cpio() {
        if TOOLS.iter().any(|tool| qemu::find_program(tool).is_none()) {
            assert!(!crate::ci(), "{TOOLS:?} missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("containers/x")).unwrap();
        std::fs::write(
            tree.join("containers/x/config.json"),
            r#"{"process":{"capabilities":{"bounding":["CAP_SYS_ADMIN"]}},
                "mounts":[{"source":"/etc/resolv.conf","destination":"/etc/resolv.conf","options":["rbind","rw"]}]}"#,
        )
        .unwrap();
        let initrd = dir.path().join("initrd.img");
        let script = format!(
            "set -euo pipefail; cd {}; find . | sort | cpio -o -H newc --quiet | gzip > {}",
            tree.display(),
            initrd.display()
        );
        let status = Command::new("bash").arg("-c").arg(script).status().unwrap();
        assert!(status.success());
        let names = list(&initrd).unwrap();
        assert!(
            names.contains(&"containers/x/config.json".to_string()),
            "{names:?}"
        );
        std::fs::write(
            dir.path().join("copy.json"),
            std::fs::read(tree.join("containers/x/config.json")).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("other"), "other").unwrap();
        let checks = parse_checks(
            "has containers/x/config.json\nhas containers/\n\
             capability containers/x/config.json CAP_SYS_ADMIN\n\
             bind containers/x/config.json /etc/resolv.conf:/etc/resolv.conf\n\
             same containers/x/config.json copy.json\n",
        )
        .unwrap();
        inspect(&initrd, &checks, dir.path()).unwrap();
        let error = inspect(&initrd, &[Check::Has("nope".into())], dir.path()).unwrap_err();
        assert!(error.to_string().contains("no nope"), "{error}");
        let same = [Check::Same {
            path: "containers/x/config.json".into(),
            file: "other".into(),
        }];
        let error = inspect(&initrd, &same, dir.path()).unwrap_err();
        assert!(error.to_string().contains("differs from other"), "{error}");
    }
}
