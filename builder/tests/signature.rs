//! Image signatures the cosign way, through a real registry (Debian's
//! docker-registry on 127.0.0.1): `berth sign` and `berth verify` online
//! and offline from the cache, signatures accumulating, every refusal one
//! line that names the image, its digest and the keys, with nothing
//! written; and the format checked by an independent implementation,
//! `cosign_format.py` (urllib and python3-cryptography), which verifies
//! what berth signs and signs what berth must accept.
//!
//! docker-registry, skopeo and python3-cryptography are prerequisites:
//! without them a test says it was skipped, and under CI=true it fails
//! instead.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{
    INIT, KERNEL, SERVICE, cosign_helper as helper, generate_key as generate, key, python,
    registry_digest as digest, registry_for_python as registry, small_cache, stderr, stdout,
};

/// `berth ARGS` in `dir`, cache `dir/cache`, network allowed, no password.
fn berth(dir: &Path, args: &[&str]) -> Output {
    common::berth_online(dir, args)
        .env_remove("BERTH_KEY_PASSWORD")
        .output()
        .unwrap()
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let out = berth(dir, args);
    assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs berth, expects one line of error containing every needle, and
/// checks that the cache's `index.json` did not change.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let index = dir.join("cache/index.json");
    let before = std::fs::read(&index).ok();
    let error = common::one_line_error(&berth(dir, args), args, needles);
    assert_eq!(
        std::fs::read(&index).ok(),
        before,
        "the cache changed: {error}"
    );
    eprintln!("refused: {error}");
    error
}

