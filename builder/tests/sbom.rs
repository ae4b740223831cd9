//! The SBOM every build writes (`NAME.spdx.json`, and the same bytes in the
//! image at `usr/share/berth/sbom.spdx.json`), checked with an SPDX tool
//! berth did not write: `pyspdxtools` of the `spdx-tools` Python package.
//! `cargo xtask test` installs it into a virtual environment under
//! `target/spdx-tools` and names it in `BERTH_PYSPDXTOOLS`; without it a
//! test says it was skipped, and under CI=true it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use fixtures::{Image, Layer, Layout};
use serde_json::Value;

use common::{
    ATTESTED, DEFINITION, INIT, KERNEL, SERVICE, add_attested_image, berth, build_yaml, files,
    pyspdxtools, small_cache, stderr, validate_spdx as validate,
};

const DEBIAN: &str = "docker.io/test/debian:1";
/// Debian versions with an epoch and a `+`, which package URLs encode.
const DEBIAN_PACKAGES: &str = "busybox-static=1:1.35.0-4+b3 libc6=2.36-9+deb12u7";

/// The small cache and an image whose label lists Debian packages.
fn cache_with_debian(dir: &Path) -> PathBuf {
    let cache = small_cache(dir);
    let image = Image::new()
        .layer(Layer::new().file("bin/sh", 0o755, b"sh".to_vec()))
        .label("org.berth.debian.packages", DEBIAN_PACKAGES);
    Layout::create(&cache)
        .unwrap()
        .add_image(DEBIAN, &image)
        .unwrap();
    cache
}

