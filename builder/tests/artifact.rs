//! Builds as OCI artifacts in a real registry (Debian's docker-registry on
//! 127.0.0.1): what `berth push` stores is read back field by field with
//! skopeo and blob by blob with curl, straight from the registry's API, and
//! `berth pull` gives back the same bytes, from the cache once the registry
//! is gone; hostile artifacts and container images are refused.
//!
//! docker-registry, skopeo and curl are prerequisites: without them a test
//! says it was skipped, and under CI=true it fails instead.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use fixtures::registry::Registry;
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::{DEFINITION, KERNEL, small_cache, stderr, stdout};

const ARTIFACT_TYPE: &str = "application/vnd.berth.build.v1";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn registry() -> Option<Registry> {
    for (program, argument) in [
        ("docker-registry", "--version"),
        ("skopeo", "--version"),
        ("curl", "--version"),
    ] {
        if Command::new(program).arg(argument).output().is_err() {
            let message = format!("{program} is missing (Debian: docker-registry skopeo curl)");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("skipped: {message}");
            return None;
        }
    }
    Some(Registry::start().unwrap())
}

/// `berth ARGS` in `dir` with the network allowed and the cache `dir/cache`
/// ([`common::berth_online`]), `SOURCE_DATE_EPOCH` fixed.
fn berth(dir: &Path, args: &[&str]) -> Output {
    common::berth_online(dir, args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

/// Runs berth and expects it to fail with one line that contains every
/// one of `needles`.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    common::one_line_error(&berth(dir, args), args, needles)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    out.stdout
}

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    out.stdout
}

/// A fake build named `img` in `dir/out`: a few small files of known bytes
/// and an initrd of several MiB that does not compress.
fn fake_build(dir: &Path) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let initrd: Vec<u8> = (0..5 * 1024 * 1024 + 17)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let files = vec![
        (
            "img-cmdline",
            "application/vnd.berth.cmdline",
            b"console=ttyS0 quiet".to_vec(),
        ),
        ("img-initrd.img", "application/vnd.berth.initrd", initrd),
        (
            "img-kernel",
            "application/vnd.berth.kernel",
            b"not really a kernel".to_vec(),
        ),
        (
            "img.lock",
            "application/vnd.berth.lock",
            b"docker.io/x/y:1 sha256:0\n".to_vec(),
        ),
    ];
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (name, _, bytes) in &files {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    files
}

fn assert_same_files(dir: &Path, files: &[(&str, &str, Vec<u8>)]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected: Vec<&str> = files.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(
        names,
        expected,
        "nothing more, nothing less in {}",
        dir.display()
    );
    for (name, _, bytes) in files {
        assert!(
            std::fs::read(dir.join(name)).unwrap() == *bytes,
            "{name} differs"
        );
    }
}