/// The `.sig` manifest of `digest` in `repository`, read by skopeo.
fn signature_manifest(repository: &str, digest: &str) -> serde_json::Value {
    let tag = digest.replace(':', "-") + ".sig";
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{repository}:{tag}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sign_and_verify_round_trip_online_and_offline_and_signatures_accumulate() {
    let Some((registry, _source)) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let host = registry.host();
    let service = format!("{host}/test/service:1");
    let expected = digest(&service);
    key(dir, "a");
    key(dir, "b");

    let signed = succeeds(dir, &["sign", &service, "--key", "a.key"]);
    assert_eq!(signed, format!("{service}@{expected} signed\n"));
    // The independent reader finds it where cosign looks, in cosign's form.
    let checked = helper(dir, &["verify", &host, "test/service", "1", "a.pub"]);
    assert_eq!(checked, format!("verified 1 {expected}\n"));
    let verified = succeeds(dir, &["verify", &service, "--key", "a.pub"]);
    assert_eq!(
        verified,
        format!("{service}@{expected} verified by a.pub\n")
    );

    // A second key adds a layer; the same key again adds nothing.
    succeeds(dir, &["sign", &service, "--key", "b.key"]);
    let again = succeeds(dir, &["sign", &service, "--key", "a.key"]);
    assert!(again.contains("already signed"), "{again}");
    let manifest = signature_manifest(&format!("{host}/test/service"), &expected);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        assert!(layer["annotations"]["dev.cosignproject.cosign/signature"].is_string());
    }
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    helper(dir, &["verify", &host, "test/service", "1", "a.pub"]);
    helper(dir, &["verify", &host, "test/service", "1", "b.pub"]);
    succeeds(dir, &["verify", &service, "--key", "b.pub"]);

    // The reverse: signed by the helper (with berth's key file), accepted
    // by berth.
    let init = format!("{host}/test/init:1");
    helper(dir, &["sign", &host, "test/init", "1", "a.key"]);
    let verified = succeeds(dir, &["verify", &init, "--key", "b.pub", "--key", "a.pub"]);
    assert!(verified.ends_with("verified by a.pub\n"), "{verified}");

    // Offline: another cache pulls the image, its signatures come along,
    // and the registry is gone.
    let offline = tempfile::tempdir().unwrap();
    let offline = offline.path();
    for name in ["a.pub", "b.pub"] {
        std::fs::copy(dir.join(name), offline.join(name)).unwrap();
    }
    let pulled = berth(offline, &["cache", "pull", &service]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert!(stderr(&pulled).contains(".sig"), "{}", stderr(&pulled));
    drop(registry);
    let verified = succeeds(
        offline,
        &["verify", "--offline", &service, "--key", "a.pub"],
    );
    assert_eq!(
        verified,
        format!("{service}@{expected} verified by a.pub\n")
    );
    succeeds(
        offline,
        &["verify", "--offline", &service, "--key", "b.pub"],
    );
    key(offline, "c");
    refused(
        offline,
        &["verify", "--offline", &service, "--key", "c.pub"],
        &[&service, &expected, "c.pub", "none of the keys"],
    );
    // A cached manifest altered after signing is caught by its digest.
    let blob = offline
        .join("cache/blobs/sha256")
        .join(expected.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.push(b' ');
    std::fs::write(&blob, bytes).unwrap();
    refused(
        offline,
        &["verify", "--offline", &service, "--key", "a.pub"],
        &[&service, &expected],
    );
}

#[test]
fn refusals_name_image_digest_and_keys_and_write_nothing() {
    let Some((registry, source)) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let host = registry.host();
    key(dir, "a");
    key(dir, "other");
    // The cache exists before the first refusal, so that "nothing
    // written" is checked on a real index.json.
    succeeds(dir, &["cache", "pull", &format!("{host}/test/init:1")]);

    // No signature at all.
    let init = format!("{host}/test/init:1");
    let init_digest = digest(&init);
    refused(
        dir,
        &["verify", &init, "--key", "a.pub"],
        &[&init, &init_digest, "a.pub", "no signature"],
    );

    // A signature by another key.
    let service = format!("{host}/test/service:1");
    let service_digest = digest(&service);
    succeeds(dir, &["sign", &service, "--key", "other.key"]);
    refused(
        dir,
        &["verify", &service, "--key", "a.pub"],
        &[&service, &service_digest, "a.pub", "none of the keys"],
    );

    // The manifest changed after signing: the same image written again
    // with Docker's manifest format has another digest, which nobody
    // signed.
    let kernel = format!("{host}/test/kernel:1");
    succeeds(dir, &["sign", &kernel, "--key", "a.key"]);
    let copied = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false", "--format", "v2s2"])
        .arg(format!(
            "oci:{}:{KERNEL}",
            source.path().join("cache").display()
        ))
        .arg(format!("docker://{kernel}"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    let changed = digest(&kernel);
    refused(
        dir,
        &["verify", &kernel, "--key", "a.pub"],
        &[&kernel, &changed, "a.pub", "no signature"],
    );

    // The tag moved to another image after signing.
    let moved = format!("{host}/test/moved:1");
    registry
        .skopeo_push(
            &format!("oci:{}:{SERVICE}", source.path().join("cache").display()),
            "test/moved:1",
        )
        .unwrap();
    succeeds(dir, &["sign", &moved, "--key", "a.key"]);
    succeeds(dir, &["verify", &moved, "--key", "a.pub"]);
    registry
        .skopeo_push(
            &format!("oci:{}:{INIT}", source.path().join("cache").display()),
            "test/moved:1",
        )
        .unwrap();
    refused(
        dir,
        &["verify", &moved, "--key", "a.pub"],
        &[&moved, &init_digest, "a.pub", "no signature"],
    );

    // A signature, valid under the key, made for another digest and put
    // where this digest's signatures go.
    helper(
        dir,
        &[
            "sign",
            &host,
            "test/init",
            "1",
            "a.key",
            "--digest",
            &service_digest,
        ],
    );
    refused(
        dir,
        &["verify", &init, "--key", "a.pub"],
        &[
            &init,
            &init_digest,
            "a.pub",
            &format!("is for {service_digest:?}"),
        ],
    );

    // A payload that names another repository.
    let elsewhere = format!("{host}/test/elsewhere");
    helper(
        dir,
        &[
            "sign",
            &host,
            "test/init",
            "1",
            "a.key",
            "--identity",
            &elsewhere,
        ],
    );
    refused(
        dir,
        &["verify", &init, "--key", "other.pub", "--key", "a.pub"],
        &[
            &init,
            &init_digest,
            "other.pub, a.pub",
            &format!("names repository {elsewhere:?}"),
        ],
    );
}

#[test]
fn keys_are_never_overwritten_private_ones_are_0600_and_encrypted_ones_need_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    small_cache(dir);
    let (private, public) = key(dir, "k");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    let out = generate(dir, &["-o", "k"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(
        error.contains("k.key") && error.contains("never overwrites"),
        "{error}"
    );
    let after = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    assert_eq!(before, after);

    // Encrypted with the password in the environment.
    let made = generate(dir, &["-o", "e"])
        .env("BERTH_KEY_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let text = std::fs::read_to_string(dir.join("e.key")).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{text}"
    );
    if python() {
        // OpenSSL (through python3-cryptography) decrypts it to the same key.
        let encrypted = dir.join("e.key").display().to_string();
        let public = helper(dir, &["public", &encrypted, "correct horse"]);
        assert_eq!(public, std::fs::read_to_string(dir.join("e.pub")).unwrap());
    }

    // Signing offline, in the cache: refused without the password, done
    // with it, verified offline.
    refused(
        dir,
        &["sign", "--offline", KERNEL, "--key", "e.key"],
        &["e.key", "encrypted", "BERTH_KEY_PASSWORD"],
    );
    let signed = common::berth_online(dir, &["sign", "--offline", KERNEL, "--key", "e.key"])
        .env("BERTH_KEY_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", stderr(&signed));
    let wrong = common::berth_online(dir, &["sign", "--offline", KERNEL, "--key", "e.key"])
        .env("BERTH_KEY_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(
        stderr(&wrong).contains("does not decrypt"),
        "{}",
        stderr(&wrong)
    );
    succeeds(dir, &["verify", "--offline", KERNEL, "--key", "e.pub"]);
    refused(
        dir,
        &["verify", "--offline", KERNEL, "--key", "k.pub"],
        &[KERNEL, "k.pub", "none of the keys"],
    );
}

#[test]
fn pkg_build_signs_what_it_builds_in_the_cache_and_with_push_in_the_registry() {
    let Some((registry, _source)) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let host = registry.host();
    key(dir, "a");
    std::fs::create_dir(dir.join("hello")).unwrap();
    std::fs::write(
        dir.join("hello/build.yml"),
        format!(
            "image: {host}/test/hello\nfiles:\n  - path: /etc/motd\n    contents: \"hello\\n\"\n"
        ),
    )
    .unwrap();

    // Without --push: signed in the cache, verified offline.
    let built = succeeds(
        dir,
        &["pkg", "build", "hello", "--sign", "a.key", "--offline"],
    );
    let (reference, digest) = built.lines().next().unwrap().split_once(' ').unwrap();
    assert!(
        built.contains(&format!("signed {reference}@{digest}")),
        "{built}"
    );
    succeeds(dir, &["verify", "--offline", reference, "--key", "a.pub"]);

    // With --push: the registry has the image and its signature, which
    // the independent reader verifies.
    let built = succeeds(dir, &["pkg", "build", "hello", "--push", "--sign", "a.key"]);
    assert!(
        built.contains(&format!("signed {reference}@{digest}")),
        "{built}"
    );
    let tag = reference.rsplit_once(':').unwrap().1;
    let checked = helper(dir, &["verify", &host, "test/hello", tag, "a.pub"]);
    assert_eq!(checked, format!("verified 1 {digest}\n"));
    succeeds(dir, &["verify", reference, "--key", "a.pub"]);

    // A key that cannot be read stops the build before anything is made.
    let error = refused(
        dir,
        &[
            "pkg",
            "build",
            "hello",
            "--sign",
            "missing.key",
            "--offline",
        ],
        &["missing.key"],
    );
    assert!(error.contains("No such file"), "{error}");
}
