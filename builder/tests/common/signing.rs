//! What the signing tests share: their prerequisites (visible skips, or
//! failures under CI=true), a registry holding the small images, keys made
//! by `berth key generate`, and the independent Python helper
//! `cosign_format.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fixtures::registry::Registry;

use super::{push_small_images, small_cache, stderr};

/// Whether `program ARGS` runs; in CI its absence is a failure, elsewhere
/// a visible skip.
pub fn have(program: &str, args: &[&str], package: &str) -> bool {
    let ran = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ran {
        let message = format!("{program} {args:?} fails (Debian: {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
    }
    ran
}

/// Whether Python with `cryptography` is there for [`helper`].
pub fn python() -> bool {
    have(
        "python3",
        &["-c", "import cryptography"],
        "python3-cryptography",
    )
}

/// A registry holding the three images of [`small_cache`] as `test/NAME:1`
/// (pushed with skopeo from the returned directory's cache), when
/// docker-registry, skopeo and the Python helper are there.
pub fn registry() -> Option<(Registry, tempfile::TempDir)> {
    if !have("docker-registry", &["--version"], "docker-registry")
        || !have("skopeo", &["--version"], "skopeo")
        || !python()
    {
        return None;
    }
    let registry = Registry::start().unwrap();
    let source = tempfile::tempdir().unwrap();
    let cache = small_cache(source.path());
    push_small_images(&cache, &registry);
    Some((registry, source))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The helper in Python, `cosign_format.py ARGS`, run in `dir`; its
/// standard output.
pub fn helper(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosign_format.py"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "helper {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `berth key generate ARGS` in `dir` (a command that takes no cache).
pub fn generate(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(["key", "generate"])
        .args(args)
        .current_dir(dir)
        .env_remove("BERTH_KEY_PASSWORD");
    command
}

/// `berth key generate -o NAME` in `dir`: NAME.key and NAME.pub.
pub fn key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = generate(dir, &["-o", name]).output().unwrap();
    assert!(out.status.success(), "key generate: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{name}.key\n{name}.pub\n"));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}
