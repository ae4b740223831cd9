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

// Paths and values that reach init or the kernel at boot (issue #15): each
// refused by validation, named by file, line and key.

#[test]
fn mount_paths_that_leave_their_place() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    mounts:\n      - {destination: ../../x, type: bind, source: /x}\n      - {destination: /y, type: bind, source: /a/../../etc}\n      - {destination: /z, type: overlay, source: overlay, options: [\"lowerdir=/l:../up\", \"upperdir=/u\", \"workdir=w\"]}\n"
    ));
}

#[test]
fn bind_and_tmpfs_paths_that_leave_their_place() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    binds: [\"/a:/b/../../etc\", \"/a/./b:/c\", \"../x:/d\"]\n    binds.add: [\"/a:/e//f\"]\n    tmpfs: [\"/t/..\"]\n"
    ));
}

#[test]
fn runtime_mkdir_outside_the_root() {
    insta::assert_snapshot!(check(
        "onboot:\n  - name: a\n    image: b\n    runtime:\n      mkdir: [../../../../tmp/x, /var/../../x, /ok]\n"
    ));
}

#[test]
fn runtime_cgroups_outside_the_cgroup_tree() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    cgroupsPath: /berth/../../x\n    runtime:\n      cgroups: [podruntime/../../../x, ok/fine]\n"
    ));
}

#[test]
fn a_cgroups_path_at_the_root_of_the_cgroup_tree() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    cgroupsPath: /\n  - name: c\n    image: b\n    cgroupsPath: //\n  - name: d\n    image: b\n    cgroupsPath: \"\"\n"
    ));
}

#[test]
fn runtime_bind_namespaces_outside_the_root() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    net: /run/netns/../../x\n    runtime:\n      bindNS: {net: ../../x, pid: \"\", uts: /run/../x}\n"
    ));
}

#[test]
fn runtime_mounts_outside_the_root() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    runtime:\n      mounts:\n        - {type: tmpfs, source: tmpfs}\n        - {destination: /x/../../y, type: bind, source: ../z, options: [rbind]}\n"
    ));
}

#[test]
fn nul_bytes_in_strings() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    command: [\"/bin/sh\", \"-c\", \"echo \\0 rm\"]\n    env: [\"A=b\\0c\"]\n    hostname: \"h\\0st\"\n    annotations: {k: \"v\\0\"}\n    sysctl: {\"net.ipv4\\0.x\": 1}\n    cwd: \"/\\0\"\n"
    ));
}

#[test]
fn numbers_outside_the_kernels_ranges() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    oomScoreAdj: 5000\n    uid: 4294967295\n    uidMappings: [{containerID: 0, hostID: 4294967295, size: 2}]\n    gidMappings: [{containerID: 4294967290, hostID: 0, size: 10}, {containerID: 0, hostID: 0, size: 0}]\n    devices: [{path: /dev/x, type: c, major: 4096, minor: -1, mode: \"0600\"}]\n    hostname: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
    ));
}

#[test]
fn other_paths_init_and_the_runtime_act_on() {
    insta::assert_snapshot!(check(
        "services:\n  - name: a\n    image: b\n    cwd: work\n    maskedPaths: [/proc/../etc]\n    readonlyPaths: [sys]\n    devices: [{path: dev/x, type: c, major: 1, minor: 3, mode: \"0600\"}]\n    sysctl: {\"net..x\": 1, \".x\": 2, \"x.\": 3}\n"
    ));
}
