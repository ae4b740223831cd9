//! What several modules' tests share: running a test again as root in
//! private namespaces, and skipping (visibly, and never in CI) when a
//! prerequisite is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = "BERTH_TEST_NAMESPACE_ROOT";

/// Inside the namespaces: the temporary root the outer test made.
pub fn namespace_root() -> Option<PathBuf> {
    std::env::var_os(ROOT).map(PathBuf::from)
}

/// Runs the test `name` again under `unshare FLAGS --propagation private`,
/// with `root` for [`namespace_root`]. `None` (a visible skip) when not
/// root or without unshare, a failure in CI.
pub fn in_private_namespaces(name: &str, flags: &[&str], root: &Path) -> Option<Output> {
    let out = Command::new("unshare")
        .args(flags)
        .args(["--propagation", "private", "--"])
        .arg(std::env::current_exe().ok()?)
        .args(["--exact", name, "--nocapture"])
        .env(ROOT, root)
        .output();
    match out {
        Ok(out) if rustix::process::geteuid().is_root() => {
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(out)
        }
        other => {
            skip(&format!("mounting needs root and unshare ({other:?})"));
            None
        }
    }
}

/// A missing prerequisite: a visible skip, a failure in CI.
pub fn skip(why: &str) {
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{why}");
    eprintln!("skipped: {why}");
}
