//! The one recipe for berth's static binaries (PID 1 first of all): cargo
//! with the workspace's `static` profile, `-C target-feature=+crt-static`,
//! the explicit `x86_64-unknown-linux-gnu` target (without it, cargo would
//! apply the flag to build scripts and proc macros too, which cannot be
//! static), in a target directory of its own, `target-static/`, so the
//! static flags never invalidate the ordinary build.
//!
//! This crate only says how: it returns the command and where the binary
//! will be. Running it, and reporting a failure, is the caller's business
//! (the builder's `pkg` runs it through its one runner of external
//! programs; init's test runs it directly). It depends on nothing in the
//! workspace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target static binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile, defined in the workspace's `Cargo.toml`.
pub const PROFILE: &str = "static";
/// The target directory, relative to the workspace.
pub const TARGET_DIR: &str = "target-static";
/// The flags that make the C runtime static.
pub const RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// A static build of one binary: the cargo command, not yet run, and the
/// path the binary has once it has succeeded.
#[derive(Debug)]
pub struct StaticBuild {
    pub command: Command,
    pub binary: PathBuf,
}

/// The static build of `binary` of the package `package` of the cargo
/// workspace at `workspace`. Cargo is `$CARGO` when set (as under cargo
/// itself), else `cargo` from `PATH`.
pub fn cargo_build(workspace: &Path, package: &str, binary: &str) -> StaticBuild {
    let target_dir = workspace.join(TARGET_DIR);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .args(["build", "--profile", PROFILE, "--quiet"])
        .args(["--package", package, "--bin", binary])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .current_dir(workspace);
    StaticBuild {
        command,
        binary: target_dir.join(TARGET).join(PROFILE).join(binary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_names_profile_target_flags_and_where_the_binary_lands() {
        let build = cargo_build(Path::new("/ws"), "init", "init");
        let args: Vec<String> = build
            .command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "build",
                "--profile",
                "static",
                "--quiet",
                "--package",
                "init",
                "--bin",
                "init",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
                "/ws/target-static",
            ]
        );
        let rustflags = build
            .command
            .get_envs()
            .find(|(key, _)| *key == "RUSTFLAGS")
            .and_then(|(_, value)| value);
        assert_eq!(rustflags, Some("-C target-feature=+crt-static".as_ref()));
        assert_eq!(
            build.binary,
            Path::new("/ws/target-static/x86_64-unknown-linux-gnu/static/init")
        );
    }
}
