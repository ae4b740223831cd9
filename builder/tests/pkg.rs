//! `berth pkg build` and `@pkg:` references, without Docker: the same
//! inputs give the same digest, a changed input changes the tag, a
//! definition naming `@pkg:DIR` builds the package on the way, and a bad
//! `build.yml` is named with its line.

mod common;

use std::fs;
use std::path::Path;

use common::{berth, berth_env, small_cache, stderr};

fn package(dir: &Path) {
    fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
    fs::write(dir.join("rootfs/etc/motd"), "from a package\n").unwrap();
    fs::write(
        dir.join("build.yml"),
        r##"image: berth/hello
files:
  - path: /
    source: rootfs
  - path: /bin/hello
    contents: "#!/bin/sh\necho hello\n"
    mode: "0755"
  - path: /bin/hi
    symlink: hello
  - path: /var/empty
    directory: true
cmd: ["/bin/hello"]
config:
  binds: ["/run:/run"]
  capabilities: [CAP_NET_ADMIN]
"##,
    )
    .unwrap();
}

fn build(dir: &Path, args: &[&str]) -> (String, String) {
    let output = berth(args, dir);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8(output.stdout).unwrap();
    let (reference, digest) = out.trim().split_once(' ').unwrap();
    (reference.to_string(), digest.to_string())
}

#[test]
fn the_same_inputs_give_the_same_digest_and_a_change_a_new_tag() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("hello");
    package(&pkg);
    let args = ["pkg", "build", "hello", "--cache", "cache"];
    let (first, digest) = build(dir.path(), &args);
    assert!(first.starts_with("docker.io/berth/hello:"), "{first}");
    let shown = berth(&["pkg", "show-tag", "hello"], dir.path());
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), first);
    // Again, and into another cache: the same bytes.
    let (again, digest_again) = build(dir.path(), &["pkg", "build", "hello", "--cache", "other"]);
    assert_eq!((&again, &digest_again), (&first, &digest));
    // One byte of one file changes the tag.
    fs::write(pkg.join("rootfs/etc/motd"), "from a package!\n").unwrap();
    let (changed, changed_digest) = build(dir.path(), &args);
    assert_ne!(changed, first);
    assert_ne!(changed_digest, digest);
    // Modes count as git keeps them: the executable bit, not the umask.
    use std::os::unix::fs::PermissionsExt;
    let motd = pkg.join("rootfs/etc/motd");
    let tag = || {
        let output = berth(&["pkg", "show-tag", "hello"], dir.path());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(tag(), changed);
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(tag(), changed);
}

#[test]
fn a_definition_naming_a_package_builds_it_and_uses_its_label() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    package(&dir.path().join("images/hello"));
    fs::create_dir_all(dir.path().join("examples")).unwrap();
    fs::write(
        dir.path().join("examples/uses.yml"),
        format!(
            "kernel:\n  image: {}\ninit:\n  - {}\nservices:\n  - name: hello\n    image: \"@pkg:../images/hello\"\n",
            common::KERNEL,
            common::INIT
        ),
    )
    .unwrap();
    let cache = cache.to_str().unwrap();
    let output = berth(
        &[
            "build",
            "-f",
            "tar",
            "-o",
            "out",
            "--cache",
            cache,
            "examples/uses.yml",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("built docker.io/berth/hello:"),
        "{}",
        stderr(&output)
    );
    let tar = fs::read(dir.path().join("out/uses.tar")).unwrap();
    let seen: std::collections::BTreeMap<String, String> = common::tar_listing(&tar)
        .into_iter()
        .map(|(path, _, data)| (path, String::from_utf8_lossy(&data).into_owned()))
        .collect();
    let root = "containers/services/hello/lower";
    assert_eq!(seen[&format!("{root}/etc/motd")], "from a package\n");
    assert!(seen.contains_key(&format!("{root}/bin/hi")));
    let config = &seen["containers/services/hello/config.json"];
    assert!(config.contains("CAP_NET_ADMIN"), "{config}");
    assert!(config.contains("\"/run\""), "{config}");
    // The second build finds it in the cache.
    let again = berth(
        &[
            "build",
            "-f",
            "tar",
            "-o",
            "out2",
            "--cache",
            cache,
            "examples/uses.yml",
        ],
        dir.path(),
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("built "), "{}", stderr(&again));
}

