//! What the builder does with the entries of image layers that matter to
//! confinement (docs/compatibility.md, "What image layers may carry"):
//! device nodes, setuid and setgid files and world-writable directories are
//! kept in every section, as GNU tar lists the build; an owner of
//! `(uid_t)-1` is refused in every section, naming where it is.

mod common;

use std::process::Command;

use fixtures::{EntryType, Image, Layer, Layout, RawEntry};

use common::{build_yaml, files, have, small_cache, stderr};

const IMAGE: &str = "docker.io/test/special:1";

/// Builds `yaml` in tar against the small cache plus `image` as [`IMAGE`].
fn build(image: &Image, yaml: &str) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    Layout::create(&cache)
        .unwrap()
        .add_image(IMAGE, image)
        .unwrap();
    let out = build_yaml(dir.path(), &cache, yaml, &["tar"]);
    (dir, out)
}

#[test]
fn device_nodes_setuid_files_and_open_directories_are_kept_in_every_section() {
    if !have("tar", &["--version"], "tar") {
        return;
    }
    let image = Image::new().layer(
        Layer::new()
            .raw(
                RawEntry::new(EntryType::Block, "disk")
                    .mode(0o600)
                    .device(254, 0),
            )
            .raw(
                RawEntry::new(EntryType::Char, "mem")
                    .mode(0o640)
                    .device(1, 1),
            )
            .dir("bin", 0o755)
            .file("bin/su", 0o4755, "su")
            .file("bin/wall", 0o2755, "wall")
            .dir("tmp", 0o1777)
            .dir("shared", 0o777),
    );
    let sections = [
        ("init", "init:\n  - test/init:1\n  - test/special:1\n", ""),
        (
            "onboot",
            "init:\n  - test/init:1\nonboot:\n  - name: a\n    image: test/special:1\n",
            "containers/onboot/000-a/lower/",
        ),
        (
            "services",
            "init:\n  - test/init:1\nservices:\n  - name: s\n    image: test/special:1\n",
            "containers/services/s/lower/",
        ),
        (
            "onshutdown",
            "init:\n  - test/init:1\nonshutdown:\n  - name: z\n    image: test/special:1\n",
            "containers/onshutdown/000-z/lower/",
        ),
    ];
    for (section, yaml, prefix) in sections {
        let (dir, out) = build(&image, yaml);
        assert!(out.status.success(), "{section}: {}", stderr(&out));
        let listed = Command::new("tar")
            .args(["-tvf", "out/image.tar", "--numeric-owner"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(listed.status.success(), "{section}: {}", stderr(&listed));
        let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
        // GNU tar's long listing: mode, owner/group, size or numbers, date,
        // name.
        let line = |path: &str| {
            listing
                .lines()
                .find(|l| {
                    let name = l.rsplit(' ').next().unwrap_or("");
                    name.trim_end_matches('/') == format!("{prefix}{path}")
                })
                .unwrap_or_else(|| panic!("{section}: no {prefix}{path} in\n{listing}"))
                .to_string()
        };
        for (path, mode, detail) in [
            ("disk", "brw-------", " 254,0 "),
            ("mem", "crw-r-----", " 1,1 "),
            ("bin/su", "-rwsr-xr-x", " 0/0 "),
            ("bin/wall", "-rwxr-sr-x", " 0/0 "),
            ("tmp", "drwxrwxrwt", " 0/0 "),
            ("shared", "drwxrwxrwx", " 0/0 "),
        ] {
            let line = line(path);
            assert!(
                line.starts_with(mode) && line.contains(detail),
                "{section}: {path}: {line}"
            );
        }
    }
}

#[test]
fn an_owner_of_minus_one_is_refused_in_every_section() {
    for (uid, gid) in [(u32::MAX, 0), (0, u32::MAX)] {
        let image = Image::new().layer(
            Layer::new().dir("bin", 0o755).raw(
                RawEntry::new(EntryType::Regular, "bin/sh")
                    .mode(0o4755)
                    .owner(u64::from(uid), u64::from(gid))
                    .data("sh"),
            ),
        );
        for yaml in [
            "init:\n  - test/init:1\n  - test/special:1\n",
            "init:\n  - test/init:1\nonboot:\n  - name: a\n    image: test/special:1\n",
            "init:\n  - test/init:1\nservices:\n  - name: s\n    image: test/special:1\n",
            "init:\n  - test/init:1\nonshutdown:\n  - name: z\n    image: test/special:1\n",
        ] {
            let (dir, out) = build(&image, yaml);
            let message = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{yaml}: {message}");
            assert!(
                message.contains(&format!("image {IMAGE}: layer sha256:"))
                    && message.contains(
                        "entry \"bin/sh\" refused: uid or gid 4294967295 (-1) is no owner"
                    ),
                "{yaml}: {message}"
            );
            assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
        }
    }
    // In a kernel's modules tarball too.
    let mut modules = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o4755);
    header.set_uid(u64::from(u32::MAX));
    header.set_gid(0);
    header.set_cksum();
    modules
        .append_data(&mut header, "lib/modules/6.1.0/x", &b"x"[..])
        .unwrap();
    let kernel = Image::new().layer(Layer::new().file("kernel", 0o644, "k").file(
        "kernel.tar",
        0o644,
        modules.into_inner().unwrap(),
    ));
    let (dir, out) = build(&kernel, "kernel:\n  image: test/special:1\n");
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("kernel image {IMAGE}: kernel.tar: entry \"lib/modules/6.1.0/x\": uid or gid 4294967295 (-1) is no owner")),
        "{message}"
    );
    assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
}
