//! `config.json` and `runtime.json` for one entry: YAML entry, image label and
//! image config in, LinuxKit's JSON out (docs/linuxkit-runtime.md).
//! Every snapshot was checked by hand against that note.

use builder::bundle::{Bundle, BundleError, IdMap, ImageDefaults};
use builder::spec::{self, Origin};
use contract::BundleKind;
use serde_json::Value;

const IMAGE: &str = "docker.io/example/app:v1";

/// An image config with something in every field LinuxKit reads.
const APP: &str = r#"{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["PATH=/usr/bin:/bin","HOME=/root"],"WorkingDir":"/srv","User":"1000"}"#;

/// The bundle of the last service in `definition`, as a build makes it: the
/// bundle holds its image's files itself.
fn build(definition: &str, label: &str, image_config: &str) -> Result<Bundle, BundleError> {
    let definition =
        spec::parse(definition, &Origin::from("test.yml")).unwrap_or_else(|e| panic!("{e}"));
    let entry = definition.services.last().expect("a service");
    let label = spec::parse_label(label, IMAGE).unwrap_or_else(|e| panic!("{e}"));
    let config: oci_spec::image::Config = serde_json::from_str(image_config).unwrap();
    let defaults = ImageDefaults::from_config(&config, Some(&label));
    let dir = BundleKind::Service.bundle_path(0, entry.name());
    let root = if Bundle::readonly(entry, &defaults) {
        format!("{dir}/rootfs")
    } else {
        format!("{dir}/lower")
    };
    Bundle::make(entry, &defaults, &IdMap::new(&definition), &dir, &root)
}

