//! End-to-end builds through the `berth` binary against a cache written by
//! the fixtures crate: layer semantics, the initrd's contents, failure
//! hygiene and reproducibility.

mod common;

use std::io::Read;

use common::{DEFINITION, berth, berth_env, build_yaml, files, small_cache, stderr, tar_listing};

/// Builds [`DEFINITION`] into a tar and lists it.
fn build_definition() -> Vec<(String, String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let out = build_yaml(dir.path(), &cache, DEFINITION, &["tar"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tar_listing(&std::fs::read(dir.path().join("out/image.tar")).unwrap())
}

#[test]
fn layers_are_flattened_with_whiteouts_opaque_dirs_and_links() {
    let listing = build_definition();
    let find = |path: &str| listing.iter().find(|(p, _, _)| p == path).cloned();
    let lower = "containers/onboot/000-first/lower";
    // The second layer's file wins; the whiteout and the opaque directory
    // remove what the first layer had.
    assert_eq!(find(&format!("{lower}/bin/tool")).unwrap().2, b"tool v2");
    assert!(find(&format!("{lower}/etc/old")).is_none());
    assert!(find(&format!("{lower}/usr/share/doc/a")).is_none());
    assert_eq!(
        find(&format!("{lower}/usr/share/doc/b")).unwrap().2,
        b"new doc"
    );
    // The hard link's file was replaced by the second layer: the link keeps
    // the bytes it was made with.
    assert_eq!(
        find(&format!("{lower}/bin/tool-link")).unwrap().2,
        b"tool v1"
    );
    // The service shares the onboot bundle's copy of the image.
    assert!(find("containers/services/svc/rootfs").is_some());
    assert!(find("containers/services/svc/lower").is_none());
    assert!(find("containers/services/svc/config.json").is_some());
    // LinuxKit's fix-ups: /etc/hostname of images is dropped, mount points made.
    assert!(find("etc/hostname").is_none());
    assert!(find(&format!("{lower}/proc")).is_some());
    // Kernel and modules.
    assert_eq!(find("boot/kernel").unwrap().2, b"not really a kernel");
    assert_eq!(find("boot/cmdline").unwrap().2, b"console=ttyS0");
    let module = fixtures::elf_module(b"depends=net_failover\0alias=virtio:d00000001v*\0");
    assert_eq!(
        find("lib/modules/6.1.0/kernel/virtio_net.ko").unwrap().2,
        module
    );
    // The default choice (virtual-machine drivers) takes virtio_net and
    // what it depends on, not extra.
    assert!(find("lib/modules/6.1.0/kernel/net_failover.ko").is_some());
    assert!(find("lib/modules/6.1.0/kernel/extra.ko").is_none());
    // The kernel image has no depmod index: the builder makes one, of the
    // modules it took.
    assert_eq!(
        find("lib/modules/6.1.0/modules.dep").unwrap().2,
        b"kernel/net_failover.ko:\nkernel/virtio_net.ko: kernel/net_failover.ko\n"
    );
    assert_eq!(
        find("lib/modules/6.1.0/modules.alias").unwrap().2,
        b"alias virtio:d00000001v* virtio_net\n"
    );
    assert!(find("System.map").is_none());
    // files:
    assert_eq!(find("etc/motd").unwrap().2, b"hello");
    assert_eq!(find("var/lib/state").unwrap().1, "Directory");
    // Every parent comes before its children.
    let mut seen = std::collections::HashSet::new();
    for (path, _, _) in &listing {
        let path = path.trim_end_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            assert!(seen.contains(parent), "{path} comes before its parent");
        }
        seen.insert(path.to_string());
    }
}

#[test]
fn config_json_merges_yaml_label_and_image_config() {
    let listing = build_definition();
    let json = |path: &str| -> serde_json::Value {
        let (_, _, data) = listing.iter().find(|(p, _, _)| p == path).unwrap();
        serde_json::from_slice(data).unwrap()
    };
    let first = json("containers/onboot/000-first/config.json");
    assert_eq!(
        first["process"]["args"],
        serde_json::json!(["/bin/tool", "--once"])
    );
    assert_eq!(first["process"]["env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(
        first["process"]["capabilities"]["effective"],
        serde_json::json!(["CAP_SYS_ADMIN"])
    );
    let svc = json("containers/services/svc/config.json");
    assert_eq!(svc["process"]["args"], serde_json::json!(["/bin/tool"]));
    assert_eq!(svc["root"]["readonly"], true);
    let runtime = json("containers/services/svc/runtime.json");
    assert_eq!(
        runtime["mounts"][0]["source"],
        "/containers/onboot/000-first/lower"
    );
}

#[test]
fn every_format_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    std::fs::write(dir.path().join("image.yml"), DEFINITION).unwrap();
    let mut builds = Vec::new();
    for (run, compress) in [("a", "gzip"), ("b", "gzip"), ("c", "zstd"), ("d", "zstd")] {
        let out = berth(
            &[
                "build",
                "-f",
                "tar",
                "-f",
                "kernel+initrd",
                "-f",
                "tar-kernel-initrd",
                "--compress",
                compress,
                "-o",
                run,
                "--cache",
                cache.to_str().unwrap(),
                "image.yml",
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        builds.push(dir.path().join(run));
    }
    let expected = common::IMAGE_FILES;
    for name in expected {
        // What `berth push` takes for this build's files.
        assert!(
            builder::outputs::build_of(name).is_some_and(|(build, _)| build == "image"),
            "{name}"
        );
        assert!(
            builder::outputs::build_files("image")
                .iter()
                .any(|(n, _)| n == name)
        );
    }
    for pair in [(0, 1), (2, 3)] {
        assert_eq!(files(&builds[pair.0]), expected);
        for name in expected {
            let a = std::fs::read(builds[pair.0].join(name)).unwrap();
            let b = std::fs::read(builds[pair.1].join(name)).unwrap();
            assert!(a == b, "{name} differs between two builds");
        }
    }
    // The initrd holds everything but boot/, as a valid gzip cpio.
    let initrd = std::fs::read(builds[0].join("image-initrd.img")).unwrap();
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(&initrd[..])
        .read_to_end(&mut cpio)
        .unwrap();
    let text = String::from_utf8_lossy(&cpio);
    assert!(text.contains("containers/services/svc/config.json"));
    assert!(!text.contains("boot/kernel"));
    assert!(text.ends_with('\0') && cpio.len() % 512 == 0);
    // The zstd initrd decodes to the same cpio.
    let zstd_initrd = std::fs::read(builds[2].join("image-initrd.img")).unwrap();
    assert_eq!(zstd::decode_all(&zstd_initrd[..]).unwrap(), cpio);
}

/// Builds the small definition into `out/` as tar and the initrd as tar,
/// with `SOURCE_DATE_EPOCH` set to `epoch`.
fn build_tars_at(epoch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    std::fs::write(dir.path().join("image.yml"), DEFINITION).unwrap();
    let args = [
        "build",
        "-f",
        "tar",
        "-f",
        "tar-kernel-initrd",
        "-o",
        "out",
        "--cache",
        cache.to_str().unwrap(),
        "image.yml",
    ];
    let out = berth_env(&args, dir.path(), Some(epoch));
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

#[test]
fn source_date_epoch_sets_the_time_of_generated_entries() {
    let dir = build_tars_at("1000000000");
    // Entries berth makes carry the epoch exactly; the images' own entries
    // (the fixtures use 1500000000, the modules 1600000000) are capped by it.
    let made = [
        "boot/cmdline",
        "containers/onboot/000-first/config.json",
        "containers/services/svc/runtime.json",
        "etc/motd",
    ];
    for name in ["image.tar", "image-initrd.tar"] {
        let tar = std::fs::read(dir.path().join("out").join(name)).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut checked = 0;
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mtime = entry.header().mtime().unwrap();
            assert!(mtime <= 1_000_000_000, "{path} has mtime {mtime}");
            if made.contains(&path.as_str()) || name == "image-initrd.tar" {
                assert_eq!(mtime, 1_000_000_000, "{path}");
                checked += 1;
            }
        }
        assert!(checked >= 3, "{name}: only {checked} entries checked");
    }
}

#[test]
fn directories_berth_makes_for_an_image_take_the_epoch_even_after_2017() {
    // Later than LinuxKit's fixed time (2017), so a made directory that kept
    // that time instead of the epoch would show.
    let dir = build_tars_at("1700000000");
    let tar = std::fs::read(dir.path().join("out/image.tar")).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut made = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let path = path.trim_end_matches('/').to_string();
        // The service image's layers have no entry for bin/ or usr/: flatten
        // makes them.
        if path == "containers/onboot/000-first/lower/bin"
            || path == "containers/onboot/000-first/lower/usr"
        {
            made.push((path, entry.header().mtime().unwrap()));
        }
    }
    let listing = tar_listing(&tar);
    assert_eq!(made.len(), 2, "{made:?} in {listing:#?}");
    for (path, mtime) in made {
        assert_eq!(mtime, 1_700_000_000, "{path}");
    }
}

#[test]
fn volumes_are_refused_until_berth_supports_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let yaml = format!("{DEFINITION}volumes:\n  - name: data\n");
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "berth: image.yml:20:11: volumes are not supported by this version of berth\n"
    );
    assert!(
        !dir.path().join("out").exists(),
        "a failed build leaves no directory"
    );
}

