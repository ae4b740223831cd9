//! Bad definitions through the `berth` binary: each error names file, line,
//! column and key path, and the exit status is 1.

mod common;

use common::{berth, stderr};

fn check(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yml"), yaml).unwrap();
    let validated = berth(&["validate", "bad.yml"], dir.path());
    let built = berth(&["build", "--cache", "cache", "bad.yml"], dir.path());
    for (command, out) in [("validate", &validated), ("build", &built)] {
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(out));
    }
    assert!(!dir.path().join("bad-initrd.img").exists());
    stderr(&validated)
}

#[test]
fn malformed_yaml() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: \"b\n  - name: c\n"
    ));
}

#[test]
fn unknown_key() {
    insta::assert_snapshot!(check(
        "kernel:\n  image: k\nservices:\n  - name: a\n    image: b\n    capabilitys: [all]\n"
    ));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(check(
        "onboot:\n  - name: a\n    image: b\n    readonly: maybe\n    oomScoreAdj: high\n"
    ));
}

#[test]
fn duplicate_service_name() {
    insta::assert_snapshot!(check(
        "services:\n  - name: getty\n    image: g\n  - name: sshd\n    image: s\n  - name: getty\n    image: g2\n"
    ));
}

#[test]
fn several_semantic_problems_at_once() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: Bad/Name\n    capabilities: [CAP_FLY]\n    rlimits: [nofile,1]\n    binds: [/a]\nfiles:\n  - path: etc/x\n    contents: y\n    mode: \"0999\"\n"
    ));
}

#[test]
fn merged_files_report_each_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        "services:\n  - name: x\n    image: i\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        "services:\n  - name: x\n    image: j\n",
    )
    .unwrap();
    let out = berth(&["validate", "a.yml", "b.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "berth: b.yml:2:11: services[1].name: duplicate service name \"x\": already used at a.yml:2:11\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth(&["build", "-f", "floppy", "x.yml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown format \"floppy\""));
}
