//! Helpers shared by the builder's integration tests: a cache written with
//! the fixtures crate, and the berth binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fixtures::{Image, Layer, Layout};

pub const KERNEL: &str = "docker.io/test/kernel:1";
pub const INIT: &str = "docker.io/test/init:1";
pub const SERVICE: &str = "docker.io/test/service:1";

/// A cache with a small kernel image (a fake kernel, a modules tarball:
/// virtio_net, which depends on net_failover, and extra, which no default
/// takes), an init image and a two-layer service image.
pub fn small_cache(dir: &Path) -> PathBuf {
    let cache = dir.join("cache");
    let layout = Layout::create(&cache).unwrap();
    let mut modules = tar::Builder::new(Vec::new());
    let module = fixtures::elf_module(b"depends=net_failover\0alias=virtio:d00000001v*\0");
    let failover = fixtures::elf_module(b"depends=\0");
    let extra = fixtures::elf_module(b"depends=\0alias=pci:v00008086d*\0");
    for (path, data) in [
        ("lib/modules/6.1.0/kernel/virtio_net.ko", &module[..]),
        ("lib/modules/6.1.0/kernel/net_failover.ko", &failover[..]),
        ("lib/modules/6.1.0/kernel/extra.ko", &extra[..]),
        ("lib/modules/6.1.0/modules.builtin", &b"kernel/b.ko\n"[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        modules.append_data(&mut header, path, data).unwrap();
    }
    let modules = modules.into_inner().unwrap();
    let kernel = Image::new().layer(
        Layer::new()
            .file("kernel", 0o644, b"not really a kernel".to_vec())
            .file("kernel.tar", 0o644, modules)
            .file("System.map", 0o644, b"map".to_vec()),
    );
    layout.add_image(KERNEL, &kernel).unwrap();
    let init = Image::new().layer(
        Layer::new()
            .dir("bin", 0o755)
            .file("bin/busybox", 0o755, b"busybox".to_vec())
            .symlink("bin/sh", "busybox")
            .file("init", 0o755, b"#!/bin/sh\necho init\n".to_vec())
            .file("etc/hostname", 0o644, b"dropped\n".to_vec()),
    );
    layout.add_image(INIT, &init).unwrap();
    let service = Image::new()
        .layer(
            Layer::new()
                .file("bin/tool", 0o755, b"tool v1".to_vec())
                .file("etc/old", 0o644, b"old".to_vec())
                .file("usr/share/doc/a", 0o644, b"doc".to_vec())
                .hardlink("bin/tool-link", "bin/tool"),
        )
        .layer(
            Layer::new()
                .compression(fixtures::Compression::Zstd)
                .file("bin/tool", 0o755, b"tool v2".to_vec())
                .whiteout("etc/old")
                .opaque("usr/share/doc")
                .file("usr/share/doc/b", 0o644, b"new doc".to_vec()),
        )
        .cmd(["/bin/tool"])
        .env("PATH=/bin")
        .label(
            "org.mobyproject.config",
            r#"{"pid":"host","capabilities":["CAP_SYS_ADMIN"],"binds":["/etc/resolv.conf:/etc/resolv.conf"]}"#,
        );
    layout.add_image(SERVICE, &service).unwrap();
    cache
}

/// Adds `docker.io/test/tampered:1` to `cache`: an image whose stored,
/// uncompressed layer had eight bytes of a file changed after it was
/// written, so the tar still parses and only the digest can tell.
pub fn add_tampered_image(cache: &Path) {
    let layout = Layout::create(cache).unwrap();
    let layer = Layer::new().compression(fixtures::Compression::None).file(
        "data",
        0o644,
        b"original bytes".to_vec(),
    );
    layout
        .add_image("docker.io/test/tampered:1", &Image::new().layer(layer))
        .unwrap();
    let mut tampered = 0;
    for blob in std::fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(14).position(|w| w == b"original bytes") {
            bytes[at..at + 8].copy_from_slice(b"tampered");
            std::fs::write(&path, bytes).unwrap();
            tampered += 1;
        }
    }
    assert_eq!(tampered, 1);
}

/// Pushes the three images of the [`small_cache`] at `cache` to `registry`
/// as `test/NAME:1`.
pub fn push_small_images(cache: &Path, registry: &fixtures::registry::Registry) {
    for (reference, name) in [(KERNEL, "kernel"), (INIT, "init"), (SERVICE, "service")] {
        registry
            .skopeo_push(
                &format!("oci:{}:{reference}", cache.display()),
                &format!("test/{name}:1"),
            )
            .unwrap();
    }
}

pub const ATTESTED: &str = "docker.io/test/attested:1";

/// Adds `ATTESTED` as an index with an amd64 image and, as BuildKit stores
/// it, an attestation manifest whose layer is an in-toto statement holding
/// an SPDX document about one package.
pub fn add_attested_image(cache: &Path) {
    let layout = Layout::create(cache).unwrap();
    let image = Image::new().layer(Layer::new().file("bin/app", 0o755, b"app".to_vec()));
    let index_digest = layout.add_index(ATTESTED, &[("amd64", &image)]).unwrap();
    let mut index = fixtures::read_json_blob(&layout, &index_digest).unwrap();
    let image_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let spdx = serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "app",
        "documentNamespace": "https://example.org/app",
        "creationInfo": {"created": "2024-01-01T00:00:00Z", "creators": ["Tool: scanner"]},
        "packages": [{
            "SPDXID": "SPDXRef-Package-app",
            "name": "attested-app",
            "versionInfo": "2.0",
            "downloadLocation": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": "pkg:generic/attested-app@2.0"
            }]
        }],
        "relationships": [{
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Package-app"
        }]
    });
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "app", "digest": {"sha256": image_digest.trim_start_matches("sha256:")}}],
        "predicate": spdx,
    });
    let layer = layout
        .write_blob(
            "application/vnd.in-toto+json",
            &serde_json::to_vec(&statement).unwrap(),
        )
        .unwrap();
    let config = layout
        .write_blob("application/vnd.oci.image.config.v1+json", b"{}")
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [{
            "mediaType": layer.media_type,
            "digest": layer.digest,
            "size": layer.size,
            "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}
        }]
    });
    let manifest = layout
        .write_blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": image_digest
            }
        }));
    let index = layout
        .write_blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    layout.tag(ATTESTED, index).unwrap();
}

