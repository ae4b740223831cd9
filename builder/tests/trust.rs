//! The trust policy (`trust:`) through a real registry (Debian's
//! docker-registry on 127.0.0.1): a build whose images are all signed by
//! the keys its rules name succeeds and its lock and SBOM name the key; one
//! with an image unsigned, signed by another key, or whose tag moved after
//! signing is refused in one line before anything is written; a build
//! works offline from the cache after an online one; `berth validate`
//! refuses a policy's bad keys and rules, naming file and place; LinuxKit's
//! keyless `trust:` warns and builds.
//!
//! Signatures are made with `berth sign` in a separate cache, so the build
//! finds them in the registry. Fingerprints are computed here from the PEM
//! by Python's standard library, and the SBOM is checked with pyspdxtools.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{
    DEFINITION, INIT, berth_online, build_yaml, files, key, pyspdxtools, python,
    registry_digest as digest, registry_with_small_images, small_cache, stderr, stdout,
    validate_spdx,
};

/// `berth ARGS` in `dir` with its cache `dir/cache`, network allowed.
fn berth(dir: &Path, args: &[&str]) -> Output {
    berth_online(dir, args).output().unwrap()
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let out = berth(dir, args);
    assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Every file of `dir` (hidden ones included) and its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

/// Runs a build expected to be refused: exit status 1, one error line
/// holding every needle, and the output directory `out` of `dir` exactly
/// as it was.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let out_dir = dir.join("out");
    let before = contents(&out_dir);
    let out = berth(dir, args);
    let error = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "berth {args:?}: {error}");
    let lines: Vec<&str> = error.lines().filter(|l| l.starts_with("berth:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {error}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} in {error}");
    }
    assert_eq!(contents(&out_dir), before, "the output changed: {error}");
    eprintln!("refused: {}", lines[0]);
    lines[0].to_string()
}

/// `sha256:` of the DER inside the SPKI PEM at `path`, by Python's
/// standard library.
fn fingerprint(path: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64, hashlib, sys\n\
             body = ''.join(l for l in open(sys.argv[1]) if not l.startswith('-----'))\n\
             print('sha256:' + hashlib.sha256(base64.b64decode(body)).hexdigest())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "python3: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// The registry with the small images, where they were pushed from, and a
/// signer's directory (its own cache, keys `release` and `other`).
struct Setup {
    registry: fixtures::registry::Registry,
    source: tempfile::TempDir,
    signer: tempfile::TempDir,
    host: String,
    kernel: String,
    init: String,
    service: String,
}

/// [`Setup`], or `None` (said) without docker-registry, skopeo or
/// python3-cryptography.
fn setup() -> Option<Setup> {
    if !python() {
        return None;
    }
    let (registry, source) = registry_with_small_images()?;
    let signer = tempfile::tempdir().unwrap();
    key(signer.path(), "release");
    key(signer.path(), "other");
    let host = registry.host();
    Some(Setup {
        kernel: format!("{host}/test/kernel:1"),
        init: format!("{host}/test/init:1"),
        service: format!("{host}/test/service:1"),
        registry,
        source,
        signer,
        host,
    })
}

/// Signs `reference` in the registry with the signer's key `name`.
fn sign(signer: &Path, reference: &str, name: &str) {
    succeeds(
        signer,
        &["sign", reference, "--key", &format!("{name}.key")],
    );
}

/// A build directory whose `keys/` holds the signer's public keys.
fn builder_dir(signer: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    for name in ["release.pub", "other.pub"] {
        std::fs::copy(signer.join(name), dir.path().join("keys").join(name)).unwrap();
    }
    dir
}

/// The small definition with its images in the registry at `host`, and
/// `trust`.
fn definition(host: &str, trust: &str) -> String {
    format!(
        "{}{trust}",
        DEFINITION.replace("test/", &format!("{host}/test/"))
    )
}

/// The lock file's lines, `REFERENCE` → the rest.
fn lock(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (reference, rest) = l.split_once(' ').unwrap();
            (reference.to_string(), rest.to_string())
        })
        .collect()
}

