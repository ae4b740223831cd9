//! The crate arrows ARCHITECTURE.md promises never to draw, checked against
//! what cargo resolves (`cargo metadata`, the data `cargo tree` prints).
//!
//! - init depends on none of builder, oci, archive, media, qemu, serve (not
//!   even through another crate): PID 1 shares only the on-image contract.
//! - oci, archive, media, qemu and serve never depend on builder: libraries
//!   point downstream.
//! - Within builder, only the `run` command uses qemu.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Crate → crates it must never reach, directly or through others.
const NEVER: &[(&str, &[&str])] = &[
    (
        "init",
        &["builder", "oci", "archive", "media", "qemu", "serve"],
    ),
    (
        "metadata",
        &[
            "builder", "oci", "archive", "media", "qemu", "serve", "init",
        ],
    ),
    ("oci", &["builder"]),
    ("archive", &["builder"]),
    ("qemu", &["builder"]),
    ("media", &["builder"]),
    ("serve", &["builder"]),
];

/// The one place in builder that may name the qemu crate.
const QEMU_USER: &str = "builder/src/commands/run.rs";

/// Workspace crate → the workspace crates it depends on (normal, build and
/// dev dependencies alike).
pub fn workspace_graph(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata's output")?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut graph = BTreeMap::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default().to_string();
        let dependencies = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str())
            .filter(|d| members.contains(*d))
            .map(str::to_string)
            .collect();
        graph.insert(name, dependencies);
    }
    Ok(graph)
}

/// Every arrow of the graph that ARCHITECTURE.md says never exists.
pub fn forbidden(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, never) in NEVER {
        // Every crate reachable from `from`, with the path that reaches it.
        let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = vec![vec![from.to_string()]];
        while let Some(path) = queue.pop() {
            let last = path.last().expect("paths are not empty").clone();
            for next in graph.get(&last).into_iter().flatten() {
                if !paths.contains_key(next) && next != from {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    paths.insert(next.clone(), longer.clone());
                    queue.push(longer);
                }
            }
        }
        for target in *never {
            if let Some(path) = paths.get(*target) {
                found.push(path.join(" → "));
            }
        }
    }
    found
}

/// Files of builder other than the run command that name the qemu crate.
pub fn qemu_outside_run(root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![root.join("builder/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            if path.extension().is_some_and(|e| e == "rs") && relative != Path::new(QEMU_USER) {
                let text = std::fs::read_to_string(&path)?;
                if text.contains("qemu::") || text.contains("use qemu") {
                    found.push(relative.display().to_string());
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The check `cargo xtask arrows` runs, and the test below.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = forbidden(&workspace_graph(root)?);
    problems.extend(
        qemu_outside_run(root)?
            .into_iter()
            .map(|file| format!("{file} uses qemu; only {QEMU_USER} may")),
    );
    if !problems.is_empty() {
        bail!(
            "dependencies ARCHITECTURE.md forbids:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        graph
    }

    #[test]
    fn an_arrow_through_another_crate_is_found_with_its_path() {
        let found = forbidden(&graph(&[
            ("init", "contract"),
            ("contract", "archive"),
            ("oci", "archive"),
            ("builder", "oci"),
        ]));
        assert_eq!(found, ["init → contract → archive"]);
    }

    #[test]
    fn downstream_arrows_are_allowed() {
        let found = forbidden(&graph(&[
            ("builder", "oci"),
            ("builder", "archive"),
            ("oci", "archive"),
            ("init", "contract"),
            ("qemu-tests", "qemu"),
            ("qemu-tests", "builder"),
        ]));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn this_workspace_draws_no_forbidden_arrow() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check(root).unwrap();
    }
}