/// Copies `source` (a skopeo source) to `registry` as `repository_and_tag`
/// with every manifest of its index (`skopeo copy --all`), attestations
/// included.
pub fn push_all(registry: &fixtures::registry::Registry, source: &str, repository_and_tag: &str) {
    let copied = Command::new("skopeo")
        .args(["copy", "-q", "--all", "--dest-tls-verify=false"])
        .arg(source)
        .arg(format!("docker://{}/{repository_and_tag}", registry.host()))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "skopeo copy {source}: {}",
        stderr(&copied)
    );
}

pub const DEFINITION: &str = "\
kernel:
  image: test/kernel:1
  cmdline: console=ttyS0
init:
  - test/init:1
onboot:
  - name: first
    image: test/service:1
    command: [/bin/tool, --once]
services:
  - name: svc
    image: test/service:1
    readonly: true
files:
  - path: etc/motd
    contents: hello
  - path: /var/lib/state
    directory: true
";

/// The files a build of [`DEFINITION`] named `image` writes in the formats
/// tar, kernel+initrd and tar-kernel-initrd, sorted.
pub const IMAGE_FILES: [&str; 7] = [
    "image-cmdline",
    "image-initrd.img",
    "image-initrd.tar",
    "image-kernel",
    "image.lock",
    "image.spdx.json",
    "image.tar",
];

pub fn berth(args: &[&str], dir: &Path) -> Output {
    berth_env(args, dir, None)
}

/// Runs berth with `SOURCE_DATE_EPOCH` set to `epoch`, or unset.
pub fn berth_env(args: &[&str], dir: &Path, epoch: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    // The test images exist only in the test's cache: never look for them
    // on the network.
    command
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("BERTH_OFFLINE", "1");
    if let Some(epoch) = epoch {
        command.env("SOURCE_DATE_EPOCH", epoch);
    }
    command.output().unwrap()
}