#[test]
fn packages_named_several_times_are_built_once_and_a_failure_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let cache = cache.to_str().unwrap();
    package(&dir.path().join("hello"));
    package(&dir.path().join("other"));
    fs::write(
        dir.path().join("other/build.yml"),
        "image: berth/other\nfiles:\n  - path: /etc/other\n    contents: other\n",
    )
    .unwrap();
    let service = |name: &str, image: &str| format!("  - name: {name}\n    image: \"{image}\"\n");
    let definition = |services: &[(&str, &str)]| {
        let services: String = services.iter().map(|(n, i)| service(n, i)).collect();
        format!(
            "kernel:\n  image: {}\ninit:\n  - {}\nservices:\n{services}",
            common::KERNEL,
            common::INIT
        )
    };
    fs::write(
        dir.path().join("uses.yml"),
        definition(&[
            ("a", "@pkg:hello"),
            ("b", "@pkg:other"),
            ("c", "@pkg:./hello"),
        ]),
    )
    .unwrap();
    let args = [
        "build", "-f", "tar", "-o", "out", "--cache", cache, "uses.yml",
    ];
    let output = berth(&args, dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    let built: Vec<&str> = err.lines().filter(|l| l.starts_with("built ")).collect();
    assert_eq!(built.len(), 2, "{err}");
    assert!(
        built[0].starts_with("built docker.io/berth/hello:"),
        "{err}"
    );
    assert!(
        built[1].starts_with("built docker.io/berth/other:"),
        "{err}"
    );
    // A package that cannot be resolved is named where the definition first
    // names it.
    fs::write(
        dir.path().join("uses.yml"),
        definition(&[
            ("a", "@pkg:hello"),
            ("b", "@pkg:missing"),
            ("c", "@pkg:missing"),
        ]),
    )
    .unwrap();
    let output = berth(&args, dir.path());
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("uses.yml:9:") && err.contains("image @pkg:missing"),
        "{err}"
    );
    assert!(err.contains("missing/build.yml"), "{err}");
}

#[test]
fn another_source_date_epoch_gives_another_tag() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let cache = cache.to_str().unwrap();
    package(&dir.path().join("hello"));
    let build_at = |epoch: Option<&str>| {
        let args = ["pkg", "build", "hello", "--cache", cache];
        let output = berth_env(&args, dir.path(), epoch);
        assert!(output.status.success(), "{}", stderr(&output));
        let out = String::from_utf8(output.stdout).unwrap();
        let (reference, digest) = out.trim().split_once(' ').unwrap();
        (reference.to_string(), digest.to_string())
    };
    let (early, early_digest) = build_at(Some("1600000000"));
    let (late, late_digest) = build_at(Some("1700000000"));
    assert_ne!(early, late);
    assert_ne!(early_digest, late_digest);
    let shown = berth_env(
        &["pkg", "show-tag", "hello"],
        dir.path(),
        Some("1600000000"),
    );
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), early);
    // Unset, the entries get LinuxKit's time: the same bytes and the same
    // tag as under that epoch.
    assert_eq!(build_at(None), build_at(Some("1492533000")));
    // A definition naming the package, built under a third epoch, does not
    // take the image cached under another one: it builds its own.
    fs::write(
        dir.path().join("uses.yml"),
        format!(
            "kernel:\n  image: {}\ninit:\n  - {}\nservices:\n  - name: hello\n    image: \"@pkg:hello\"\n",
            common::KERNEL,
            common::INIT
        ),
    )
    .unwrap();
    let args = [
        "build", "-f", "tar", "-o", "out", "--cache", cache, "uses.yml",
    ];
    let output = berth_env(&args, dir.path(), Some("1650000000"));
    assert!(output.status.success(), "{}", stderr(&output));
    let built = stderr(&output);
    let built = built
        .lines()
        .find_map(|line| line.strip_prefix("built "))
        .unwrap_or_else(|| panic!("the package is built again: {}", stderr(&output)));
    assert!(built.starts_with("docker.io/berth/hello:"), "{built}");
    assert!(built != early && built != late, "{built}");
}

