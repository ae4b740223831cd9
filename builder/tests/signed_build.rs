//! Signed builds: `berth build --sign-key` writes NAME.sha256, which GNU
//! `sha256sum -c` checks, and NAME.sha256.sig, which Python's
//! `cryptography` verifies (`cosign_format.py verify-blob`); `berth
//! verify-build` catches every changed byte, line, key and file; a failed
//! build writes neither; a pushed signed build verifies with `berth verify`
//! and the Python helper; `berth cache push` takes an image's signatures
//! along.
//!
//! sha256sum (coreutils), python3-cryptography, and for the registry tests
//! docker-registry and skopeo are prerequisites: without them a test says
//! it was skipped, and under CI=true it fails instead.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    DEFINITION, cosign_helper as helper, have, key, python, registry_for_python as registry,
    small_cache, stderr, stdout,
};

/// The artifacts a signed build of [`DEFINITION`] lists in image.sha256.
const ARTIFACTS: [&str; 7] = common::IMAGE_FILES;

/// `berth ARGS` in `dir` (cache `dir/cache`, `SOURCE_DATE_EPOCH` fixed),
/// offline unless `online`; `verify-build` reads no cache and takes none.
fn berth(dir: &Path, args: &[&str], online: bool) -> Output {
    let mut command = match args[0] {
        "verify-build" => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
            command.args(args).current_dir(dir);
            command
        }
        _ => common::berth_online(dir, args),
    };
    command
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("BERTH_KEY_PASSWORD");
    if !online {
        command.env("BERTH_OFFLINE", "1");
    }
    command.output().unwrap()
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let out = berth(dir, args, false);
    assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs berth, expects it to fail with one line holding every needle.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let error = common::one_line_error(&berth(dir, args, false), args, needles);
    eprintln!("refused: {error}");
    error
}

/// `berth build` of [`DEFINITION`] as `image.yml` into `dir/OUT` in three
/// formats, with `extra` arguments.
fn build(dir: &Path, out: &str, extra: &[&str], online: bool) -> Output {
    std::fs::write(dir.join("image.yml"), DEFINITION).unwrap();
    let mut args = vec!["build", "-o", out, "image.yml"];
    for format in ["kernel+initrd", "tar", "tar-kernel-initrd"] {
        args.extend(["-f", format]);
    }
    args.extend(extra);
    berth(dir, &args, online)
}

/// A directory with the small cache and the key pairs `a` and `b`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    small_cache(dir.path());
    key(dir.path(), "a");
    key(dir.path(), "b");
    dir
}

