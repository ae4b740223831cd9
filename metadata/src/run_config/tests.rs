use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::found::{NetworkConfig, Source};

fn found(user_data: Option<&str>) -> Found {
    Found {
        source: Source::Ec2,
        origin: "http://169.254.169.254".into(),
        metadata: Metadata {
            instance_id: Some("i-0123456789abcdef0".into()),
            hostname: Some("ip-10-0-0-5.ec2.internal".into()),
            local_hostname: Some("ip-10-0-0-5.ec2.internal".into()),
            public_keys: vec!["ssh-ed25519 AAAA one".into(), "ssh-rsa BBBB two".into()],
            local_ipv4: Some("10.0.0.5".into()),
            public_ipv4: None,
            availability_zone: Some("eu-west-1a".into()),
            instance_type: Some("t3.micro".into()),
        },
        user_data: user_data.map(|u| u.as_bytes().to_vec()),
        vendor_data: None,
        network: None,
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mode(dir: &Path, name: &str) -> u32 {
    std::fs::symlink_metadata(dir.join(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every file below `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.push(format!("{rel}/"));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn linuxkit_and_cloud_init_names_for_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &found(Some("#cloud-config\nhostname: x\n")));
    assert_eq!(
        listing(dir.path()),
        [
            "availability-zone",
            "availability_zone",
            "hostname",
            "instance-id",
            "instance-type",
            "instance_id",
            "instance_type",
            "local-hostname",
            "local-ipv4",
            "local_hostname",
            "local_ipv4",
            "provider",
            "ssh/",
            "ssh/authorized_keys",
            "userdata",
        ]
    );
    assert_eq!(read(dir.path(), "provider"), "aws");
    assert_eq!(read(dir.path(), "instance_id"), "i-0123456789abcdef0");
    assert_eq!(read(dir.path(), "instance-id"), "i-0123456789abcdef0");
    assert_eq!(read(dir.path(), "availability-zone"), "eu-west-1a");
    assert_eq!(
        read(dir.path(), "ssh/authorized_keys"),
        "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"
    );
    assert_eq!(mode(dir.path(), "ssh"), 0o700);
    assert_eq!(mode(dir.path(), "ssh/authorized_keys"), 0o600);
    assert_eq!(mode(dir.path(), "hostname"), 0o644);
    assert_eq!(read(dir.path(), "userdata"), "#cloud-config\nhostname: x\n");
    // Written again (a second run in the same boot): the same files.
    write(dir.path(), &found(None));
    assert_eq!(read(dir.path(), "hostname"), "ip-10-0-0-5.ec2.internal");
}

#[test]
fn json_user_data_is_expanded_into_a_tree_as_linuxkit_does() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = r#"{
        "ssh": {"entries": {"sshd_config": {"perm": "0600", "content": "PermitRootLogin yes\n"}}},
        "dir": {"perm": "0750", "entries": {
            "f": {"perm": "0644", "content": "x"},
            "sub": {"entries": {"g": {"content": "deep"}}}
        }},
        "foo": {"bar": {"perm": "0644", "content": "foobar"}, "baz": {"perm": "0600", "content": "bar"}}
    }"#;
    write(dir.path(), &found(Some(user_data)));
    assert_eq!(read(dir.path(), "ssh/sshd_config"), "PermitRootLogin yes\n");
    assert_eq!(mode(dir.path(), "ssh/sshd_config"), 0o600);
    // Beside the keys from the metadata, which stay.
    assert_eq!(
        read(dir.path(), "ssh/authorized_keys"),
        "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"
    );
    assert_eq!(read(dir.path(), "dir/f"), "x");
    assert_eq!(mode(dir.path(), "dir"), 0o750);
    assert_eq!(read(dir.path(), "dir/sub/g"), "deep");
    assert_eq!(mode(dir.path(), "dir/sub"), 0o755);
    assert_eq!(read(dir.path(), "foo/bar"), "foobar");
    assert_eq!(mode(dir.path(), "foo/baz"), 0o600);
    assert_eq!(read(dir.path(), "userdata"), user_data);
}

#[test]
fn hostile_names_and_shapes_in_the_tree_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("config");
    let user_data = r#"{
        "..": {"entries": {"escaped": {"content": "x"}}},
        "a/b": {"entries": {"c": {"content": "x"}}},
        "ok": {"entries": {
            "..": {"content": "x"},
            "": {"content": "x"},
            "n/m": {"content": "x"},
            "badperm": {"perm": "rwx", "content": "x"},
            "notstring": {"content": 5},
            "fine": {"content": "y"}
        }},
        "hostname": {"content": "overwrite?"},
        "userdata": {"entries": {}}
    }"#;
    write(&inside, &found(Some(user_data)));
    assert_eq!(read(&inside, "ok/fine"), "y");
    assert_eq!(read(&inside, "hostname"), "ip-10-0-0-5.ec2.internal");
    assert_eq!(read(&inside, "userdata"), user_data);
    let listing = listing(dir.path());
    assert!(
        !listing
            .iter()
            .any(|p| p.contains("escaped") || p.contains("badperm") || p.contains("notstring")),
        "{listing:?}"
    );
    assert_eq!(
        listing
            .iter()
            .filter(|p| p.starts_with("config/ok/") && *p != "config/ok/")
            .count(),
        1,
        "{listing:?}"
    );
}

#[test]
fn links_in_the_directory_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    // A link where a directory would go, and one where a file would go.
    std::os::unix::fs::symlink(&outside, config.join("ssh")).unwrap();
    std::fs::write(outside.join("target"), "untouched").unwrap();
    std::os::unix::fs::symlink(outside.join("target"), config.join("hostname")).unwrap();
    write(&config, &found(None));
    assert_eq!(
        std::fs::read_to_string(outside.join("target")).unwrap(),
        "untouched"
    );
    assert!(!outside.join("authorized_keys").exists());
    // The link to a file is replaced by the file, not written through.
    assert!(
        std::fs::symlink_metadata(config.join("hostname"))
            .unwrap()
            .is_file()
    );
    assert_eq!(read(&config, "hostname"), "ip-10-0-0-5.ec2.internal");
    assert!(
        std::fs::symlink_metadata(config.join("ssh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn no_temporary_file_is_left_and_the_network_goes_to_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut found = found(Some("not json"));
    found.network = Some(NetworkConfig::CloudInit(
        b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".to_vec(),
    ));
    write(dir.path(), &found);
    let listing = listing(dir.path());
    assert!(!listing.iter().any(|p| p.contains(".tmp")), "{listing:?}");
    assert_eq!(read(dir.path(), "network/eth0"), "dhcp\n");
}