#[test]
fn a_pushed_build_is_an_oras_artifact_and_comes_back_byte_for_byte() {
    let Some(registry) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let files = fake_build(dir);
    // Beside the build, files that are none of its own: never pushed.
    std::fs::write(dir.join("out/notes.txt"), "secret").unwrap();
    std::fs::write(dir.join("out/other-kernel.bak"), "x").unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"img-\xff");
        std::fs::write(dir.join("out").join(name), "not UTF-8").unwrap();
    }
    let host = registry.host();
    let reference = format!("{host}/builds/img:1");

    let pushed = berth(dir, &["push", "out", &reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let printed = stdout(&pushed);
    let digest = printed
        .trim()
        .strip_prefix(&format!("{reference}@"))
        .unwrap_or_else(|| panic!("REF@DIGEST: {printed}"))
        .to_string();

    // The manifest, as an independent client reads it.
    let raw = skopeo_raw(&reference);
    assert_eq!(sha256(&raw), digest, "the printed digest is the manifest's");
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], EMPTY_DIGEST);
    assert_eq!(manifest["config"]["size"], 2);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), files.len());
    for (layer, (name, media_type, bytes)) in layers.iter().zip(&files) {
        assert_eq!(
            layer["annotations"]["org.opencontainers.image.title"],
            *name
        );
        assert_eq!(layer["mediaType"], *media_type, "{name}");
        assert_eq!(layer["digest"], sha256(bytes), "{name}");
        assert_eq!(layer["size"], bytes.len(), "{name}");
        // The blob, straight from the registry's API.
        let url = format!("http://{host}/v2/builds/img/blobs/{}", sha256(bytes));
        assert!(
            curl(&[&url]) == *bytes,
            "{name}: the registry's blob differs"
        );
    }
    let config = curl(&[&format!("http://{host}/v2/builds/img/blobs/{EMPTY_DIGEST}")]);
    assert_eq!(config, b"{}");

    // The same files give the same manifest.
    let again = berth(dir, &["push", "out", &reference, "--name", "img"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), printed);

    // Back, by tag and by digest.
    let pulled = berth(dir, &["pull", &reference, "-o", "back"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_eq!(stdout(&pulled).lines().count(), files.len());
    assert_same_files(&dir.join("back"), &files);
    let by_digest = format!("{host}/builds/img@{digest}");
    let pulled = berth(dir, &["pull", &by_digest, "-o", "pinned"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_same_files(&dir.join("pinned"), &files);

    // A tag that does not exist, and a registry that does not answer.
    fails(
        dir,
        &["pull", &format!("{host}/builds/img:2"), "-o", "none"],
        &[&format!("{host}/builds/img:2"), "not found"],
    );
    assert!(!dir.join("none").exists());

    // Offline, from the cache, once the registry is gone.
    drop(registry);
    let offline = berth(dir, &["pull", "--offline", &reference, "-o", "offline"]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_same_files(&dir.join("offline"), &files);
    let stopped = fails(dir, &["pull", &reference, "-o", "stopped"], &[&host]);
    assert!(!dir.join("stopped").exists(), "{stopped}");
    fails(dir, &["push", "out", &reference], &[&host]);
}

#[test]
fn hostile_titles_and_container_images_are_refused_and_nothing_is_written() {
    let Some(registry) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    fake_build(dir);
    let host = registry.host();
    let good = format!("{host}/builds/img:1");
    let pushed = berth(dir, &["push", "out", &good]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // The same artifact with one title made hostile, pushed with curl.
    let mut manifest: Value = serde_json::from_slice(&skopeo_raw(&good)).unwrap();
    manifest["layers"][1]["annotations"]["org.opencontainers.image.title"] = "../evil".into();
    put_manifest(dir, &host, "evil", &manifest);
    let evil = format!("{host}/builds/img:evil");
    fails(
        dir,
        &["pull", &evil, "-o", "deep/out"],
        &[&evil, "\"../evil\""],
    );
    assert!(!dir.join("deep").exists());
    assert!(!dir.join("evil").exists());

    // A container image is not an artifact: said, and none of its layers
    // fetched.
    std::fs::create_dir(dir.join("images")).unwrap();
    let cache = small_cache(&dir.join("images"));
    registry
        .skopeo_push(
            &format!("oci:{}:{KERNEL}", cache.display()),
            "test/kernel:1",
        )
        .unwrap();
    let image = format!("{host}/test/kernel:1");
    fails(
        dir,
        &["pull", &image, "-o", "image"],
        &[&image, "container image"],
    );
    assert!(!dir.join("image").exists());
    // Neither refused manifest, nor any layer, is in the cache.
    let listed = berth(dir, &["cache", "ls"]);
    assert_eq!(stdout(&listed), "");
    assert_eq!(
        common::files(&dir.join("cache/blobs/sha256")),
        [] as [String; 0]
    );
}

#[test]
fn berth_build_push_stores_what_the_build_wrote() {
    let Some(registry) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    small_cache(dir);
    std::fs::write(dir.join("image.yml"), DEFINITION).unwrap();
    let reference = format!("{}/builds/image:1", registry.host());
    // The images come from the cache the test made (`dir/cache`); only the
    // push is network traffic.
    let built = berth(
        dir,
        &[
            "build",
            "-f",
            "kernel+initrd",
            "-o",
            "out",
            "--push",
            &reference,
            "image.yml",
        ],
    );
    assert!(built.status.success(), "{}", stderr(&built));
    let printed = stdout(&built);
    let last = printed.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{reference}@sha256:")),
        "{printed}"
    );
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&reference)).unwrap();
    let titles: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        titles,
        [
            "image-cmdline",
            "image-initrd.img",
            "image-kernel",
            "image.lock",
            "image.spdx.json"
        ]
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let title = layer["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap();
        let bytes = std::fs::read(dir.join("out").join(title)).unwrap();
        assert_eq!(layer["digest"], sha256(&bytes), "{title}");
    }
}

#[test]
fn push_names_a_missing_directory_or_one_without_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let reference = "127.0.0.1:9/builds/x:1";
    fails(dir, &["push", "missing", reference], &["missing"]);
    std::fs::create_dir(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty/notes.txt"), "hello").unwrap();
    fails(dir, &["push", "empty", reference], &["empty", "no build"]);
    fails(
        dir,
        &["push", "empty", reference, "--name", "x"],
        &["empty", "no build named x"],
    );
    std::fs::create_dir(dir.join("two")).unwrap();
    for name in ["a-kernel", "b.iso"] {
        std::fs::write(dir.join("two").join(name), "x").unwrap();
    }
    fails(dir, &["push", "two", reference], &["two", "a, b", "--name"]);
}

/// Puts `manifest` under `tag` of `host`'s `builds/img`, with curl.
fn put_manifest(dir: &Path, host: &str, tag: &str, manifest: &Value) {
    let path = dir.join(format!("{tag}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest).unwrap()).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", path.display()),
        &format!("http://{host}/v2/builds/img/manifests/{tag}"),
    ]);
}

#[test]
fn a_failed_pull_changes_no_file_and_a_corrupt_cache_is_fetched_again() {
    let Some(registry) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let files = fake_build(dir);
    let host = registry.host();
    let reference = format!("{host}/builds/img:1");
    let pushed = berth(dir, &["push", "out", &reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    let pulled = berth(dir, &["pull", &reference, "-o", "first"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));

    // A directory where a file goes: refused before any file is replaced.
    std::fs::create_dir_all(dir.join("busy/img-kernel")).unwrap();
    std::fs::write(dir.join("busy/img-cmdline"), "mine").unwrap();
    fails(
        dir,
        &["pull", "--offline", &reference, "-o", "busy"],
        &["busy/img-kernel", "directory"],
    );
    assert_eq!(
        std::fs::read(dir.join("busy/img-cmdline")).unwrap(),
        b"mine"
    );
    assert!(!dir.join("busy/img-initrd.img").exists());
    assert_eq!(
        common::files(&dir.join("busy")).len(),
        2,
        "no temp file left"
    );

    // A blob altered in the cache (same size) is never handed out: offline
    // it is an error naming it, online it is fetched again.
    let (_, _, kernel) = &files[2];
    let blob = dir.join("cache/blobs/sha256").join(&sha256(kernel)[7..]);
    std::fs::write(&blob, b"NOT REALLY A KERNEL").unwrap();
    fails(
        dir,
        &["pull", "--offline", &reference, "-o", "offline"],
        &[&sha256(kernel), "img-kernel", "berth cache verify"],
    );
    assert!(!dir.join("offline").exists());
    let pulled = berth(dir, &["pull", &reference, "-o", "again"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_same_files(&dir.join("again"), &files);
    assert!(std::fs::read(&blob).unwrap() == *kernel, "the cache healed");

    // More files than the process may have open at once.
    let mut manifest: Value = serde_json::from_slice(&skopeo_raw(&reference)).unwrap();
    let layer = manifest["layers"][0].clone();
    manifest["layers"] = (0..200)
        .map(|i| {
            let mut layer = layer.clone();
            layer["annotations"]["org.opencontainers.image.title"] =
                format!("f{i:03}-cmdline").into();
            layer
        })
        .collect();
    put_manifest(dir, &host, "many", &manifest);
    let out = Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["pull", &format!("{host}/builds/img:many"), "-o", "many"])
        .arg("--cache")
        .arg(dir.join("cache"))
        .current_dir(dir)
        .env_remove("BERTH_OFFLINE")
        .env("DOCKER_CONFIG", dir.join("docker"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::files(&dir.join("many")).len(), 200);

    // A blob longer than its manifest says: refused, and never read whole.
    let (_, _, initrd) = &files[1];
    let mut manifest: Value = serde_json::from_slice(&skopeo_raw(&reference)).unwrap();
    manifest["layers"][1]["size"] = 1000.into();
    put_manifest(dir, &host, "long", &manifest);
    std::fs::remove_dir_all(dir.join("cache")).unwrap();
    let long = format!("{host}/builds/img:long");
    let out = berth(dir, &["pull", &long, "-o", "long"]);
    assert_eq!(out.status.code(), Some(1));
    let error = stderr(&out);
    let last = error.trim_end().lines().last().unwrap_or_default();
    for needle in [&long, &sha256(initrd), "more than the 1000 bytes"] {
        assert!(last.contains(needle), "{needle:?} in {error}");
    }
    assert!(!dir.join("long").exists(), "{error}");
}
