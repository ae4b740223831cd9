//! Every LinuxKit YAML file in ../shared/compat/linuxkit validates, except
//! those listed in tests/compat-exceptions.txt with the reason LinuxKit
//! itself rejects them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use builder::spec::{self, Origin};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat/linuxkit")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml") {
            out.push(path);
        }
    }
}

fn exceptions() -> BTreeMap<String, String> {
    let text = include_str!("compat-exceptions.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, reason) = l.split_once(": ").expect("FILE: REASON");
            (file.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}

#[test]
fn every_linuxkit_yaml_validates() {
    let root = corpus();
    assert!(
        root.is_dir(),
        "the LinuxKit corpus is missing at {}: clone this repository beside shared/",
        root.display()
    );
    let mut files = vec![root.join("linuxkit.yml")];
    yaml_files(&root.join("examples"), &mut files);
    let mut cases = Vec::new();
    yaml_files(&root.join("test/cases"), &mut cases);
    files.extend(cases.into_iter().filter(|p| p.ends_with("test.yml")));
    assert!(files.len() > 100, "only {} files found", files.len());

    let exceptions = exceptions();
    let mut failures = Vec::new();
    let mut rejected = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let origin: Origin = name.as_str().into();
        let result = spec::parse(&text, &origin).and_then(|d| spec::validate(&d));
        match (result, exceptions.contains_key(&name)) {
            (Ok(()), false) => {}
            (Err(e), false) => failures.push(e.to_string()),
            (Err(_), true) => rejected.push(name),
            (Ok(()), true) => {
                failures.push(format!("{name}: listed as an exception but validates"))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        rejected.len(),
        exceptions.len(),
        "an exception names a file that does not exist"
    );
    eprintln!(
        "{} files validated, {} known rejections",
        files.len() - rejected.len(),
        rejected.len()
    );
}