#[test]
fn kernel_modules_chooses_the_modules_and_their_dependencies() {
    let modules_of = |choice: &str| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let cache = small_cache(dir.path());
        let yaml = DEFINITION.replace(
            "  cmdline: console=ttyS0\n",
            &format!("  cmdline: console=ttyS0\n  modules: {choice}\n"),
        );
        let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
        assert!(out.status.success(), "{choice}: {}", stderr(&out));
        let mut found: Vec<String> =
            tar_listing(&std::fs::read(dir.path().join("out/image.tar")).unwrap())
                .into_iter()
                .filter_map(|(path, _, _)| {
                    path.strip_prefix("lib/modules/6.1.0/kernel/")
                        .map(str::to_string)
                })
                .collect();
        found.sort();
        found
    };
    assert_eq!(
        modules_of("all"),
        ["extra.ko", "net_failover.ko", "virtio_net.ko"]
    );
    assert_eq!(modules_of("[extra]"), ["extra.ko"]);
    assert_eq!(
        modules_of("[virtio-net]"),
        ["net_failover.ko", "virtio_net.ko"]
    );
    // A built-in module is there already.
    assert_eq!(modules_of("[extra, b]"), ["extra.ko"]);
}

#[test]
fn a_module_the_kernel_lacks_is_named_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let yaml = DEFINITION.replace(
        "  cmdline: console=ttyS0\n",
        "  cmdline: console=ttyS0\n  modules: [virtio_net, virtio_nett]\n",
    );
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("docker.io/test/kernel:1"), "{message}");
    assert!(
        message.contains("kernel.modules: no module \"virtio_nett\""),
        "{message}"
    );
    assert!(!dir.path().join("out").exists(), "{message}");
    let yaml = DEFINITION.replace(
        "  cmdline: console=ttyS0\n",
        "  cmdline: console=ttyS0\n  modules: some\n",
    );
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("kernel.modules"), "{}", stderr(&out));
}