fn sha256sum_check(dir: &Path, sums: &str) -> Output {
    Command::new("sha256sum")
        .args(["--strict", "-c", sums])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `berth verify-build out --key a.pub EXTRA` succeeds, printing a line
/// per artifact and the summary.
fn verify_build(dir: &Path, extra: &[&str]) {
    let mut args = vec!["verify-build", "out", "--key", "a.pub"];
    args.extend(extra);
    let printed = succeeds(dir, &args);
    let mut expected: Vec<String> = ARTIFACTS.iter().map(|f| format!("{f}: OK")).collect();
    expected.push(format!(
        "image: {} files verified, signed by a.pub",
        ARTIFACTS.len()
    ));
    assert_eq!(printed.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_signed_build_is_checked_by_sha256sum_python_and_verify_build() {
    if !have("sha256sum", &["--version"], "coreutils") || !python() {
        return;
    }
    let dir = setup();
    let dir = dir.path();
    let built = build(dir, "out", &["--sign-key", "a.key"], false);
    assert!(built.status.success(), "{}", stderr(&built));
    let out = dir.join("out");
    let mut all: Vec<String> = ARTIFACTS.iter().map(|f| f.to_string()).collect();
    all.extend(["image.sha256".into(), "image.sha256.sig".into()]);
    all.sort();
    assert_eq!(common::files(&out), all);

    // GNU sha256sum reads every line and agrees with every file.
    let text = std::fs::read_to_string(out.join("image.sha256")).unwrap();
    let names: Vec<&str> = text.lines().map(|l| &l[66..]).collect();
    assert_eq!(names, ARTIFACTS, "{text}");
    let checked = sha256sum_check(&out, "image.sha256");
    assert!(checked.status.success(), "{}", stderr(&checked));
    let expected: String = ARTIFACTS.iter().map(|f| format!("{f}: OK\n")).collect();
    assert_eq!(stdout(&checked), expected);

    // Python's cryptography verifies the signature as cosign sign-blob's.
    let verified = helper(
        &out,
        &[
            "verify-blob",
            "image.sha256",
            "image.sha256.sig",
            "../a.pub",
        ],
    );
    assert_eq!(verified, "verified image.sha256\n");
    verify_build(dir, &[]);
    verify_build(dir, &["--name", "image"]);

    // A single flipped byte in each artifact, each caught and named.
    for file in ARTIFACTS {
        let path = out.join(file);
        let original = std::fs::read(&path).unwrap();
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        fails(
            dir,
            &["verify-build", "out", "--key", "a.pub"],
            &[
                &format!("out/{file}: its digest is sha256:"),
                "image.sha256",
            ],
        );
        assert!(!sha256sum_check(&out, "image.sha256").status.success());
        std::fs::write(&path, &original).unwrap();
    }
    verify_build(dir, &[]);

    // NAME.sha256 changed: a line edited, a line removed; caught by the
    // signature before any file is read.
    let sums = out.join("image.sha256");
    let edited = text.replacen(&text[..1], if &text[..1] == "0" { "1" } else { "0" }, 1);
    let removed: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    for changed in [edited, removed] {
        std::fs::write(&sums, changed).unwrap();
        fails(
            dir,
            &["verify-build", "out", "--key", "a.pub"],
            &["image.sha256.sig: not a signature of", "by a.pub"],
        );
    }
    std::fs::write(&sums, &text).unwrap();

    // A signature by another key: refused with a.pub, accepted with b.pub
    // (made by the Python helper, so berth reads cosign's blob signatures).
    helper(
        &out,
        &["sign-blob", "image.sha256", "../b.key", "image.sha256.sig"],
    );
    fails(
        dir,
        &["verify-build", "out", "--key", "a.pub"],
        &["image.sha256.sig", "by a.pub: it is by none of the keys"],
    );
    let printed = succeeds(
        dir,
        &["verify-build", "out", "--key", "a.pub", "--key", "b.pub"],
    );
    assert!(printed.ends_with("signed by b.pub\n"), "{printed}");

    // A missing artifact.
    std::fs::rename(out.join("image.tar"), dir.join("image.tar")).unwrap();
    fails(
        dir,
        &["verify-build", "out", "--key", "b.pub"],
        &["out/image.tar: it is missing (listed in out/image.sha256)"],
    );
    std::fs::rename(dir.join("image.tar"), out.join("image.tar")).unwrap();

    // A list too large to be a build's is not read whole.
    let signature = std::fs::read(out.join("image.sha256.sig")).unwrap();
    std::fs::write(out.join("image.sha256.sig"), vec![b'A'; 2 << 20]).unwrap();
    fails(
        dir,
        &["verify-build", "out", "--key", "b.pub"],
        &["out/image.sha256.sig: larger than 1048576 bytes"],
    );
    std::fs::write(out.join("image.sha256.sig"), signature).unwrap();

    // Names that leave the directory, validly signed, are refused.
    std::fs::write(dir.join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink("../secret", out.join("image.iso")).unwrap();
    let digest = |bytes: &[u8]| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(bytes))
    };
    let outside = digest(b"outside");
    for (line, needle) in [
        (
            format!("{outside}  ../secret\n"),
            "\"../secret\" is outside",
        ),
        (
            format!("{outside}  {}\n", dir.join("secret").display()),
            "secret\" is outside",
        ),
        (
            format!("{outside}  image.iso\n"),
            "out/image.iso: it is a symbolic link out of",
        ),
    ] {
        std::fs::write(&sums, format!("{text}{line}")).unwrap();
        helper(
            &out,
            &["sign-blob", "image.sha256", "../b.key", "image.sha256.sig"],
        );
        fails(dir, &["verify-build", "out", "--key", "b.pub"], &[needle]);
    }

    // A file of the build that is not listed was not signed: refused,
    // unless it is allowed, and then named.
    std::fs::remove_file(out.join("image.iso")).unwrap();
    std::fs::write(&sums, &text).unwrap();
    std::fs::write(out.join("image.vmdk"), "an older build's").unwrap();
    helper(
        &out,
        &["sign-blob", "image.sha256", "../a.key", "image.sha256.sig"],
    );
    fails(
        dir,
        &["verify-build", "out", "--key", "a.pub"],
        &[
            "image.vmdk",
            "not listed in image.sha256",
            "--allow-unlisted",
        ],
    );
    let checked = berth(
        dir,
        &["verify-build", "out", "--key", "a.pub", "--allow-unlisted"],
        false,
    );
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert_eq!(stderr(&checked), "image.vmdk: not listed in image.sha256\n");
    std::fs::remove_file(out.join("image.vmdk")).unwrap();

    // Two signed builds in one directory: the name must be given.
    let second = build(
        dir,
        "out",
        &["--sign-key", "a.key", "--name", "other"],
        false,
    );
    assert!(second.status.success(), "{}", stderr(&second));
    fails(
        dir,
        &["verify-build", "out", "--key", "a.pub"],
        &["several signed builds (image, other): choose one with --name"],
    );
    verify_build(dir, &["--name", "image"]);
    fails(
        dir,
        &["verify-build", "elsewhere", "--key", "a.pub"],
        &["elsewhere"],
    );
}

#[test]
fn two_signed_builds_are_the_same_bytes() {
    let dir = setup();
    let dir = dir.path();
    for out in ["one", "two"] {
        let built = build(dir, out, &["--sign-key", "a.key"], false);
        assert!(built.status.success(), "{}", stderr(&built));
    }
    let (one, two) = (dir.join("one"), dir.join("two"));
    let names = common::files(&one);
    assert_eq!(names.len(), ARTIFACTS.len() + 2);
    assert_eq!(names, common::files(&two));
    for name in names {
        assert_eq!(
            std::fs::read(one.join(&name)).unwrap(),
            std::fs::read(two.join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_failed_build_or_an_unreadable_key_leaves_nothing() {
    let dir = setup();
    let dir = dir.path();
    // A key that cannot be read: nothing built, no directory made.
    let made = common::generate_key(dir, &["-o", "encrypted-pair"])
        .env("BERTH_KEY_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    for (key, needle) in [
        ("missing.key", "missing.key"),
        ("a.pub", "a.pub: a PEM \"PUBLIC KEY\" block"),
        (
            "encrypted-pair.key",
            "give its password in BERTH_KEY_PASSWORD",
        ),
    ] {
        let built = build(dir, "out", &["--sign-key", key], false);
        assert_eq!(built.status.code(), Some(1), "{}", stderr(&built));
        let error = stderr(&built);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains(needle), "{needle:?} in {error}");
        assert!(!dir.join("out").exists(), "{key}");
    }
    // With its password the encrypted key signs.
    let args = [
        "build",
        "-o",
        "signed",
        "--sign-key",
        "encrypted-pair.key",
        "image.yml",
    ];
    let built = common::berth_online(dir, &args)
        .env("BERTH_OFFLINE", "1")
        .env("BERTH_KEY_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let checked = succeeds(
        dir,
        &["verify-build", "signed", "--key", "encrypted-pair.pub"],
    );
    assert!(
        checked.ends_with("signed by encrypted-pair.pub\n"),
        "{checked}"
    );
    // A build that fails in its plan (an image the cache does not hold)
    // leaves no NAME.sha256, no signature and nothing else, even in a
    // directory that already exists.
    std::fs::create_dir(dir.join("out")).unwrap();
    let absent = DEFINITION.replace("test/service:1", "test/absent:1");
    std::fs::write(dir.join("absent.yml"), absent).unwrap();
    let failed = berth(
        dir,
        &["build", "-o", "out", "--sign-key", "a.key", "absent.yml"],
        false,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("test/absent:1"),
        "{}",
        stderr(&failed)
    );
    assert!(common::files(&dir.join("out")).is_empty());

    // A build that fails while its artifacts are being written (a layer
    // that does not match its digest) leaves the earlier signed build as
    // it was, still verified.
    let built = build(dir, "out", &["--sign-key", "a.key"], false);
    assert!(built.status.success(), "{}", stderr(&built));
    let before = common::files(&dir.join("out"));
    let read_all = || {
        before
            .iter()
            .map(|name| std::fs::read(dir.join("out").join(name)).unwrap())
            .collect::<Vec<_>>()
    };
    let bytes = read_all();
    common::add_tampered_image(&dir.join("cache"));
    let tampered = DEFINITION.replace(
        "files:\n",
        "  - name: t\n    image: test/tampered:1\nfiles:\n",
    );
    std::fs::write(dir.join("tampered.yml"), tampered).unwrap();
    let failed = berth(
        dir,
        &[
            "build",
            "-o",
            "out",
            "--sign-key",
            "b.key",
            "--name",
            "image",
            "tampered.yml",
        ],
        false,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("content does not match its digest"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(common::files(&dir.join("out")), before);
    assert_eq!(read_all(), bytes);
    verify_build(dir, &[]);
}

#[test]
fn a_pushed_signed_build_verifies_with_berth_verify_and_the_python_helper() {
    let Some((registry, _source)) = registry() else {
        return;
    };
    let dir = setup();
    let dir = dir.path();
    let host = registry.host();
    let reference = format!("{host}/builds/image:1");
    let built = build(
        dir,
        "out",
        &["--sign-key", "a.key", "--push", &reference],
        true,
    );
    assert!(built.status.success(), "{}", stderr(&built));
    let pushed = stdout(&built).lines().last().unwrap().to_string();
    assert!(
        pushed.starts_with(&format!("{reference}@sha256:")),
        "{pushed}"
    );
    let digest = pushed.rsplit_once('@').unwrap().1;
    let verified = berth(dir, &["verify", &reference, "--key", "a.pub"], true);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert_eq!(
        stdout(&verified),
        format!("{reference}@{digest} verified by a.pub\n")
    );
    let checked = helper(dir, &["verify", &host, "builds/image", "1", "a.pub"]);
    assert_eq!(checked, format!("verified 1 {digest}\n"));
    let refused = berth(dir, &["verify", &reference, "--key", "b.pub"], true);
    assert_eq!(refused.status.code(), Some(1));

    // The artifact carries NAME.sha256 and its signature: pulled back, the
    // build verifies.
    let pulled = berth(dir, &["pull", &reference, "-o", "back"], true);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let checked = succeeds(dir, &["verify-build", "back", "--key", "a.pub"]);
    assert!(checked.ends_with("signed by a.pub\n"), "{checked}");

    // berth push --sign-key signs the same way.
    let again = format!("{host}/builds/again:1");
    let pushed = berth(dir, &["push", "out", &again, "--sign-key", "b.key"], true);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    helper(dir, &["verify", &host, "builds/again", "1", "b.pub"]);
}

#[test]
fn cache_push_takes_the_signatures_along() {
    let Some((registry, _source)) = registry() else {
        return;
    };
    let dir = setup();
    let dir = dir.path();
    let host = registry.host();
    // An image signed in the cache alone, offline, then pushed.
    let image = format!("{host}/test/fresh:1");
    let cache = fixtures::Layout::create(dir.join("cache")).unwrap();
    let fresh =
        fixtures::Image::new().layer(fixtures::Layer::new().file("a", 0o644, b"a".to_vec()));
    cache.add_image(&image, &fresh).unwrap();
    succeeds(dir, &["sign", &image, "--key", "a.key"]);
    let pushed = berth(dir, &["cache", "push", &image], true);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(stderr(&pushed).contains(".sig"), "{}", stderr(&pushed));
    let checked = helper(dir, &["verify", &host, "test/fresh", "1", "a.pub"]);
    assert!(checked.starts_with("verified 1 sha256:"), "{checked}");
    // Read by another cache, online.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("a.pub"), other.path().join("a.pub")).unwrap();
    let verified = berth(other.path(), &["verify", &image, "--key", "a.pub"], true);
    assert!(verified.status.success(), "{}", stderr(&verified));
}
