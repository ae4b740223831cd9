//! Pulling from a real registry (Debian's docker-registry on 127.0.0.1),
//! through a fault-injecting proxy where the test needs faults.
//!
//! The registry and skopeo are prerequisites: without them a test says it
//! was skipped, and under CI=true it fails instead.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use fixtures::proxy::{Fault, Proxy};
use fixtures::registry::Registry;

use common::{SERVICE, files, small_cache, stderr};

/// Whether the programs the registry tests need are installed; in CI their
/// absence is a failure, elsewhere a visible skip.
fn prerequisites(programs: &[(&str, &str)]) -> bool {
    for (program, argument) in programs {
        if Command::new(program).arg(argument).output().is_err() {
            let message = format!(
                "{program} is missing (Debian: docker-registry skopeo apache2-utils openssl)"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("skipped: {message}");
            return false;
        }
    }
    true
}

fn registry(auth: bool) -> Option<Registry> {
    let mut programs = vec![("docker-registry", "--version"), ("skopeo", "--version")];
    if auth {
        programs.push(("htpasswd", "-h"));
    }
    if !prerequisites(&programs) {
        return None;
    }
    Some(if auth {
        Registry::start_with_auth("berth", "s3cret").unwrap()
    } else {
        Registry::start().unwrap()
    })
}

/// Pushes the three images of [`small_cache`] to `registry` as
/// `test/NAME:1`.
fn push_small(dir: &Path, registry: &Registry) {
    let cache = small_cache(dir);
    common::push_small_images(&cache, registry);
    std::fs::remove_dir_all(cache).unwrap();
}

fn definition(host: &str) -> String {
    common::DEFINITION
        .replace("test/kernel:1", &format!("{host}/test/kernel:1"))
        .replace("test/init:1", &format!("{host}/test/init:1"))
        .replace("test/service:1", &format!("{host}/test/service:1"))
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    common::berth_online(dir, args).output().unwrap()
}

fn build(dir: &Path, yaml: &str, out: &str, extra: &[&str]) -> Output {
    std::fs::write(dir.join("image.yml"), yaml).unwrap();
    let mut args = vec!["build", "-f", "tar", "-o", out];
    args.extend(extra);
    args.push("image.yml");
    berth(dir, &args)
}

fn verify(dir: &Path) {
    let out = berth(dir, &["cache", "verify"]);
    assert!(out.status.success(), "cache verify: {}", stderr(&out));
}

#[test]
fn images_pushed_with_skopeo_are_pulled_built_and_locked() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let yaml = definition(&registry.host());

    let cold = build(dir.path(), &yaml, "cold", &[]);
    assert!(cold.status.success(), "{}", stderr(&cold));
    verify(dir.path());
    let names = String::from_utf8(berth(dir.path(), &["cache", "ls"]).stdout).unwrap();
    assert_eq!(names.lines().count(), 3, "{names}");
    assert!(names.contains(&format!("{}/test/service:1 sha256:", registry.host())));

    // Warm and offline: the same bytes, without the registry.
    drop(registry);
    let warm = build(dir.path(), &yaml, "warm", &["--offline"]);
    assert!(warm.status.success(), "{}", stderr(&warm));
    for name in ["image.tar", "image.lock"] {
        assert_eq!(
            std::fs::read(dir.path().join("cold").join(name)).unwrap(),
            std::fs::read(dir.path().join("warm").join(name)).unwrap(),
            "{name}"
        );
    }
    let lock = std::fs::read_to_string(dir.path().join("cold/image.lock")).unwrap();
    assert_eq!(
        lock.lines().filter(|l| l.contains(" sha256:")).count(),
        3,
        "{lock}"
    );
}

