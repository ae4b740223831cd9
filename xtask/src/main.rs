//! Development tasks, run as `cargo xtask TASK`, so that they need nothing
//! but cargo and Debian's packages.
//!
//! - `test`: installs what the tests need (as root, with apt-get), then runs
//!   every test of the workspace, the QEMU boot tests included.
//! - `example`: the main job: builds `examples/minimal.yml` into `out/`,
//!   building the system images it names (`@pkg:`) from Debian packages and
//!   this workspace on the way, and prints the QEMU command that boots it.
//! - `bench`: builds LinuxKit's reference benchmark image (shared/bench) and
//!   prints wall time and peak memory of berth building it; then the same
//!   for berth's own images: a warm build of `examples/minimal.yml` and
//!   `berth pkg build images/kernel`.
//! - `bench [RUNS] serve [DIR]`: `berth serve` under load (100 clients
//!   fetching kernel and initrd at once, every byte checked), and nginx
//!   serving the same directory in the same run (bench_serve.rs).
//! - `arrows`: checks that no crate depends on one ARCHITECTURE.md says it
//!   never does (also a test of this crate, so `cargo test` checks it).

mod arrows;
mod bench_serve;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Debian packages the tests and the example need on the host.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("dpkg-deb", "dpkg"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("htpasswd", "apache2-utils"),
    // ssh and ssh-keygen, for the boot tests of the sshd and host examples.
    ("ssh", "openssh-client"),
    // The independent checkers of bootable media (crates/media).
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("fsck.vfat", "dosfstools"),
    ("blkid", "util-linux"),
    // init's seccomp test runs them under a compiled filter.
    ("setarch", "util-linux"),
    ("mcopy", "mtools"),
    ("xorriso", "xorriso"),
    ("unsquashfs", "squashfs-tools"),
    ("objdump", "binutils"),
    ("qemu-img", "qemu-utils"),
    // The independent HTTP client of berth serve's tests and of the
    // artifact tests (blobs read straight from the registry's API) and of
    // the test metadata server's tests, and the server serve's benchmark
    // compares with.
    ("curl", "curl"),
    ("nginx", "nginx-light"),
    // A tap interface in a network namespace, for berth run --networking tap;
    // `script`, a terminal for berth run.
    ("ip", "iproute2"),
    ("script", "bsdutils"),
    // The metadata agent's tests: seeds made by cloud-init's own tool and
    // by genisoimage, loop devices to find and mount them, a plain HTTP
    // server.
    ("cloud-localds", "cloud-image-utils"),
    ("genisoimage", "genisoimage"),
    ("losetup", "mount"),
    ("mkfs.ext2", "e2fsprogs"),
    ("python3", "python3"),
    // The independent reader and writer of cosign's signature format in
    // the signature tests (ed25519, PKCS#8 and SPKI through OpenSSL).
    ("python3:cryptography", "python3-cryptography"),
    // GNU sha256sum -c, the independent checker of a signed build's
    // NAME.sha256.
    ("sha256sum", "coreutils"),
    // pip, into the virtual environment that holds the SBOM tests' SPDX
    // validator (`spdx_tools`).
    ("pip3", "python3-pip"),
    // pwck/grpck read the accounts files the agent writes.
    ("pwck", "passwd"),
    // The busybox the metadata image runs commands with, for its applets.
    ("busybox", "busybox-static"),
    // The boot tests' metadata server: QEMU hands each guest connection to
    // 169.254.169.254 to a socat of its own.
    ("socat", "socat"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("example") => example(),
        Some("bench") => bench(&args[1..]),
        Some("arrows") => {
            arrows::check(&root())?;
            println!("no forbidden dependency");
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- CARGO TEST ARGS] | example | bench [RUNS [media | serve [DIR]]] | arrows"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Whether `program` is on the PATH; `python3:MODULE`: whether python3
/// imports MODULE.
fn have(program: &str) -> bool {
    let check = match program.strip_prefix("python3:") {
        Some(module) => format!("python3 -c 'import {module}' 2>/dev/null"),
        None => format!("command -v {program} >/dev/null"),
    };
    Command::new("sh")
        .args(["-c", &check])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs missing host packages when running as root; otherwise says
/// which are missing. Also makes sure apt's package lists exist, since the
/// fixtures are fetched with `apt-get download`.
fn prerequisites() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    let lists_empty = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            !d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(true);
    if missing.is_empty() && !lists_empty {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing prerequisites: run `apt-get update && apt-get install -y {}` as root",
            PACKAGES
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    if !missing.is_empty() {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn test(extra: &[String]) -> Result<()> {
    prerequisites()?;
    let pyspdxtools = spdx_tools()?;
    // The boot tests drive the berth binary.
    run(cargo().args(["build", "--package", "builder", "--bin", "berth"]))?;
    run(cargo()
        .args(["test", "--workspace"])
        .args(extra)
        .env("BERTH_PYSPDXTOOLS", pyspdxtools))
}

/// The SPDX validator of the SBOM tests, `pyspdxtools` from the Python
/// package `spdx-tools`, installed with pip into a virtual environment of
/// its own (Debian does not package it). Returns its path.
fn spdx_tools() -> Result<PathBuf> {
    let venv = root().join("target/spdx-tools");
    let program = venv.join("bin/pyspdxtools");
    if program.exists() {
        return Ok(program);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("creating the virtual environment for spdx-tools (Debian: python3-venv)")?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "spdx-tools"]))?;
    Ok(program)
}

/// Builds the optimised `berth` and returns its path.
fn release_berth() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "builder",
        "--bin",
        "berth",
    ]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/berth"))
}

/// The cache and work directories of the example and the benchmark.
fn work() -> PathBuf {
    root().join("target").join("berth-example")
}

fn example() -> Result<()> {
    prerequisites()?;
    let berth = release_berth()?;
    let cache = work().join("cache");
    let out = root().join("out");
    let started = Instant::now();
    // Not offline: the @pkg: images come from Debian's archive.
    run(Command::new(&berth)
        .current_dir(root())
        .env_remove("BERTH_OFFLINE")
        .args([
            "build",
            "--format",
            "kernel+initrd",
            "--format",
            "iso",
            "--output",
        ])
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .arg("examples/minimal.yml"))?;
    eprintln!(
        "built in {:.1} s (cache {}); boot it with (Ctrl-C powers it off):",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
    let berth = berth
        .strip_prefix(root())
        .unwrap_or(&berth)
        .display()
        .to_string();
    println!("{berth} run qemu out/minimal");
    eprintln!("or boot the hybrid ISO (BIOS or UEFI, CD or USB stick) with:");
    println!("{berth} run qemu out/minimal.iso    # --uefi, --usb");
    Ok(())
}

/// The benchmark of shared/bench: LinuxKit's figures are for bench.yml to
/// kernel+initrd, from an empty cache (pulling from a registry on loopback)
/// and from a warm one. Prints, for `runs` runs of each, wall time and peak
/// memory, and the pull throughput from the registry.
fn bench(args: &[String]) -> Result<()> {
    // `bench serve [DIR]`, `bench RUNS serve [DIR]`: berth serve against nginx.
    let (runs, rest) = match args.first().map(String::as_str) {
        Some("serve") => (3, args),
        Some(runs) => (runs.parse().context("RUNS")?, &args[1..]),
        None => (3, args),
    };
    if rest.first().map(String::as_str) == Some("serve") {
        return bench_serve::bench_serve(&release_berth()?, runs, rest.get(1).map(PathBuf::from));
    }
    // `bench RUNS media`: the bootable-media figures alone.
    if rest.first().map(String::as_str) == Some("media") {
        return bench_media(&release_berth()?, runs);
    }
    let shared = root().join("../shared/bench");
    if !shared.join("setup.sh").exists() {
        bail!("{} not found: clone berth beside shared/", shared.display());
    }
    if !have("/usr/bin/time") {
        if !is_root() {
            bail!("install GNU time (apt-get install time) to measure peak memory");
        }
        run(Command::new("apt-get").args(["install", "-y", "-q", "time"]))?;
    }
    let berth = release_berth()?;
    let work = root().join("target").join("berth-bench");
    // setup.sh builds the images and serves them from a registry on
    // 127.0.0.1:5000, which it leaves running; stop it when done.
    struct Registry(PathBuf);
    impl Drop for Registry {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(self.0.join("registry.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
                let _ = std::fs::remove_file(self.0.join("registry.pid"));
            }
        }
    }
    run(Command::new("bash").arg(shared.join("setup.sh")).arg(&work))?;
    let _registry = Registry(work.clone());
    let cache = work.join("cache");
    let out = work.join("out");

    // Pull throughput: every image into an empty cache.
    let _ = std::fs::remove_dir_all(&cache);
    let started = Instant::now();
    for image in [
        "kernel:6.1",
        "init:1",
        "getty:1",
        "dhcpcd:1",
        "rngd:1",
        "sysctl:1",
        "sshd:1",
        "bigsvc:1",
    ] {
        run(Command::new(&berth)
            .args([
                "cache",
                "pull",
                &format!("127.0.0.1:5000/bench/{image}"),
                "--cache",
            ])
            .arg(&cache)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(cache.join("blobs/sha256"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "pull: {:.1} MB in {seconds:.2} s from the loopback registry, {:.0} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds
    );

    let mut report = Vec::new();
    for (kind, empty_cache) in [("empty cache", true), ("warm cache", false)] {
        let mut times = Vec::new();
        let mut peak: f64 = 0.0;
        for run_number in 1..=runs {
            if empty_cache {
                let _ = std::fs::remove_dir_all(&cache);
            }
            let _ = std::fs::remove_dir_all(&out);
            let (seconds, mib) = timed(
                timed_berth(&berth)
                    .args(["build", "-f", "kernel+initrd", "-o"])
                    .arg(&out)
                    .arg("--cache")
                    .arg(&cache)
                    .arg(shared.join("bench.yml")),
            )?;
            println!("{kind}, run {run_number}: {seconds:.2} s wall, {mib:.0} MiB peak memory");
            times.push(seconds);
            peak = peak.max(mib);
        }
        times.sort_by(f64::total_cmp);
        report.push(format!(
            "{kind}: median {:.2} s, peak {peak:.0} MiB",
            times[times.len() / 2]
        ));
    }
    let size = std::fs::metadata(out.join("bench-initrd.img"))?.len();
    println!(
        "berth, bench.yml to kernel+initrd (gzip), {runs} runs each: {}; initrd {:.1} MB",
        report.join("; "),
        size as f64 / 1e6
    );
    println!(
        "LinuxKit v1.2.0 on the same image (shared/bench/README.md): 9.5 s from an empty cache, 14.9 s warm, 414-417 MiB"
    );
    bench_own_images(&berth, runs)
}

/// berth's own images, from Debian's archive: a warm `berth build
/// examples/minimal.yml` (after a first build that fills the cache with its
/// `@pkg:` images and their apt closures), and the peak memory of `berth pkg
/// build images/kernel` with its `.deb`s already downloaded. Peak memory is
/// GNU time's: the largest of berth and the programs it runs.
fn bench_own_images(berth: &Path, runs: usize) -> Result<()> {
    let cache = work().join("cache");
    let out = root().join("target").join("berth-bench").join("minimal");
    let minimal = || {
        let mut command = timed_berth(berth);
        command
            .current_dir(root())
            .env_remove("BERTH_OFFLINE")
            .args(["build", "-f", "kernel+initrd", "-o"])
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .arg("examples/minimal.yml");
        command
    };
    let (first, _) = timed(&mut minimal())?;
    println!(
        "minimal.yml, first build (fills the cache {}): {first:.2} s",
        cache.display()
    );
    let mut times = Vec::new();
    for run_number in 1..=runs {
        let (seconds, mib) = timed(&mut minimal())?;
        println!(
            "minimal.yml, warm, run {run_number}: {seconds:.2} s wall, {mib:.0} MiB peak memory"
        );
        times.push(seconds);
    }
    times.sort_by(f64::total_cmp);
    let warm = times[times.len() / 2];

    let kernel = || {
        let mut command = timed_berth(berth);
        command
            .current_dir(root())
            .env_remove("BERTH_OFFLINE")
            .args(["pkg", "build", "images/kernel", "--cache"])
            .arg(&cache);
        command
    };
    // Downloads the kernel's .debs the first time.
    timed(&mut kernel())?;
    let mut peak: f64 = 0.0;
    for run_number in 1..=runs {
        let (seconds, mib) = timed(&mut kernel())?;
        println!(
            "pkg build images/kernel, run {run_number}: {seconds:.2} s wall, {mib:.0} MiB peak memory"
        );
        peak = peak.max(mib);
    }
    println!(
        "berth's own images, {runs} runs each: warm minimal.yml to kernel+initrd median {warm:.2} s (target 2.0 s); pkg build images/kernel, .debs cached, peak {peak:.0} MiB (target 128 MiB)"
    );
    bench_media(berth, runs)
}

/// The formats of bootable media (and the squashfs root), built alone and
/// all at once.
const MEDIA_FORMATS: &[&str] = &[
    "uki",
    "iso",
    "raw",
    "qcow2",
    "vhd",
    "dynamic-vhd",
    "vmdk",
    "gcp",
    "kernel+squashfs",
];

/// Each bootable-media format of examples/host.yml, warm: its median build
/// time as a ratio to kernel+initrd's (`runs` rounds, each building every
/// format once), all of them in one build likewise (dynamic-vhd apart: it writes
/// NAME.vhd as vhd does), and each artifact's size.
fn bench_media(berth: &Path, runs: usize) -> Result<()> {
    let cache = work().join("cache");
    let out = root().join("target").join("berth-bench").join("media");
    let build = |formats: &[&str]| -> Result<f64> {
        let _ = std::fs::remove_dir_all(&out);
        let mut command = timed_berth(berth);
        command
            .current_dir(root())
            .env_remove("BERTH_OFFLINE")
            .arg("build");
        for format in formats {
            command.args(["-f", format]);
        }
        command
            .arg("-o")
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .arg("examples/host.yml");
        Ok(timed(&mut command)?.0)
    };
    let all: Vec<&str> = MEDIA_FORMATS
        .iter()
        .copied()
        .filter(|f| *f != "dynamic-vhd")
        .collect();
    // Fills the cache (the images, the boot image) and shows the sizes.
    build(&all)?;
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(&out)?
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?.len())))
        .collect();
    sizes.sort();
    // Each round builds every format once; the ratio is of the medians, so
    // one slow build (this machine is shared) moves it little.
    let mut bases = Vec::new();
    let mut times: Vec<(String, Vec<f64>)> = MEDIA_FORMATS
        .iter()
        .map(|f| (f.to_string(), Vec::new()))
        .chain([("all".to_string(), Vec::new())])
        .collect();
    for round in 1..=runs {
        let base = build(&["kernel+initrd"])?;
        bases.push(base);
        let mut line = format!("media, round {round}: kernel+initrd {base:.2} s");
        for (format, samples) in &mut times {
            let seconds = if format == "all" {
                build(&all)?
            } else {
                build(&[format.as_str()])?
            };
            samples.push(seconds);
            line.push_str(&format!(", {format} {seconds:.2} s"));
        }
        println!("{line}");
    }
    let median = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let base = median(bases);
    for (format, samples) in times {
        let target = if format == "all" { 1.6 } else { 1.3 };
        let seconds = median(samples);
        println!(
            "examples/host.yml -f {format}: median {seconds:.2} s, {:.2} × kernel+initrd's median {base:.2} s ({runs} runs; target {target})",
            seconds / base
        );
    }
    for (file, size) in sizes {
        println!(
            "examples/host.yml artifact {file}: {:.1} MB",
            size as f64 / 1e6
        );
    }
    Ok(())
}

/// `berth` under GNU time, which writes its wall time and peak memory (the
/// largest of berth and the programs it runs) as stderr's last line; run it
/// with [`timed`].
fn timed_berth(berth: &Path) -> Command {
    let mut command = Command::new("/usr/bin/time");
    command.args(["-f", "%e %M"]).arg(berth);
    command
}

/// Runs a [`timed_berth`] command; its wall time in seconds and peak memory
/// in MiB.
fn timed(command: &mut Command) -> Result<(f64, f64)> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{shown} failed:\n{stderr}");
    }
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds: f64 = fields.next().unwrap_or("0").parse()?;
    let kib: f64 = fields.next().unwrap_or("0").parse()?;
    Ok((seconds, kib / 1024.0))
}