/// `entry` is one YAML entry, without the leading `- `.
fn service(entry: &str) -> String {
    let mut yaml = String::from("services:\n");
    for (i, line) in entry.lines().enumerate() {
        yaml.push_str(if i == 0 { "  - " } else { "    " });
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// `config.json` of `entry` with `label` on an image whose config is
/// `image_config`.
fn check(entry: &str, label: &str, image_config: &str) -> String {
    let bundle = build(&service(entry), label, image_config).unwrap_or_else(|e| panic!("{e}"));
    let config = text(bundle.config_json());
    // The same inputs give the same bytes (hash maps and sets inside).
    let again = build(&service(entry), label, image_config).unwrap();
    assert_eq!(config, text(again.config_json()));
    config
}

fn runtime(entry: &str, label: &str) -> String {
    let bundle = build(&service(entry), label, "{}").unwrap_or_else(|e| panic!("{e}"));
    text(bundle.runtime_json())
}

fn error(entry: &str, label: &str) -> String {
    match build(&service(entry), label, "{}") {
        Ok(_) => panic!("{entry} with label {label} made a bundle"),
        Err(e) => e.to_string(),
    }
}

/// A YAML entry on one line, for tables.
fn one_line(entry: &str) -> String {
    entry.replace('\n', "; ")
}

/// One line per case: the case, then the part of config.json at `pointer`,
/// compact.
fn table(cases: &[(&str, &str)], pointer: &str) -> String {
    let mut out = String::new();
    for (entry, label) in cases {
        let config: Value = serde_json::from_str(&check(entry, label, "{}")).unwrap();
        let part = config.pointer(pointer).cloned().unwrap_or(Value::Null);
        out.push_str(&format!("{} | {label}\n    => {part}\n", one_line(entry)));
    }
    out
}

#[test]
fn nothing_configured() {
    insta::assert_snapshot!(check("name: app\nimage: app", "", "{}"));
}

#[test]
fn nothing_configured_runtime_is_a_writable_overlay() {
    insta::assert_snapshot!(runtime("name: app\nimage: app", ""));
}

#[test]
fn label_alone() {
    // linuxkit/sysctl's label (docs/linuxkit-runtime.md §0.2).
    let label =
        r#"{"capabilities":["CAP_SYS_ADMIN","CAP_NET_ADMIN"],"pid":"host","readonly":true}"#;
    insta::assert_snapshot!(check("name: sysctl\nimage: sysctl", label, APP));
}

#[test]
fn yaml_overrides_label_and_empty_overrides_too() {
    let label = r#"{"capabilities":["CAP_SYS_ADMIN"],"pid":"host","net":"new","readonly":true,"env":["A=1"],"hostname":"fromlabel","sysctl":{"net.ipv4.ip_forward":"1"},"tmpfs":["/tmp"]}"#;
    let entry = "name: app\nimage: app\ncapabilities: [CAP_CHOWN]\npid: new\nreadonly: false\nenv: []\nhostname: \"\"\nsysctl: {}";
    insta::assert_snapshot!(check(entry, label, APP));
}

#[test]
fn binds_add_appends_to_label_binds() {
    let label = r#"{"binds":["/dev:/dev","/var:/var:rshared,rbind"]}"#;
    let entry = "name: app\nimage: app\nbinds.add:\n  - /etc/app:/etc/app:ro\n  - /dev/mapper:/dev";
    insta::assert_snapshot!(check(entry, label, "{}"));
}

#[test]
fn binds_replace_label_binds_and_ignore_binds_add() {
    let label = r#"{"binds":["/dev:/dev"]}"#;
    let entry = "name: app\nimage: app\nbinds: [\"/run:/run\"]\nbinds.add: [\"/etc:/etc\"]";
    insta::assert_snapshot!(table(&[(entry, label)], "/mounts"));
}

#[test]
fn capabilities() {
    let cases = [
        // capabilities.add goes after the label's; names are normalised and
        // repeats dropped from effective.
        (
            "name: a\nimage: a\ncapabilities.add: [sys_admin, CAP_NET_ADMIN]",
            r#"{"capabilities":["CAP_NET_ADMIN","CAP_SYSLOG"]}"#,
        ),
        // The entry's own list replaces the label's and ignores its .add.
        (
            "name: a\nimage: a\ncapabilities: [CAP_KILL]\ncapabilities.add: [CAP_BPF]",
            r#"{"capabilities":["CAP_NET_ADMIN"]}"#,
        ),
        // Nothing anywhere: no capabilities at all.
        ("name: a\nimage: a", ""),
        (
            "name: a\nimage: a\ncapabilities: [none]",
            r#"{"capabilities":["all"]}"#,
        ),
        // all with more: LinuxKit rejects it; berth reads it as all.
        (
            "name: a\nimage: a\ncapabilities.add: [CAP_KILL]",
            r#"{"capabilities":["all"]}"#,
        ),
        (
            "name: a\nimage: a\ncapabilities: [CAP_CHOWN]\nambient: [CAP_NET_RAW]",
            "",
        ),
    ];
    insta::assert_snapshot!(table(&cases, "/process/capabilities"));
}

#[test]
fn capabilities_all() {
    insta::assert_snapshot!(check(
        "name: getty\nimage: getty",
        r#"{"capabilities":["all"],"pid":"host"}"#,
        "{}"
    ));
}

#[test]
fn readonly() {
    insta::assert_snapshot!(check("name: app\nimage: app\nreadonly: true", "", "{}"));
}

#[test]
fn readonly_runtime_binds_the_rootfs() {
    insta::assert_snapshot!(runtime("name: app\nimage: app", r#"{"readonly":true}"#));
}

#[test]
fn namespaces() {
    let cases = [
        ("name: a\nimage: a", ""),
        ("name: a\nimage: a\nnet: host", ""),
        ("name: a\nimage: a\nnet: new", ""),
        ("name: a\nimage: a\nnet: none", ""),
        ("name: a\nimage: a\nnet: /run/netns/wg", ""),
        ("name: a\nimage: a\npid: host", ""),
        ("name: a\nimage: a", r#"{"pid":"host"}"#),
        ("name: a\nimage: a\npid: new", r#"{"pid":"host"}"#),
        ("name: a\nimage: a\nipc: new\nuts: new\nuserns: new", ""),
        (
            "name: a\nimage: a\nipc: /run/ipc\nuts: /run/uts\nuserns: /run/user\npid: /run/pid",
            "",
        ),
        // An empty string cannot clear the label's value.
        (
            "name: a\nimage: a\nnet: \"\"",
            r#"{"net":"new","ipc":"root"}"#,
        ),
    ];
    insta::assert_snapshot!(table(&cases, "/linux/namespaces"));
}

#[test]
fn rlimits() {
    let entry = r#"name: a
image: a
rlimits: ["nofile,1024,4096", "RLIMIT_CORE,unlimited,unlimited", " memlock , 1 , 2 "]"#;
    let label = r#"{"rlimits":["nproc,1,1"]}"#;
    insta::assert_snapshot!(table(
        &[(entry, label), ("name: a\nimage: a", label)],
        "/process/rlimits"
    ));
}

#[test]
fn devices() {
    let entry = r#"name: getty
image: getty
devices:
  - path: /dev/tty0
    type: c
    major: 4
    minor: 0
    mode: "0666"
  - path: all
    type: b
resources:
  devices:
    - allow: false
      access: rwm
  memory:
    limit: 1048576"#;
    insta::assert_snapshot!(check(entry, "", "{}"));
}

#[test]
fn named_ids_take_the_numbers_of_entries() {
    let definition = r#"onboot:
  - name: first
    image: x
  - name: second
    image: x
onshutdown:
  - name: last
    image: x
services:
  - name: daemon
    image: x
  - name: app
    image: x
    uid: daemon
    gid: first
    additionalGids: [last, root, 7, app]
"#;
    let bundle = build(definition, "", "{}").unwrap();
    let config: Value = serde_json::from_slice(&bundle.config_json()).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&config["process"]["user"]).unwrap());
}

#[test]
fn runtime_merges_each_key() {
    let label = r#"{"runtime":{"mkdir":["/var/lib/app"],"cgroups":["app"],"bindNS":{"net":"/run/netns/app","ipc":"/run/ipc/app"},"namespace":"fromlabel"}}"#;
    let entry = r#"name: app
image: app
runtime:
  mounts:
    - destination: /var/lib/app
      type: bind
      source: /var/lib/app
      options: [rbind]
  interfaces:
    - name: eth1
      add: veth
      peer: veth-app
      createInRoot: true
  bindNS:
    net: /run/netns/other
    uts: /run/uts/app
  mkdir: []"#;
    insta::assert_snapshot!(runtime(entry, label));
}

#[test]
fn command_env_and_cwd() {
    let table = |cases: &[(&str, &str)]| {
        let mut out = String::new();
        for (entry, label) in cases {
            let config: Value = serde_json::from_str(&check(entry, label, APP)).unwrap();
            let process = &config["process"];
            out.push_str(&format!(
                "{} | {label}\n    args {}\n    env {}\n    cwd {}\n",
                one_line(entry),
                process["args"],
                process["env"],
                process["cwd"]
            ));
        }
        out
    };
    insta::assert_snapshot!(table(&[
        ("name: a\nimage: a", ""),
        (
            "name: a\nimage: a",
            r#"{"command":["/bin/label"],"env":["L=1"],"cwd":"/label"}"#
        ),
        (
            "name: a\nimage: a\ncommand: [/bin/yaml, -v]\nenv: [Y=1]\ncwd: /yaml",
            r#"{"command":["/bin/label"],"env":["L=1"],"cwd":"/label"}"#
        ),
        ("name: a\nimage: a\ncommand: []\nenv: []\ncwd: \"\"", ""),
    ]));
}

#[test]
fn everything_else() {
    let entry = r#"name: app
image: app
hostname: app
tmpfs: [/tmp, "/run:mode=755,size=1m"]
mounts:
  - source: proc
  - type: mqueue
  - destination: /dev
    options: [nosuid]
  - destination: /data
    type: ext4
    source: /dev/sda1
sysctl:
  net.ipv4.ip_forward: 1
  kernel.dmesg_restrict: true
  vm.overcommit_memory: "2"
annotations:
  org.example/b: "<b & c>"
  org.example/a: a
uidMappings:
  - containerID: 0
    hostID: 100000
    size: 65536
gidMappings:
  - containerID: 0
    hostID: 100000
    size: 65536
maskedPaths: [/proc/kcore]
readonlyPaths: [/proc/sys]
noNewPrivileges: true
oomScoreAdj: -800
rootfsPropagation: shared
cgroupsPath: /app
resources:
  pids:
    limit: 100
  cpu:
    shares: 512
    cpus: "0-1""#;
    insta::assert_snapshot!(check(entry, "", "{}"));
}

#[test]
fn errors() {
    let cases = [
        ("name: a\nimage: a\nuid: nobody", ""),
        ("name: a\nimage: a", r#"{"gid":"ghost"}"#),
        ("name: a\nimage: a\nrlimits: [\"nofile,1024\"]", ""),
        ("name: a\nimage: a", r#"{"rlimits":["nofiles,1,2"]}"#),
        ("name: a\nimage: a", r#"{"capabilities":["CAP_FLY"]}"#),
        ("name: a\nimage: a\ntmpfs: [\"/a:b:c\"]", ""),
        ("name: a\nimage: a\ndevices: [{path: /dev/x, type: c}]", ""),
        ("name: a\nimage: a\nmounts: [{destination: /x}]", ""),
        ("name: a\nimage: a\nmounts: [{type: tmpfs}]", ""),
        ("name: a\nimage: a", r#"{"ipc":"none"}"#),
        ("name: a\nimage: a", r#"{"binds":["/a"]}"#),
        ("name: a\nimage: a\nseccomp: no-such-profile.json", ""),
    ];
    let mut out = String::new();
    for (entry, label) in cases {
        let message = error(entry, label);
        out.push_str(&format!(
            "{} | {label}\n    => {message}\n",
            one_line(entry)
        ));
    }
    insta::assert_snapshot!(out);
}

/// `seccomp:` (docs/compatibility.md): Docker's default unless the entry
/// has every capability or opts out; a file in Docker's format, relative
/// to the YAML, turned into the OCI form for the entry's capabilities.
#[test]
fn seccomp() {
    let profile = |entry: &str, label: &str| -> Value {
        let bundle = build(&service(entry), label, "{}").unwrap_or_else(|e| panic!("{e}"));
        let config: Value = serde_json::from_slice(&bundle.config_json()).unwrap();
        config["linux"]["seccomp"].clone()
    };
    let names = |profile: &Value| -> Vec<String> {
        let mut names: Vec<String> = profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    // The default follows the capabilities.
    let plain = profile("name: a\nimage: a", "");
    assert_eq!(plain["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(!names(&plain).contains(&"unshare".to_string()));
    let admin = profile("name: a\nimage: a\ncapabilities: [CAP_SYS_ADMIN]", "");
    assert!(names(&admin).contains(&"unshare".to_string()));
    // No profile: every capability, or opted out in the YAML or the label.
    assert_eq!(
        profile("name: a\nimage: a\ncapabilities: [all]", ""),
        Value::Null
    );
    assert_eq!(
        profile("name: a\nimage: a\nseccomp: unconfined", ""),
        Value::Null
    );
    assert_eq!(
        profile("name: a\nimage: a", r#"{"seccomp":"unconfined"}"#),
        Value::Null
    );
    // The YAML wins over the label.
    let back = profile(
        "name: a\nimage: a\nseccomp: default",
        r#"{"seccomp":"unconfined"}"#,
    );
    assert_eq!(back, plain);

    // A file, with a rule for a capability the entry lacks.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.json");
    std::fs::write(
        &file,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_BOOT"]}},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let entry = format!("name: a\nimage: a\nseccomp: {}", file.display());
    insta::assert_snapshot!(text(
        build(&service(&entry), "", "{}").unwrap().config_json()
    ));
}