/// `berth ARGS` in `dir` with the network allowed, the private cache
/// `dir/cache` and Docker configuration `dir/docker`, a short read timeout
/// and `SOURCE_DATE_EPOCH` unset.
pub fn berth_online(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .arg("--cache")
        .arg(dir.join("cache"))
        .current_dir(dir)
        .env_remove("BERTH_OFFLINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("BERTH_READ_TIMEOUT", "3");
    command
}

/// The error of a run that failed as a refusal must: status 1, one line,
/// every one of `needles` in it.
pub fn one_line_error(out: &Output, args: &[&str], needles: &[&str]) -> String {
    let error = stderr(out);
    assert_eq!(out.status.code(), Some(1), "berth {args:?}: {error}");
    assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
    for needle in needles {
        assert!(error.contains(needle), "{needle:?} in {error}");
    }
    error
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `program ARGS` runs; in CI its absence is a failure, elsewhere
/// a visible skip.
pub fn have(program: &str, args: &[&str], package: &str) -> bool {
    let ran = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ran {
        let message = format!("{program} {args:?} fails (Debian: {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
    }
    ran
}

/// Whether the Python helper `cosign_format.py` can run (python3 with
/// python3-cryptography).
pub fn python() -> bool {
    have(
        "python3",
        &["-c", "import cryptography"],
        "python3-cryptography",
    )
}

/// The independent reading of cosign's format in Python,
/// `cosign_format.py ARGS`, run in `dir`.
pub fn cosign_helper(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosign_format.py"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "helper {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// A registry (Debian's docker-registry on 127.0.0.1) holding the three
/// images of [`small_cache`] as `test/NAME:1`, and the directory of the
/// cache they were pushed from; `None`, said, without docker-registry or
/// skopeo.
pub fn registry_with_small_images() -> Option<(fixtures::registry::Registry, tempfile::TempDir)> {
    if !have("docker-registry", &["--version"], "docker-registry")
        || !have("skopeo", &["--version"], "skopeo")
    {
        return None;
    }
    let registry = fixtures::registry::Registry::start().unwrap();
    let source = tempfile::tempdir().unwrap();
    push_small_images(&small_cache(source.path()), &registry);
    Some((registry, source))
}

/// The digest under which the cache at `cache` names `reference` (fully
/// expanded, `docker.io/test/NAME:1`), read from its `index.json`.
pub fn cached_digest(cache: &Path, reference: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{reference} is not in {}", cache.display()))
        .to_string()
}

/// [`registry_with_small_images`], when the Python helper can run too.
pub fn registry_for_python() -> Option<(fixtures::registry::Registry, tempfile::TempDir)> {
    if !python() {
        return None;
    }
    registry_with_small_images()
}

/// The digest of `reference`'s manifest in a registry, read by skopeo.
pub fn registry_digest(reference: &str) -> String {
    use sha2::Digest;
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    format!("sha256:{:x}", sha2::Sha256::digest(&out.stdout))
}

/// `berth key generate ARGS` in `dir` (a command that takes no cache).
pub fn generate_key(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(["key", "generate"])
        .args(args)
        .current_dir(dir)
        .env_remove("BERTH_KEY_PASSWORD");
    command
}

/// `berth key generate -o NAME` in `dir`: NAME.key and NAME.pub.
pub fn key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = generate_key(dir, &["-o", name]).output().unwrap();
    assert!(out.status.success(), "key generate: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{name}.key\n{name}.pub\n"));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// The SPDX validator: `BERTH_PYSPDXTOOLS`, or `pyspdxtools` on the
/// `PATH`; `None`, said, when missing (a failure under CI=true).
pub fn pyspdxtools() -> Option<PathBuf> {
    let program = std::env::var_os("BERTH_PYSPDXTOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pyspdxtools"));
    if Command::new(&program).arg("--help").output().is_ok() {
        return Some(program);
    }
    let message = "pyspdxtools is missing (PyPI spdx-tools; `cargo xtask test` installs it)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    None
}

/// Validates the SPDX `document` with pyspdxtools; panics with its report.
pub fn validate_spdx(program: &Path, document: &Path) {
    let output = Command::new(program)
        .arg("-i")
        .arg(document)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{}: {report}", document.display());
    assert!(!report.contains("not valid"), "{report}");
}

/// The files in `dir`, sorted, hidden ones included.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Writes `yaml` to `DIR/image.yml` and runs `berth build` on it with the
/// given formats into `DIR/out`, reading images from `cache`.
pub fn build_yaml(dir: &Path, cache: &Path, yaml: &str, formats: &[&str]) -> Output {
    std::fs::write(dir.join("image.yml"), yaml).unwrap();
    let mut args = vec!["build"];
    for format in formats {
        args.extend(["-f", format]);
    }
    args.extend(["-o", "out", "--cache", cache.to_str().unwrap(), "image.yml"]);
    berth(&args, dir)
}

/// Lists a tar archive: path (without a trailing `/`), type, and the
/// link target or the data.
pub fn tar_listing(bytes: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string();
            let kind = format!("{:?}", e.header().entry_type());
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            let detail = link.map(String::into_bytes).unwrap_or(data);
            (path, kind, detail)
        })
        .collect()
}