/// The `berth.signature` annotation of each image package of the SBOM,
/// by package name and version.
fn signature_statuses(sbom: &Path) -> BTreeMap<String, String> {
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sbom).unwrap()).unwrap();
    document["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .map(|p| {
            (
                format!(
                    "{}:{}",
                    p["name"].as_str().unwrap(),
                    p["versionInfo"].as_str().unwrap()
                ),
                p["annotations"][0]["comment"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_build_whose_images_are_signed_succeeds_names_the_keys_and_works_offline_after() {
    let Some(Setup {
        registry,
        signer,
        host,
        kernel,
        init,
        service,
        ..
    }) = setup()
    else {
        return;
    };
    for reference in [&kernel, &init, &service] {
        sign(signer.path(), reference, "release");
    }
    // The service is signed by both keys; the rule that names `other`
    // alone is satisfied by it.
    sign(signer.path(), &service, "other");
    let dir = builder_dir(signer.path());
    let dir = dir.path();
    // No rule matches the kernel: it needs no signature.
    let trust = format!(
        "trust:\n  keys:\n    release: keys/release.pub\n    other: keys/other.pub\n  images:\n    - pattern: \"{host}/test/init\"\n      keys: [release]\n    - pattern: \"{host}/**/s*\"\n      keys: [release, other]\n    - pattern: \"{host}/test/service\"\n      keys: [other]\n"
    );
    std::fs::write(dir.join("image.yml"), definition(&host, &trust)).unwrap();
    let valid = common::berth(&["validate", "image.yml"], dir);
    assert_eq!(stdout(&valid), "image.yml: valid\n", "{}", stderr(&valid));

    succeeds(dir, &["build", "-f", "tar", "-o", "out", "image.yml"]);
    let release = fingerprint(&dir.join("keys/release.pub"));
    let other = fingerprint(&dir.join("keys/other.pub"));
    let locked = lock(&dir.join("out/image.lock"));
    assert_eq!(
        locked,
        BTreeMap::from([
            (kernel.clone(), digest(&kernel)),
            (init.clone(), format!("{} release={release}", digest(&init))),
            (
                service.clone(),
                format!("{} other={other} release={release}", digest(&service))
            ),
        ])
    );
    let sbom = dir.join("out/image.spdx.json");
    assert_eq!(
        signature_statuses(&sbom),
        BTreeMap::from([
            (
                format!("{host}/test/kernel:1"),
                "berth.signature: not required".to_string()
            ),
            (
                format!("{host}/test/init:1"),
                format!("berth.signature: verified by release ({release})")
            ),
            (
                format!("{host}/test/service:1"),
                format!("berth.signature: verified by other ({other}), release ({release})")
            ),
        ])
    );
    if let Some(program) = pyspdxtools() {
        validate_spdx(&program, &sbom);
    }

    // The registry gone, the cache has the images and their signatures.
    drop(registry);
    succeeds(
        dir,
        &[
            "build",
            "--offline",
            "-f",
            "tar",
            "-o",
            "offline",
            "image.yml",
        ],
    );
    for name in ["image.lock", "image.spdx.json", "image.tar"] {
        assert_eq!(
            std::fs::read(dir.join("offline").join(name)).unwrap(),
            std::fs::read(dir.join("out").join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_build_is_refused_before_writing_anything_unless_each_image_is_signed_by_a_named_key() {
    let Some(Setup {
        registry,
        source,
        signer,
        host,
        kernel,
        init,
        service,
    }) = setup()
    else {
        return;
    };
    sign(signer.path(), &kernel, "release");
    sign(signer.path(), &service, "release");
    let dir = builder_dir(signer.path());
    let dir = dir.path();
    let trust = format!(
        "trust:\n  keys:\n    release: keys/release.pub\n  images:\n    - pattern: \"{host}/test/*\"\n      keys: [release]\n"
    );
    std::fs::write(dir.join("image.yml"), definition(&host, &trust)).unwrap();
    std::fs::create_dir(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/earlier"), "an earlier build's file\n").unwrap();
    let release = format!("release ({})", fingerprint(&dir.join("keys/release.pub")));
    let build = ["build", "-f", "tar", "-o", "out", "image.yml"];
    let init_digest = digest(&init);

    // The init image has no signature.
    let error = refused(
        dir,
        &build,
        &[&init, &init_digest, &release, "no signature"],
    );
    assert!(error.contains("image.yml:"), "the YAML position: {error}");

    // Signed, but by another key.
    sign(signer.path(), &init, "other");
    refused(
        dir,
        &build,
        &[&init, &init_digest, &release, "none of the keys"],
    );

    // Signed by the key, but (by the Python helper, as cosign would) for
    // another digest, then naming another repository.
    let service_digest = digest(&service);
    let key = signer.path().join("release.key").display().to_string();
    let forged = [
        (
            "--digest",
            service_digest.clone(),
            format!("is for {service_digest:?}"),
        ),
        (
            "--identity",
            format!("{host}/test/elsewhere"),
            format!("names repository \"{host}/test/elsewhere\""),
        ),
    ];
    for (option, value, reason) in forged {
        common::cosign_helper(
            dir,
            &["sign", &host, "test/init", "1", &key, option, &value],
        );
        refused(dir, &build, &[&init, &init_digest, &release, &reason]);
    }

    // Signed by the key: the build goes through, the cache undamaged.
    sign(signer.path(), &init, "release");
    succeeds(dir, &build);
    let built = contents(&dir.join("out"));
    assert!(built.contains_key("image.tar") && built.contains_key("earlier"));

    // The tag moved to another image after signing: a build that asks
    // the registry again (--pull) gets the new digest, which nobody signed.
    let moved = format!("{host}/test/moved:1");
    registry
        .skopeo_push(
            &format!(
                "oci:{}:{}",
                source.path().join("cache").display(),
                common::SERVICE
            ),
            "test/moved:1",
        )
        .unwrap();
    sign(signer.path(), &moved, "release");
    // The onboot entry runs the moved image, the service the signed one.
    let moved_yaml = definition(&host, &trust).replacen(
        &format!("image: {service}"),
        &format!("image: {moved}"),
        1,
    );
    std::fs::write(dir.join("image.yml"), &moved_yaml).unwrap();
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    succeeds(dir, &build);
    registry
        .skopeo_push(
            &format!("oci:{}:{INIT}", source.path().join("cache").display()),
            "test/moved:1",
        )
        .unwrap();
    let moved_digest = digest(&moved);
    assert_eq!(moved_digest, init_digest);
    refused(
        dir,
        &["build", "--pull", "-f", "tar", "-o", "out", "image.yml"],
        &[&moved, &moved_digest, &release, "no signature"],
    );
    // The lock of the build before pins the image that was signed.
    std::fs::copy(dir.join("out/image.lock"), dir.join("image.lock")).unwrap();
    succeeds(
        dir,
        &[
            "build",
            "--lock",
            "image.lock",
            "-f",
            "tar",
            "-o",
            "out",
            "image.yml",
        ],
    );
}

#[test]
fn validate_refuses_bad_keys_rules_and_fields_naming_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    key(dir, "release");
    std::fs::write(dir.join("bad.pub"), "not a key\n").unwrap();
    let check = |yaml: &str, needles: &[&str]| {
        std::fs::write(dir.join("a.yml"), yaml).unwrap();
        let out = common::berth(&["validate", "a.yml"], dir);
        let error = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{yaml}: {error}");
        assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
        for needle in needles {
            assert!(error.contains(needle), "{needle:?} in {error}");
        }
    };
    check(
        "trust:\n  keys:\n    release: missing.pub\n",
        &[
            "a.yml:3:14: trust.keys.release: key ",
            "missing.pub",
            "No such file",
        ],
    );
    check(
        "trust:\n  keys:\n    release: bad.pub\n",
        &["a.yml:3:14: trust.keys.release: key ", "bad.pub: not PEM"],
    );
    check(
        "trust:\n  keys:\n    release: release.pub\n  images:\n    - pattern: \"berth/**\"\n      keys: [release, ci]\n",
        &["a.yml:6:23: trust.images[0].keys[1]: no key \"ci\" in trust.keys (defined: release)"],
    );
    check(
        "trust:\n  keys:\n    release: release.pub\n  images:\n    - pattern: \"berth/**\"\n      keys: [release]\n      signed: true\n",
        &["a.yml:7:7: trust.images[0].signed: unknown field `signed`"],
    );
    check(
        "trust:\n  keys:\n    release: release.pub\n  images:\n    - pattern: \"berth/x:1\"\n      keys: [release]\n",
        &[
            "a.yml:5:16: trust.images[0].pattern: pattern \"berth/x:1\": a pattern names repositories, without a tag",
        ],
    );
    std::fs::write(
        dir.join("a.yml"),
        "trust:\n  keys:\n    release: release.pub\n",
    )
    .unwrap();
    let out = common::berth(&["validate", "a.yml"], dir);
    assert!(out.status.success(), "{}", stderr(&out));

    // Two files, each with a key `release` beside it, different keys.
    std::fs::create_dir(dir.join("other")).unwrap();
    key(&dir.join("other"), "release");
    std::fs::write(
        dir.join("other/b.yml"),
        "trust:\n  keys:\n    release: release.pub\n",
    )
    .unwrap();
    let out = common::berth(&["validate", "a.yml", "other/b.yml"], dir);
    let error = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{error}");
    assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
    assert!(
        error.contains("other/b.yml:3:14: trust.keys.release: key \"release\" is sha256:")
            && error.contains("at a.yml:3:14"),
        "{error}"
    );
    // The same key named twice is one key.
    std::fs::copy(dir.join("release.pub"), dir.join("other/release.pub")).unwrap();
    let out = common::berth(&["validate", "a.yml", "other/b.yml"], dir);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn linuxkit_trust_without_keys_warns_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cache = small_cache(dir);
    let yaml =
        format!("{DEFINITION}trust:\n  org:\n    - linuxkit\n  image:\n    - redis:4.0.5-alpine\n");
    let out = build_yaml(dir, &cache, &yaml, &["tar"]);
    let error = stderr(&out);
    assert!(out.status.success(), "{error}");
    let warnings: Vec<&str> = error.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{error}");
    assert!(
        warnings[0].starts_with("berth: warning: image.yml:")
            && warnings[0].contains("no keys to check against"),
        "{error}"
    );
    assert!(files(&dir.join("out")).contains(&"image.tar".to_string()));
    let locked = std::fs::read_to_string(dir.join("out/image.lock")).unwrap();
    assert!(locked.contains(&format!("{INIT} sha256:")), "{locked}");
    assert!(!locked.contains('='), "no key verified anything: {locked}");
}