#[test]
fn a_lock_pins_digests_when_the_tag_moves() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let yaml = definition(&registry.host());
    let first = build(dir.path(), &yaml, "first", &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    // Move the service tag to another image.
    let other = dir.path().join("other");
    let layout = fixtures::Layout::create(&other).unwrap();
    layout
        .add_image(
            "docker.io/test/other:1",
            &fixtures::Image::new()
                .layer(fixtures::Layer::new().file("bin/tool", 0o755, "tool v3"))
                .cmd(["/bin/tool"]),
        )
        .unwrap();
    registry
        .skopeo_push(
            &format!("oci:{}:docker.io/test/other:1", other.display()),
            "test/service:1",
        )
        .unwrap();

    let pinned = build(
        dir.path(),
        &yaml,
        "pinned",
        &["--pull", "--lock", "first/image.lock"],
    );
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let moved = build(dir.path(), &yaml, "moved", &["--pull"]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    let tar = |run: &str| std::fs::read(dir.path().join(run).join("image.tar")).unwrap();
    assert_eq!(tar("first"), tar("pinned"));
    assert_ne!(tar("first"), tar("moved"));
    verify(dir.path());

    // A tag the registry does not have: one line, 404, naming both.
    let missing = yaml.replace("test/init:1", "test/init:nope");
    let out = build(dir.path(), &missing, "missing", &[]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "image {0}/test/init:nope: registry {0}: 404 not found",
            registry.host()
        )),
        "{message}"
    );
    assert_eq!(
        message.lines().filter(|l| l.starts_with("berth:")).count(),
        1,
        "{message}"
    );

    // A reference missing from the lock is an error naming it.
    std::fs::write(dir.path().join("partial.lock"), "").unwrap();
    let out = build(dir.path(), &yaml, "partial", &["--lock", "partial.lock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("test/kernel:1 is not in the lock file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_architecture_is_chosen_from_an_index() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout_dir = dir.path().join("multi");
    let layout = fixtures::Layout::create(&layout_dir).unwrap();
    let image = |arch: &str| {
        fixtures::Image::new()
            .architecture(arch)
            .layer(fixtures::Layer::new().file("arch", 0o644, arch.to_string()))
            .cmd(["/bin/true"])
    };
    layout
        .add_index(
            "docker.io/test/multi:1",
            &[("amd64", &image("amd64")), ("arm64", &image("arm64"))],
        )
        .unwrap();
    let mut copy = Command::new("skopeo");
    copy.args(["copy", "-q", "--all", "--dest-tls-verify=false"])
        .arg(format!(
            "oci:{}:docker.io/test/multi:1",
            layout_dir.display()
        ))
        .arg(format!("docker://{}/test/multi:1", registry.host()));
    assert!(copy.status().unwrap().success());

    let yaml = format!(
        "services:\n  - name: m\n    image: {}/test/multi:1\n",
        registry.host()
    );
    for arch in ["arm64", "amd64"] {
        let out = build(dir.path(), &yaml, arch, &["--arch", arch]);
        assert!(out.status.success(), "{}", stderr(&out));
        let tar = std::fs::read(dir.path().join(arch).join("image.tar")).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut content = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("lower/arch") {
                std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
            }
        }
        assert_eq!(content, arch);
    }
    verify(dir.path());
}

#[test]
fn credentials_come_from_the_docker_configuration() {
    let Some(registry) = registry(true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let yaml = definition(&registry.host());
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let config = |password: &str| {
        let auth = base64(&format!("berth:{password}"));
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        )
    };

    std::fs::write(docker.join("config.json"), config("wrong")).unwrap();
    let refused = build(dir.path(), &yaml, "refused", &[]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains(&format!("registry {}: 401 unauthorized", registry.host())),
        "{message}"
    );
    assert_eq!(
        message.lines().filter(|l| l.starts_with("berth:")).count(),
        1,
        "{message}"
    );
    assert!(files(&dir.path().join("refused")).is_empty());

    std::fs::write(docker.join("config.json"), config("s3cret")).unwrap();
    let accepted = build(dir.path(), &yaml, "accepted", &[]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    verify(dir.path());
}

fn base64(text: &str) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn transient_faults_are_retried_and_bad_blobs_never_kept() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let proxy = Proxy::start(registry.address()).unwrap();
    let yaml = definition(&proxy.host());
    for (run, fault) in [
        ("truncated", Fault::Truncate),
        ("corrupt", Fault::Corrupt),
        ("error", Fault::ServerError),
        ("stalled", Fault::Stall),
    ] {
        let _ = std::fs::remove_dir_all(dir.path().join("cache"));
        let before = proxy.faulted();
        proxy.set(fault, 2);
        let out = build(dir.path(), &yaml, run, &[]);
        assert!(out.status.success(), "{run}: {}", stderr(&out));
        assert!(proxy.faulted() > before, "{run}: no fault was injected");
        assert!(stderr(&out).contains("retrying"), "{run}: {}", stderr(&out));
        verify(dir.path());
    }
    // A fault that does not go away ends in one clear error, and nothing
    // bad stays in the cache.
    let _ = std::fs::remove_dir_all(dir.path().join("cache"));
    proxy.set(Fault::Corrupt, usize::MAX);
    let out = build(dir.path(), &yaml, "always", &[]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("(after 4 attempts)"), "{message}");
    // oci-client checks the digest as the stream ends, before berth does.
    assert!(
        message.contains("Invalid digest. Expected sha256:"),
        "{message}"
    );
    verify(dir.path());
    assert!(files(&dir.path().join("always")).is_empty());
}