#[test]
fn a_missing_image_names_the_reference_and_the_cache_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/image.tar"), b"an older build").unwrap();
    let yaml = DEFINITION.replace("test/init:1", "test/absent:2");
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(
            "image.yml:5:5: image docker.io/test/absent:2 not found: looked in the cache at"
        ),
        "{message}"
    );
    assert!(message.contains(cache.to_str().unwrap()), "{message}");
    assert_eq!(
        message.matches("not found").count(),
        1,
        "said once: {message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    // The older artifact is untouched and no temporary file is left.
    assert_eq!(files(&dir.path().join("out")), ["image.tar"]);
    assert_eq!(
        std::fs::read(dir.path().join("out/image.tar")).unwrap(),
        b"an older build"
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    common::add_tampered_image(&cache);
    let out = build_yaml(
        dir.path(),
        &cache,
        "services:\n  - name: t\n    image: test/tampered:1\n",
        &["tar"],
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("image docker.io/test/tampered:1: layer sha256:"),
        "{message}"
    );
    assert!(
        message.contains("content does not match its digest"),
        "{message}"
    );
    assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
}

#[test]
fn a_definition_can_come_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_OFFLINE", "1")
        .args([
            "build",
            "-f",
            "tar",
            "-o",
            "out",
            "--cache",
            cache.to_str().unwrap(),
            "-",
        ])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(DEFINITION.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // LinuxKit's name for a definition read from standard input.
    assert_eq!(
        files(&dir.path().join("out")),
        ["moby.lock", "moby.spdx.json", "moby.tar"]
    );
}
