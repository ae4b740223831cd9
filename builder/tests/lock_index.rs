//! A lock file pins a multi-arch image by its manifest and by the index it
//! was chosen from, through a real registry (Debian's docker-registry on
//! 127.0.0.1): a build with the lock sees the index as the build that made
//! the lock did, so the SPDX attestation the index carries is merged into
//! the same SBOM and a signature made on the index (what `berth sign` of
//! the tag does) satisfies the trust policy, online and offline from the
//! cache. A lock whose index does not list its manifest is refused in one
//! line before anything is written; a lock line without an index reads as
//! before.

mod common;

use std::path::Path;
use std::process::Output;

use common::{
    ATTESTED, DEFINITION, add_attested_image, berth_online, files, key, push_all, python,
    registry_digest as digest, registry_with_small_images, stderr,
};

/// `berth ARGS` in `dir` with its cache `dir/cache`, network allowed.
fn berth(dir: &Path, args: &[&str]) -> Output {
    berth_online(dir, args).output().unwrap()
}

fn succeeds(dir: &Path, args: &[&str]) {
    let out = berth(dir, args);
    assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The registry with the small images and, as `test/attested:1`, the
/// attested multi-arch image with all its manifests; `None`, said,
/// without docker-registry, skopeo or python3-cryptography.
fn registry_with_attested_image() -> Option<(fixtures::registry::Registry, tempfile::TempDir)> {
    if !python() {
        return None;
    }
    let (registry, source) = registry_with_small_images()?;
    let cache = source.path().join("cache");
    add_attested_image(&cache);
    push_all(
        &registry,
        &format!("oci:{}:{ATTESTED}", cache.display()),
        "test/attested:1",
    );
    Some((registry, source))
}

/// The small definition with its images in the registry at `host`, a
/// service of the attested image, and `trust`.
fn definition(host: &str, trust: &str) -> String {
    let yaml = DEFINITION.replace(
        "files:\n",
        "  - name: app\n    image: test/attested:1\nfiles:\n",
    );
    format!("{}{trust}", yaml.replace("test/", &format!("{host}/test/")))
}

/// The lock file's line for `reference`, split into words.
fn lock_line(lock: &Path, reference: &str) -> Vec<String> {
    String::from_utf8(read(lock))
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .unwrap_or_else(|| panic!("{reference} is not in the lock"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The lock and the SBOM of the build in `b` are those of the build in `a`.
fn assert_same_build(a: &Path, b: &Path) {
    for name in ["image.lock", "image.spdx.json"] {
        assert!(
            read(&a.join(name)) == read(&b.join(name)),
            "{name} of {} and {} differ",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn a_locked_build_sees_the_index_its_image_was_chosen_from_online_and_offline() {
    let Some((registry, _source)) = registry_with_attested_image() else {
        return;
    };
    let host = registry.host();
    let attested = format!("{host}/test/attested:1");
    let index = digest(&attested);
    // Signed at the index alone, as `cosign sign` signs a multi-arch tag.
    let signer = tempfile::tempdir().unwrap();
    key(signer.path(), "release");
    succeeds(signer.path(), &["sign", &attested, "--key", "release.key"]);

    let first = tempfile::tempdir().unwrap();
    let first = first.path();
    std::fs::copy(signer.path().join("release.pub"), first.join("release.pub")).unwrap();
    let trust = format!(
        "trust:\n  keys:\n    release: release.pub\n  images:\n    - pattern: \"{host}/test/attested\"\n      keys: [release]\n"
    );
    std::fs::write(first.join("image.yml"), definition(&host, &trust)).unwrap();
    succeeds(first, &["build", "-f", "tar", "-o", "a", "image.yml"]);
    let line = lock_line(&first.join("a/image.lock"), &attested);
    assert_eq!(line.len(), 4, "{line:?}");
    assert_eq!(line[2], index, "the index follows the manifest: {line:?}");
    assert_ne!(line[1], index);
    assert!(line[3].starts_with("release=sha256:"), "{line:?}");
    let sbom = String::from_utf8(read(&first.join("a/image.spdx.json"))).unwrap();
    assert!(sbom.contains("attested-app"), "the attestation is merged");

    // With the lock, from the same cache, then from an empty one (which
    // pulls the image by the index's digest), then offline from that.
    succeeds(
        first,
        &[
            "build",
            "--lock",
            "a/image.lock",
            "-f",
            "tar",
            "-o",
            "b",
            "image.yml",
        ],
    );
    assert_same_build(&first.join("a"), &first.join("b"));
    // A lock line without the index pins the manifest alone, whose
    // signature (there is none but the index's) is not found.
    let lock = String::from_utf8(read(&first.join("a/image.lock"))).unwrap();
    std::fs::write(
        first.join("old.lock"),
        lock.replace(&format!(" {index}"), ""),
    )
    .unwrap();
    let old = berth(
        first,
        &[
            "build",
            "--lock",
            "old.lock",
            "-f",
            "tar",
            "-o",
            "old",
            "image.yml",
        ],
    );
    assert_eq!(old.status.code(), Some(1), "{}", stderr(&old));
    assert!(stderr(&old).contains("no signature"), "{}", stderr(&old));
    assert!(!first.join("old").exists());
    let second = tempfile::tempdir().unwrap();
    let second = second.path();
    for name in ["image.yml", "release.pub", "a/image.lock"] {
        std::fs::create_dir_all(second.join(name).parent().unwrap()).unwrap();
        std::fs::copy(first.join(name), second.join(name)).unwrap();
    }
    succeeds(
        second,
        &[
            "build",
            "--lock",
            "a/image.lock",
            "-f",
            "tar",
            "-o",
            "c",
            "image.yml",
        ],
    );
    drop(registry);
    for dir in [first, second] {
        succeeds(
            dir,
            &[
                "build",
                "--offline",
                "--lock",
                "a/image.lock",
                "-f",
                "tar",
                "-o",
                "d",
                "image.yml",
            ],
        );
    }
    succeeds(
        first,
        &["build", "--offline", "-f", "tar", "-o", "e", "image.yml"],
    );
    for (dir, other) in [(second, "c"), (first, "d"), (second, "d"), (first, "e")] {
        assert_same_build(&first.join("a"), &dir.join(other));
    }
}

#[test]
fn a_lock_whose_index_does_not_list_its_manifest_is_refused_and_old_locks_still_work() {
    let Some((registry, source)) = registry_with_attested_image() else {
        return;
    };
    let host = registry.host();
    let attested = format!("{host}/test/attested:1");
    // Another index in the same repository, of another image.
    let other = source.path().join("other");
    let layout = fixtures::Layout::create(&other).unwrap();
    let image = fixtures::Image::new().layer(fixtures::Layer::new().file(
        "bin/other",
        0o755,
        b"other".to_vec(),
    ));
    layout
        .add_index("docker.io/test/attested:2", &[("amd64", &image)])
        .unwrap();
    push_all(
        &registry,
        &format!("oci:{}:docker.io/test/attested:2", other.display()),
        "test/attested:2",
    );
    let other_index = digest(&format!("{host}/test/attested:2"));

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("image.yml"), definition(&host, "")).unwrap();
    succeeds(dir, &["build", "-f", "tar", "-o", "a", "image.yml"]);
    let lock = String::from_utf8(read(&dir.join("a/image.lock"))).unwrap();
    let line = lock_line(&dir.join("a/image.lock"), &attested);
    let (manifest, index) = (&line[1], &line[2]);

    // The manifest pinned with an index that does not list it: one line,
    // naming the reference and both digests, and nothing written.
    let forged = lock.replace(index.as_str(), &other_index);
    std::fs::write(dir.join("forged.lock"), forged).unwrap();
    std::fs::create_dir(dir.join("out")).unwrap();
    for offline in [false, true] {
        let mut args = vec!["build", "--lock", "forged.lock", "-f", "tar", "-o", "out"];
        if offline {
            args.push("--offline");
        }
        args.push("image.yml");
        let out = berth(dir, &args);
        let error = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{error}");
        let lines: Vec<&str> = error.lines().filter(|l| l.starts_with("berth:")).collect();
        assert_eq!(lines.len(), 1, "one error line: {error}");
        for needle in [
            "image.yml:",
            attested.as_str(),
            manifest.as_str(),
            other_index.as_str(),
            "is not listed in the index",
        ] {
            assert!(lines[0].contains(needle), "{needle:?} in {error}");
        }
        assert_eq!(files(&dir.join("out")), Vec::<String>::new(), "{error}");
        eprintln!("refused: {}", lines[0]);
    }

    // A lock line written before indexes were recorded: the manifest
    // alone, pinned as before.
    let old = lock.replace(&format!(" {index}"), "");
    assert!(!old.contains(index.as_str()));
    std::fs::write(dir.join("old.lock"), &old).unwrap();
    succeeds(
        dir,
        &[
            "build",
            "--lock",
            "old.lock",
            "-f",
            "tar",
            "-o",
            "old",
            "image.yml",
        ],
    );
    assert_eq!(
        lock_line(&dir.join("old/image.lock"), &attested)[1],
        *manifest
    );
}