/// The small definition with a service of the Debian image and a second
/// file.
fn definition() -> String {
    let yaml = DEFINITION.replace(
        "files:\n",
        "  - name: deb\n    image: test/debian:1\nfiles:\n",
    );
    format!("{yaml}  - path: etc/issue\n    contents: berth\n")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The values of `key` of every element of the document's `list`.
fn values(document: &Value, list: &str, key: &str) -> Vec<String> {
    document[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[key].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_sbom_lists_every_image_package_and_file_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_with_debian(dir.path());
    let out = build_yaml(dir.path(), &cache, &definition(), &["tar"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sbom = dir.path().join("out/image.spdx.json");
    if let Some(program) = pyspdxtools() {
        validate(&program, &sbom);
    }
    let document = json(&sbom);
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    let names = values(&document, "packages", "name");
    for reference in [KERNEL, INIT, SERVICE, DEBIAN] {
        let repository = reference.rsplit_once(':').unwrap().0;
        assert!(
            names.iter().any(|n| n == repository),
            "{reference}: {names:?}"
        );
    }
    // Each image's digest is the one the lock file pinned.
    let lock = std::fs::read_to_string(dir.path().join("out/image.lock")).unwrap();
    let purls = document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .map(|r| r["referenceLocator"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    for line in lock.lines().filter(|l| l.contains("sha256:")) {
        let digest = line.split_whitespace().last().unwrap().trim_matches('"');
        let encoded = digest.replace(':', "%3A");
        assert!(
            purls
                .iter()
                .any(|p| p.starts_with("pkg:oci/") && p.contains(&encoded)),
            "{digest}: {purls:?}"
        );
    }
    for purl in [
        "pkg:deb/debian/busybox-static@1%3A1.35.0-4%2Bb3?arch=amd64",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64",
    ] {
        assert!(purls.iter().any(|p| p == purl), "{purl}: {purls:?}");
    }
    // Every image carries the signature status: the definition has no
    // trust policy, so none was required.
    let annotated = document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .all(|p| p["annotations"][0]["comment"] == "berth.signature: not required");
    assert!(annotated);
    // The kernel and its release, the name of its modules' directory.
    let kernel = document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "linux")
        .unwrap();
    assert_eq!(kernel["versionInfo"], "6.1.0");
    // The files: entries with their checksums (directories are not files).
    assert_eq!(
        values(&document, "files", "fileName"),
        ["./etc/issue", "./etc/motd"]
    );
    let motd = document["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./etc/motd")
        .unwrap();
    assert_eq!(
        motd["checksums"][1]["checksumValue"],
        // sha256 of "hello"
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    // The image holds the same bytes.
    let tar = std::fs::read(dir.path().join("out/image.tar")).unwrap();
    let inside = common::tar_listing(&tar)
        .into_iter()
        .find(|(path, _, _)| path == "usr/share/berth/sbom.spdx.json")
        .expect("the SBOM in the image");
    assert_eq!(inside.2, std::fs::read(&sbom).unwrap());
}

#[test]
fn one_path_written_twice_and_one_tag_at_two_digests_keep_spdx_ids_unique() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_with_debian(dir.path());
    let debian = common::cached_digest(&cache, DEBIAN);
    let service = common::cached_digest(&cache, SERVICE);
    // The service's tag pinned to the Debian image's digest: one repository
    // and tag, two images. The same tag pinned to its own digest is the
    // same image spelled twice.
    let yaml = DEFINITION
        .replace(
            "services:\n",
            &format!(
                "  - name: pinned\n    image: test/service:1@{debian}\n  \
                 - name: spelled\n    image: docker.io/test/service:1@{service}\nservices:\n"
            ),
        )
        .replace(
            "files:\n",
            "files:\n  - path: etc/issue\n    contents: a file\n  \
             - path: etc/motd\n    contents: first\n",
        );
    // etc/motd again, last; etc/issue made a directory.
    let yaml = format!(
        "{yaml}  - path: etc/motd\n    contents: last\n  - path: etc/issue\n    directory: true\n"
    );
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sbom = dir.path().join("out/image.spdx.json");
    if let Some(program) = pyspdxtools() {
        validate(&program, &sbom);
    }
    let document = json(&sbom);
    let ids = values(&document, "packages", "SPDXID");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    let services: Vec<&Value> = document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "docker.io/test/service")
        .collect();
    assert_eq!(services.len(), 2, "two images of test/service:1: {ids:?}");
    // The image holds etc/motd once, with the last contents, and no file
    // etc/issue: so does the SBOM.
    assert_eq!(values(&document, "files", "fileName"), ["./etc/motd"]);
    assert_eq!(
        document["files"][0]["checksums"][1]["checksumValue"],
        "3547cb112ac4489af2310c0626cdba6f3097a2ad5a3b42ddd3b59c76c7a079a3"
    );
}

#[test]
fn two_builds_write_the_same_sbom() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_with_debian(dir.path());
    std::fs::write(dir.path().join("image.yml"), definition()).unwrap();
    let cache = cache.to_str().unwrap();
    for out in ["a", "b"] {
        let built = berth(
            &[
                "build",
                "-f",
                "kernel+initrd",
                "-o",
                out,
                "--cache",
                cache,
                "image.yml",
            ],
            dir.path(),
        );
        assert!(built.status.success(), "{}", stderr(&built));
    }
    // With the lock of the first, images are pinned by digest: the
    // document is the same.
    let locked = berth(
        &[
            "build",
            "-f",
            "tar",
            "-o",
            "locked",
            "--lock",
            "a/image.lock",
            "--cache",
            cache,
            "image.yml",
        ],
        dir.path(),
    );
    assert!(locked.status.success(), "{}", stderr(&locked));
    let a = std::fs::read(dir.path().join("a/image.spdx.json")).unwrap();
    for other in ["b", "locked"] {
        let b = std::fs::read(dir.path().join(other).join("image.spdx.json")).unwrap();
        assert!(a == b, "the SBOMs of builds a and {other} differ");
    }
    // Another input, another namespace.
    let changed = definition().replace("contents: hello", "contents: bye");
    std::fs::write(dir.path().join("image.yml"), changed).unwrap();
    let built = berth(
        &[
            "build",
            "-f",
            "kernel+initrd",
            "-o",
            "c",
            "--cache",
            cache,
            "image.yml",
        ],
        dir.path(),
    );
    assert!(built.status.success(), "{}", stderr(&built));
    let namespace = |path: &str| json(&dir.path().join(path))["documentNamespace"].clone();
    assert_ne!(
        namespace("a/image.spdx.json"),
        namespace("c/image.spdx.json")
    );
}

#[test]
fn a_failed_build_leaves_no_sbom() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let yaml = format!("{DEFINITION}  - path: etc/missing\n    source: not-there\n");
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not-there"), "{}", stderr(&out));
    assert_eq!(files(&dir.path().join("out")), Vec::<String>::new());
}

#[test]
fn an_sbom_an_image_carries_as_an_attestation_is_merged_in() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    add_attested_image(&cache);
    let yaml = DEFINITION.replace(
        "files:\n",
        "  - name: app\n    image: test/attested:1\nfiles:\n",
    );
    let out = build_yaml(dir.path(), &cache, &yaml, &["tar"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sbom = dir.path().join("out/image.spdx.json");
    if let Some(program) = pyspdxtools() {
        validate(&program, &sbom);
    }
    let document = json(&sbom);
    let packages = document["packages"].as_array().unwrap();
    let image = packages
        .iter()
        .find(|p| p["name"] == "docker.io/test/attested")
        .unwrap();
    let app = packages
        .iter()
        .find(|p| p["name"] == "attested-app")
        .expect("the attested package");
    assert_eq!(app["versionInfo"], "2.0");
    let contains = document["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| {
            r["spdxElementId"] == image["SPDXID"]
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == app["SPDXID"]
        });
    assert!(contains, "{document:#}");
}

/// examples/host.yml built as the boot tests build it: its `@pkg:` images
/// made online into the fixture cache they share (Debian's packages come
/// from the archive, init is compiled), the build itself to a tar. Every
/// image of its lock file is in the SBOM with its digest, and every Debian
/// package skopeo reads from an image's label is in it with its version.
#[test]
fn the_sbom_of_the_host_example_lists_its_images_and_debian_packages() {
    if !fixtures::program_or_skip("skopeo", "skopeo") {
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The berth binary is TARGET/PROFILE/berth.
    let target = Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .and_then(Path::parent)
        .unwrap();
    let cache = target.join("berth-fixtures/cache");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let built = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["build", "-f", "tar", "--name", "host", "-o"])
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .arg(workspace.join("examples/host.yml"))
        .current_dir(dir.path())
        // No key of whoever runs the test goes into the image.
        .env("HOME", dir.path())
        .env_remove("BERTH_OFFLINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let sbom = out.join("host.spdx.json");
    if let Some(program) = pyspdxtools() {
        validate(&program, &sbom);
    }
    let document = json(&sbom);
    let packages = document["packages"].as_array().unwrap();
    let lock = std::fs::read_to_string(out.join("host.lock")).unwrap();
    let mut images = 0;
    let mut debian = 0;
    for line in lock.lines().filter(|l| l.contains("sha256:")) {
        let mut words = line.split_whitespace();
        let (reference, digest) = (words.next().unwrap(), words.next().unwrap());
        let (repository, tag) = reference.rsplit_once(':').unwrap();
        let image = packages
            .iter()
            .find(|p| p["name"] == repository && p["versionInfo"] == tag)
            .unwrap_or_else(|| panic!("{reference} is not in the SBOM"));
        assert_eq!(
            image["checksums"][0]["checksumValue"],
            digest.trim_start_matches("sha256:"),
            "{reference}"
        );
        images += 1;
        let inspect = Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:{reference}", cache.display()))
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let config: Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let label = config["config"]["Labels"]["org.berth.debian.packages"]
            .as_str()
            .unwrap_or_default();
        for entry in label.split_whitespace() {
            let (name, version) = entry.split_once('=').unwrap();
            let listed = packages
                .iter()
                .any(|p| p["name"] == name && p["versionInfo"] == version);
            assert!(
                listed,
                "{reference}: Debian package {entry} is not in the SBOM"
            );
            debian += 1;
        }
    }
    // The kernel, init, three onboot and four service images; the kernel
    // and the services are made of Debian packages.
    assert_eq!(images, 9, "{lock}");
    assert!(debian > 9, "{debian} Debian packages");
    let kernel = packages.iter().find(|p| p["name"] == "linux").unwrap();
    assert!(
        kernel["versionInfo"]
            .as_str()
            .is_some_and(|v| v.ends_with("-cloud-amd64")),
        "{kernel}"
    );
}

/// The attestation travels: the attested image pushed with all its
/// manifests (`skopeo copy --all`) to the tests' registry, a build with an
/// empty cache pulls the image and its attestation, and merges the SBOM.
#[test]
fn an_attested_sbom_is_pulled_with_its_image_from_a_registry() {
    if !fixtures::program_or_skip("docker-registry", "docker-registry")
        || !fixtures::program_or_skip("skopeo", "skopeo")
    {
        return;
    }
    let registry = fixtures::registry::Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = small_cache(&dir.path().join("source"));
    add_attested_image(&source);
    common::push_small_images(&source, &registry);
    common::push_all(
        &registry,
        &format!("oci:{}:{ATTESTED}", source.display()),
        "test/attested:1",
    );
    let host = registry.host();
    let yaml = DEFINITION
        .replace(
            "files:\n",
            "  - name: app\n    image: test/attested:1\nfiles:\n",
        )
        .replace("test/", &format!("{host}/test/"));
    std::fs::write(dir.path().join("image.yml"), yaml).unwrap();
    let built = common::berth_online(
        dir.path(),
        &["build", "-f", "tar", "-o", "out", "image.yml"],
    )
    .output()
    .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let document = json(&dir.path().join("out/image.spdx.json"));
    let merged = document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "attested-app" && p["versionInfo"] == "2.0");
    assert!(merged, "{document:#}");
}