#[test]
fn a_pull_killed_midway_leaves_a_valid_cache() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let proxy = Proxy::start(registry.address()).unwrap();
    let yaml = definition(&proxy.host());
    std::fs::write(dir.path().join("image.yml"), &yaml).unwrap();
    proxy.set(Fault::Stall, usize::MAX);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["build", "-f", "tar", "-o", "killed", "--cache"])
        .arg(dir.path().join("cache"))
        .arg("image.yml")
        .current_dir(dir.path())
        .env_remove("BERTH_OFFLINE")
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .env("BERTH_READ_TIMEOUT", "60")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.faulted() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(proxy.faulted() > 0, "the pull never reached a blob");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    verify(dir.path());
    assert!(files(&dir.path().join("killed")).is_empty());

    proxy.set(Fault::None, 0);
    let again = build(dir.path(), &yaml, "again", &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    verify(dir.path());
}

#[test]
fn images_pushed_by_berth_are_read_by_skopeo_and_archives_round_trip() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let digest = |text: &[u8]| -> String {
        let value: serde_json::Value = serde_json::from_slice(text).unwrap();
        value["Digest"].as_str().unwrap().to_string()
    };
    // skopeo reads berth's cache as an OCI layout.
    let local = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{SERVICE}", cache.display()))
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    let destination = format!("{}/pushed/service:2", registry.host());
    let push = berth(dir.path(), &["cache", "push", SERVICE, &destination]);
    assert!(push.status.success(), "{}", stderr(&push));
    let remote = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{destination}"))
        .output()
        .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert_eq!(digest(&remote.stdout), digest(&local.stdout));
    let copy = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{destination}"))
        .arg(format!(
            "oci:{}:copied",
            dir.path().join("copied").display()
        ))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );

    // Export, then import into an empty cache, then build offline from it.
    let export = berth(
        dir.path(),
        &["cache", "export", SERVICE, "-o", "service.tar"],
    );
    assert!(export.status.success(), "{}", stderr(&export));
    let archive = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci-archive:{}",
            dir.path().join("service.tar").display()
        ))
        .output()
        .unwrap();
    assert!(
        archive.status.success(),
        "{}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let other = tempfile::tempdir().unwrap();
    let import = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["cache", "import"])
        .arg(dir.path().join("service.tar"))
        .arg("--cache")
        .arg(other.path().join("cache"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", stderr(&import));
    assert_eq!(String::from_utf8_lossy(&import.stdout).trim(), SERVICE);
    let yaml = "services:\n  - name: s\n    image: test/service:1\n";
    let built = build(other.path(), yaml, "out", &["--offline"]);
    assert!(built.status.success(), "{}", stderr(&built));
    verify(other.path());
}

#[test]
fn two_builds_can_share_one_cache() {
    let Some(registry) = registry(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    std::fs::write(dir.path().join("image.yml"), definition(&registry.host())).unwrap();
    let spawn = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["build", "-f", "tar", "-o", out, "--cache"])
            .arg(dir.path().join("cache"))
            .arg("image.yml")
            .current_dir(dir.path())
            .env_remove("BERTH_OFFLINE")
            .env("DOCKER_CONFIG", dir.path().join("docker"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        std::fs::read(dir.path().join("a/image.tar")).unwrap(),
        std::fs::read(dir.path().join("b/image.tar")).unwrap()
    );
    let names = berth(dir.path(), &["cache", "ls"]);
    assert_eq!(String::from_utf8_lossy(&names.stdout).lines().count(), 3);
    verify(dir.path());
}

#[test]
fn a_registry_with_its_own_ca_is_trusted_only_with_ca_cert() {
    let programs = [
        ("docker-registry", "--version"),
        ("skopeo", "--version"),
        ("openssl", "version"),
    ];
    if !prerequisites(&programs) {
        return;
    }
    let (registry, ca) = Registry::start_tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let yaml = definition(&registry.host());

    let untrusted = build(dir.path(), &yaml, "untrusted", &[]);
    assert_eq!(untrusted.status.code(), Some(1));
    let message = stderr(&untrusted);
    assert!(message.contains("certificate"), "{message}");

    let ca = ca.display().to_string();
    let trusted = build(dir.path(), &yaml, "trusted", &["--ca-cert", &ca]);
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    verify(dir.path());
}

#[test]
fn credential_helpers_are_asked() {
    let Some(registry) = registry(true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    push_small(dir.path(), &registry);
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"berth\",\"Secret\":\"s3cret\"}' \"$server\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"berthtest"}}}}"#, registry.host()),
    )
    .unwrap();
    std::fs::write(dir.path().join("image.yml"), definition(&registry.host())).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["build", "-f", "tar", "-o", "out", "--cache"])
        .arg(dir.path().join("cache"))
        .arg("image.yml")
        .current_dir(dir.path())
        .env_remove("BERTH_OFFLINE")
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