#[test]
fn a_bad_build_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("bad");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(
        pkg.join("build.yml"),
        "image: berth/bad\nfiles:\n  - path: /x\n    sorce: y\n",
    )
    .unwrap();
    let output = berth(&["pkg", "show-tag", "bad"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("bad/build.yml:4") && err.contains("sorce"),
        "{err}"
    );
    fs::write(pkg.join("build.yml"), "image: berth/bad:1\n").unwrap();
    let err = stderr(&berth(&["pkg", "show-tag", "bad"], dir.path()));
    assert!(err.contains("names a repository only"), "{err}");
    fs::write(
        pkg.join("build.yml"),
        "image: berth/bad\nfiles:\n  - path: /x\n",
    )
    .unwrap();
    let err = stderr(&berth(&["pkg", "show-tag", "bad"], dir.path()));
    assert!(err.contains("exactly one of"), "{err}");
    let err = stderr(&berth(&["pkg", "show-tag", "missing"], dir.path()));
    assert!(err.contains("missing/build.yml"), "{err}");
}

#[test]
fn debian_packages_are_unpacked_with_their_versions_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path());
    let pkg = dir.path().join("bb");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(
        pkg.join("build.yml"),
        "image: berth/bb\npackages: [busybox-static]\ncmd: [\"/bin/busybox\", \"true\"]\n",
    )
    .unwrap();
    let cache = cache.to_str().unwrap();
    // Offline, a package that is not downloaded yet is an error naming it.
    let offline = berth(&["pkg", "build", "bb", "--cache", cache], dir.path());
    assert_eq!(offline.status.code(), Some(1));
    assert!(
        stderr(&offline).contains("busybox-static="),
        "{}",
        stderr(&offline)
    );
    assert!(stderr(&offline).contains("offline"), "{}", stderr(&offline));
    // Online, apt-get downloads it (from this machine's Debian archive).
    let online = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["pkg", "build", "bb", "--cache", cache])
        .current_dir(dir.path())
        .env_remove("BERTH_OFFLINE")
        .output()
        .unwrap();
    assert!(online.status.success(), "{}", stderr(&online));
    let out = String::from_utf8(online.stdout).unwrap();
    let reference = out.split_whitespace().next().unwrap().to_string();
    // The closure and versions are in the image's labels.
    let inspect = std::process::Command::new("skopeo")
        .args(["inspect", "--config", &format!("oci:{cache}:{reference}")])
        .output()
        .expect("skopeo (a prerequisite of the tests)");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let config = String::from_utf8_lossy(&inspect.stdout);
    assert!(config.contains("busybox-static="), "{config}");
    fs::write(
        dir.path().join("uses.yml"),
        format!(
            "kernel:\n  image: {}\ninit:\n  - {}\nservices:\n  - name: bb\n    image: \"@pkg:bb\"\n",
            common::KERNEL,
            common::INIT
        ),
    )
    .unwrap();
    let output = berth(
        &[
            "build", "-f", "tar", "-o", "out", "--cache", cache, "uses.yml",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let tar = fs::read(dir.path().join("out/uses.tar")).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let busybox = archive.entries().unwrap().flatten().find(|e| {
        e.path().unwrap().to_string_lossy() == "containers/services/bb/lower/bin/busybox"
    });
    let busybox = busybox.expect("bin/busybox from the package");
    assert!(busybox.header().size().unwrap() > 100_000);
    assert_eq!(busybox.header().mode().unwrap() & 0o111, 0o111);
}
