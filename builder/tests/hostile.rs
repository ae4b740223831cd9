//! Layers that try to put something outside the image root. Every case is
//! refused with an error naming the image, the layer and the entry, and no
//! artifact (nor temporary file) is left in the output directory.

mod common;

use fixtures::{EntryType, Image, Layer, Layout, RawEntry};

use common::{build_yaml, files, small_cache, stderr};

fn refused(name: &str, layers: Vec<Layer>, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let layout = Layout::create(&cache).unwrap();
    let mut image = Image::new();
    for layer in layers {
        image = image.layer(layer);
    }
    layout
        .add_image("docker.io/test/hostile:1", &image)
        .unwrap();
    let out = build_yaml(
        dir.path(),
        &cache,
        "init:\n  - test/init:1\nservices:\n  - name: bad\n    image: test/hostile:1\n",
        &["tar", "kernel+initrd"],
    );
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{name}: {message}");
    assert!(
        message.contains("image docker.io/test/hostile:1: layer sha256:"),
        "{name}: {message}"
    );
    assert!(
        message.contains(expected),
        "{name}: expected {expected:?} in {message}"
    );
    assert_eq!(
        files(&dir.path().join("out")),
        Vec::<String>::new(),
        "{name}"
    );
}

#[test]
fn path_traversal_is_refused() {
    refused(
        "dot-dot",
        vec![Layer::new().raw(RawEntry::new(EntryType::Regular, "../../etc/passwd").data("x"))],
        "entry \"../../etc/passwd\" refused: \"../../etc/passwd\" climbs out of the root with '..'",
    );
    refused(
        "dot-dot inside",
        vec![Layer::new().raw(RawEntry::new(EntryType::Regular, "usr/../../x").data("x"))],
        "climbs out of the root",
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    // An absolute link, then a file below it: extracting would follow it.
    refused(
        "absolute symlink",
        vec![
            Layer::new()
                .symlink("etc", "/etc")
                .raw(RawEntry::new(EntryType::Regular, "etc/passwd").data("root::0:0::/:/bin/sh")),
        ],
        "entry \"etc/passwd\" refused: it passes through the symbolic link \"etc\"",
    );
    // The same across layers, with a relative link climbing out.
    refused(
        "relative symlink in a lower layer",
        vec![
            Layer::new().symlink("escape", "../../../.."),
            Layer::new().file("escape/root/.ssh/authorized_keys", 0o600, "key"),
        ],
        "passes through the symbolic link \"escape\"",
    );
}

#[test]
fn hard_links_out_of_the_image_are_refused() {
    refused(
        "hard link to an absolute path outside",
        vec![Layer::new().raw(RawEntry::new(EntryType::Link, "shadow").link_name("/etc/shadow"))],
        "entry \"shadow\" refused: hard link to \"/etc/shadow\", which is not a regular file of the image",
    );
    refused(
        "hard link climbing out",
        vec![
            Layer::new()
                .raw(RawEntry::new(EntryType::Link, "shadow").link_name("../../etc/shadow")),
        ],
        "hard link target \"../../etc/shadow\" climbs out of the root",
    );
    refused(
        "hard link through a symlink",
        vec![
            Layer::new()
                .symlink("host", "/")
                .raw(RawEntry::new(EntryType::Link, "shadow").link_name("host/etc/shadow")),
        ],
        "passes through the symbolic link \"host\"",
    );
}

#[test]
fn whiteouts_outside_the_root_are_refused() {
    refused(
        "whiteout climbing out",
        vec![
            Layer::new().file("a", 0o644, "a"),
            Layer::new().raw(RawEntry::new(EntryType::Regular, "../.wh.etc")),
        ],
        "climbs out of the root",
    );
    refused(
        "whiteout of the parent",
        vec![
            Layer::new().file("a/b", 0o644, "a"),
            Layer::new().raw(RawEntry::new(EntryType::Regular, "a/.wh..")),
        ],
        "whiteout of a path outside the image",
    );
}
