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

/// Builds `yaml` against the small cache plus `image` as
/// `docker.io/test/hostile:1`, in tar and kernel+initrd.
fn build_with(image: Image, yaml: &str) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    Layout::create(&cache)
        .unwrap()
        .add_image("docker.io/test/hostile:1", &image)
        .unwrap();
    let out = build_yaml(dir.path(), &cache, yaml, &["tar", "kernel+initrd"]);
    (dir, out)
}

#[test]
fn mount_points_are_not_made_through_an_image_symlink() {
    let image = Image::new().layer(Layer::new().symlink("etc", "../../../../../etc"));
    let (dir, out) = build_with(
        image,
        "init:\n  - test/init:1\nservices:\n  - name: bad\n    image: test/hostile:1\n",
    );
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("image docker.io/test/hostile:1: entry \"containers/services/bad/lower/etc/hosts\" refused: it passes through \"containers/services/bad/lower/etc\", which is not a directory"),
        "{message}"
    );
    assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
}

#[test]
fn the_modules_tarball_cannot_write_through_its_own_symlinks() {
    let mut modules = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    modules.append_link(&mut link, "lib", "/tmp/pwned").unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(1);
    file.set_mode(0o644);
    file.set_uid(0);
    file.set_gid(0);
    modules
        .append_data(&mut file, "lib/modules/evil", &b"x"[..])
        .unwrap();
    let kernel = Image::new().layer(Layer::new().file("kernel", 0o644, "k").file(
        "kernel.tar",
        0o644,
        modules.into_inner().unwrap(),
    ));
    let (dir, out) = build_with(kernel, "kernel:\n  image: test/hostile:1\n");
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("kernel image docker.io/test/hostile:1: kernel.tar: entry \"lib/modules/evil\" refused: it passes through \"lib\", which is not a directory"),
        "{message}"
    );
    assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
}

#[test]
fn hard_links_to_replaced_files_keep_the_image_bytes() {
    let image = Image::new().layer(
        Layer::new()
            .file("etc/hosts", 0o644, "10.0.0.1 image-host\n")
            .hardlink("etc/hosts.orig", "etc/hosts")
            .file("Dockerfile", 0o644, "FROM scratch\n")
            .hardlink("df", "Dockerfile"),
    );
    let (dir, out) = build_with(
        image,
        "init:\n  - test/init:1\nservices:\n  - name: s\n    image: test/hostile:1\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tar = std::fs::read(dir.path().join("out/image.tar")).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut contents = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut data = String::new();
        std::io::Read::read_to_string(&mut entry, &mut data).unwrap();
        contents.insert(path, (entry.header().entry_type(), data));
    }
    let lower = "containers/services/s/lower";
    assert_eq!(
        contents[&format!("{lower}/etc/hosts.orig")].1,
        "10.0.0.1 image-host\n"
    );
    assert_eq!(contents[&format!("{lower}/df")].1, "FROM scratch\n");
    assert!(!contents.contains_key(&format!("{lower}/Dockerfile")));
    assert!(
        contents[&format!("{lower}/etc/hosts")]
            .1
            .starts_with("127.0.0.1")
    );
}
