//! Boot tests in the style of LinuxKit's `test/cases`: every directory
//! under `cases/` is one test. `image.yml` is built with
//! `berth build -f kernel+initrd` against a cache holding the fixture images
//! (`fixtures::debian`), the result is booted under QEMU, and the lines of
//! `expect` must appear on the serial console in order. An optional
//! `inspect` file lists checks on the initrd, read with the real `cpio`.
//! A case whose `format` says `kernel+squashfs` is built so, and boots with
//! its squashfs image as a read-only virtio disk; `memory` sets the guest's
//! memory and `random` writes incompressible files into `{home}` first.
//!
//! A missing prerequisite (QEMU, cpio, Debian packages) is a visible skip;
//! with `CI=true` it is a failure. Each case leaves its artifacts, the
//! serial transcript and the QEMU command line in
//! `target/qemu-tests/CASE/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use qemu::{Accel, Kernel, Machine};
use qemu_tests::initrd;

/// A `berth build` that takes longer than this is hung.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    let args = Arguments::from_args();
    let paths = Arc::new(Paths::discover());
    let setup = Arc::new(OnceLock::new());
    let trials = match cases(&paths.workspace.join("qemu-tests/cases")) {
        Ok(cases) => cases
            .into_iter()
            .flat_map(|case| {
                let case = Arc::new(case);
                let boots: Vec<Option<MediaBoot>> = if case.media.is_empty() {
                    vec![None]
                } else {
                    case.media.iter().cloned().map(Some).collect()
                };
                let paths = Arc::clone(&paths);
                let setup = Arc::clone(&setup);
                boots.into_iter().map(move |boot| {
                    let name = match &boot {
                        None => case.name.clone(),
                        Some(boot) => format!("{}/{}", case.name, boot.label()),
                    };
                    let (case, paths, setup) =
                        (Arc::clone(&case), Arc::clone(&paths), Arc::clone(&setup));
                    Trial::ignorable_test(name, move || {
                        let setup = setup.get_or_init(|| Setup::prepare(&paths));
                        run_case(&case, boot.as_ref(), &paths, setup)
                    })
                })
            })
            .collect(),
        Err(error) => vec![Trial::test("discover cases", move || Err(error.into()))],
    };
    let mut trials: Vec<Trial> = trials;
    // Checks that need the fixtures and QEMU, but no image of a case.
    type Check = fn(&Paths, &Path) -> Result<(), Failed>;
    let checks: [(&str, Check); 7] = [
        (
            "berth_run_killed_outright_takes_its_qemu_along",
            berth_run_killed,
        ),
        (
            "berth_run_networking_tap_sends_the_guests_packets_to_the_tap",
            berth_run_on_a_tap,
        ),
        (
            "berth_run_refuses_bad_input_in_one_line",
            berth_run_refuses_bad_input,
        ),
        (
            "default_modules_are_in_debians_cloud_kernel",
            default_modules_exist,
        ),
        (
            "media_pass_independent_checks_and_repeat_bit_for_bit",
            media_are_sound_and_reproducible,
        ),
        (
            "a_disk_too_small_fails_the_build_and_writes_nothing",
            too_small_disk,
        ),
        (
            "the_linux_probe_boots_debians_kernel_under_tcg",
            linux_probe_boots_the_fixture_kernel,
        ),
    ];
    for (name, check) in checks {
        let paths = Arc::clone(&paths);
        let setup = Arc::clone(&setup);
        trials.push(Trial::test(name, move || {
            match setup.get_or_init(|| Setup::prepare(&paths)) {
                Setup::Ready { qemu, .. } => check(&paths, qemu),
                Setup::Skip(reason) if !qemu_tests::ci() => {
                    qemu_tests::note(&format!("skipped: {reason}"));
                    Ok(())
                }
                Setup::Skip(reason) | Setup::Fail(reason) => Err(reason.clone().into()),
            }
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Where things are: derived from the test binary's own path
/// (`TARGET/PROFILE/deps/boot-…`), so the berth binary comes from the same
/// target directory and profile as the tests.
struct Paths {
    workspace: PathBuf,
    target: PathBuf,
    profile_dir: PathBuf,
}

impl Paths {
    fn discover() -> Paths {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("qemu-tests lives in the workspace")
            .to_path_buf();
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace.join("target/debug"));
        let target = profile_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace.join("target"));
        Paths {
            workspace,
            target,
            profile_dir,
        }
    }

    fn cargo_profile(&self) -> String {
        match self.profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        }
    }

    fn berth(&self) -> PathBuf {
        self.profile_dir.join("berth")
    }

    fn fixtures_work(&self) -> PathBuf {
        self.target.join("berth-fixtures/work")
    }

    fn fixtures_cache(&self) -> PathBuf {
        self.target.join("berth-fixtures/cache")
    }

    fn case_dir(&self, case: &str) -> PathBuf {
        self.target.join("qemu-tests").join(case)
    }
}

impl Case {
    /// The case's file `name`, or `None` when it has none.
    fn read(&self, name: &str) -> Result<Option<String>, String> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }
}

struct Case {
    name: String,
    dir: PathBuf,
    /// The boots of a case with a `media` file, each its own test, all of
    /// one build; empty for a kernel+initrd boot.
    media: Vec<MediaBoot>,
    /// The build, made by the first of the case's boots.
    built: OnceLock<Result<Built, String>>,
}

/// One line of a case's `media` file: `ARTIFACT FIRMWARE MEDIUM`, e.g.
/// `iso uefi usb`: which artifact of the build to boot, with SeaBIOS
/// (`bios`) or OVMF (`uefi`, or `fw`: Debian's one-file `OVMF.fd` given
/// with `--fw`), as a CD-ROM, a USB stick, a virtio disk or
/// QEMU's `-kernel` (a UKI, or the kernel+initrd build itself: `build`).
/// Each is booted by `berth run qemu`, as a user would.
#[derive(Clone, Debug)]
struct MediaBoot {
    artifact: Artifact,
    uefi: bool,
    /// `--fw` with Debian's combined OVMF image, rather than `--uefi`.
    firmware_image: bool,
    medium: Medium,
    /// `berth run --accel auto` (a fourth word, `auto`): berth's own probe
    /// chooses, instead of the harness's choice given to spare each boot
    /// the probe.
    auto_accel: bool,
    /// `@NAME`, a last word: the boot has files of its own in the case,
    /// `NAME.expect`, `NAME.run-args`, `NAME.setup` (host commands run
    /// before it, one per line) and `NAME.server` (a metadata server),
    /// instead of the case's `expect` and `run-args`.
    scenario: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Artifact {
    /// The kernel+initrd build, booted by its name.
    Build,
    /// The build served by `berth serve` and booted over the network by
    /// iPXE: kernel+initrd on SeaBIOS, the UKI on OVMF.
    Pxe,
    Iso,
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
    Uki,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Medium {
    Cdrom,
    Usb,
    Disk,
    Kernel,
    /// `berth run` on a terminal (the build, booted by its name).
    Terminal,
    /// Network boot from `berth serve DIR`.
    Http,
    /// Network boot from `berth serve --from REF`, the build pushed to a
    /// registry.
    Registry,
}

impl Artifact {
    const ALL: [(&str, Artifact); 8] = [
        ("build", Artifact::Build),
        ("pxe", Artifact::Pxe),
        ("iso", Artifact::Iso),
        ("raw", Artifact::Raw),
        ("qcow2", Artifact::Qcow2),
        ("vhd", Artifact::Vhd),
        ("vmdk", Artifact::Vmdk),
        ("uki", Artifact::Uki),
    ];

    /// The `-f` value and the file `berth build` writes for it.
    fn format(self) -> &'static str {
        Artifact::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }

    fn file(self, name: &str) -> String {
        match self {
            Artifact::Build | Artifact::Pxe => format!("{name}-kernel"),
            Artifact::Uki => format!("{name}.efi"),
            other => format!("{name}.{}", other.format()),
        }
    }
}

impl MediaBoot {
    fn parse(line: &str) -> Result<MediaBoot, String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let scenario = match words.last().and_then(|w| w.strip_prefix('@')) {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                let name = name.to_string();
                words.pop();
                Some(name)
            }
            Some(_) => return Err(format!("{line:?}: a scenario is @NAME")),
            None => None,
        };
        let (artifact, firmware, medium, auto_accel) = match words[..] {
            [artifact, firmware, medium] => (artifact, firmware, medium, false),
            [artifact, firmware, medium, "auto"] => (artifact, firmware, medium, true),
            _ => {
                return Err(format!(
                    "{line:?}: expected ARTIFACT FIRMWARE MEDIUM [auto]"
                ));
            }
        };
        let artifact = Artifact::ALL
            .iter()
            .find(|(n, _)| *n == artifact)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("{line:?}: unknown artifact {artifact:?}"))?;
        let (uefi, firmware_image) = match firmware {
            "bios" => (false, false),
            "uefi" => (true, false),
            "fw" => (true, true),
            other => {
                return Err(format!(
                    "{line:?}: unknown firmware {other:?}: bios, uefi or fw"
                ));
            }
        };
        let medium = match medium {
            "cdrom" => Medium::Cdrom,
            "usb" => Medium::Usb,
            "disk" => Medium::Disk,
            "kernel" => Medium::Kernel,
            "terminal" => Medium::Terminal,
            "http" => Medium::Http,
            "registry" => Medium::Registry,
            other => return Err(format!("{line:?}: unknown medium {other:?}")),
        };
        Ok(MediaBoot {
            artifact,
            uefi,
            firmware_image,
            medium,
            auto_accel,
            scenario,
        })
    }

    /// The case's file `base`, or the scenario's own (`NAME.base`).
    fn file(&self, base: &str) -> String {
        match &self.scenario {
            Some(name) => format!("{name}.{base}"),
            None => base.to_string(),
        }
    }

    fn label(&self) -> String {
        let medium = match self.medium {
            Medium::Cdrom => "cdrom",
            Medium::Usb => "usb",
            Medium::Disk => "disk",
            Medium::Kernel => "kernel",
            Medium::Terminal => "terminal",
            Medium::Http => "http",
            Medium::Registry => "registry",
        };
        let firmware = match (self.uefi, self.firmware_image) {
            (_, true) => "fw",
            (true, false) => "uefi",
            (false, false) => "bios",
        };
        let label = format!("{}-{firmware}-{medium}", self.artifact.format());
        match &self.scenario {
            Some(name) => format!("{label}-{name}"),
            None => label,
        }
    }
}

fn cases(root: &Path) -> Result<Vec<Case>, String> {
    let entries = fs::read_dir(root).map_err(|e| format!("reading {}: {e}", root.display()))?;
    let mut cases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", root.display()))?;
        let dir = entry.path();
        if !dir.join("image.yml").is_file() {
            continue;
        }
        let media = match fs::read_to_string(dir.join("media")) {
            Ok(text) => qemu_tests::parse_expect(&text)
                .iter()
                .map(|line| MediaBoot::parse(line))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", dir.join("media").display()))?,
            Err(_) => Vec::new(),
        };
        // Each boot's expected lines: the case's, or its scenario's own.
        let mut expected: Vec<String> = media.iter().map(|boot| boot.file("expect")).collect();
        if expected.is_empty() {
            expected.push("expect".into());
        }
        if let Some(missing) = expected.iter().find(|name| !dir.join(name).is_file()) {
            return Err(format!("{} has image.yml but no {missing}", dir.display()));
        }
        cases.push(Case {
            name: entry.file_name().to_string_lossy().into_owned(),
            dir,
            media,
            built: OnceLock::new(),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// What every case needs, prepared once by the first case that runs.
enum Setup {
    Ready {
        qemu: PathBuf,
        /// Chosen by the first case that boots, with its kernel.
        accel: OnceLock<Accel>,
        berth: PathBuf,
    },
    Skip(String),
    Fail(String),
}

impl Setup {
    fn prepare(paths: &Paths) -> Setup {
        let qemu = match qemu::locate() {
            Ok(qemu) => qemu,
            Err(error) => return Setup::Skip(error.to_string()),
        };
        if let Err(error) =
            fixtures::debian::fixture_images(&paths.fixtures_work(), &paths.fixtures_cache())
        {
            return Setup::Skip(format!("the fixture images could not be made: {error:#}"));
        }
        if let Err(error) = build_berth(paths) {
            return Setup::Fail(error);
        }
        Setup::Ready {
            qemu,
            accel: OnceLock::new(),
            berth: paths.berth(),
        }
    }
}

/// Builds the berth binary (a no-op when it is up to date) in this test's
/// target directory and profile.
fn build_berth(paths: &Paths) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "builder", "--bin", "berth"])
        .args(["--profile", &paths.cargo_profile()])
        .arg("--target-dir")
        .arg(&paths.target)
        .current_dir(&paths.workspace);
    let output = qemu::output_with_timeout(&mut command, BUILD_TIMEOUT).map_err(chain)?;
    if !output.status.success() {
        return Err(format!(
            "building berth failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if !paths.berth().is_file() {
        return Err(format!("cargo built no {}", paths.berth().display()));
    }
    Ok(())
}

/// A skip, or in CI a failure.
/// What `{port}`, `{disk}`, `{home}` and `{ssh}` in a case's files stand
/// for: a free TCP port on 127.0.0.1 (for a `hostfwd`), a new empty 1 GiB
/// disk image, a home directory holding a fresh SSH key pair
/// (`.ssh/id_ed25519`), which is also `berth build`'s `HOME`, so that a
/// definition's `~/.ssh/id_ed25519.pub` is that key, and a script there
/// that runs ssh to that port with that key.
struct Places {
    port: u16,
    disk: PathBuf,
    home: PathBuf,
}

enum Missing {
    Tool(&'static str),
    Failed(String),
}

impl Places {
    fn make(results: &Path, text: &str) -> Result<Places, Missing> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| Missing::Failed(format!("{what}: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed("finding a free port", &e))?
            .port();
        let disk = results.join("disk.img");
        if text.contains("{disk}") {
            let file =
                fs::File::create(&disk).map_err(|e| failed(&disk.display().to_string(), &e))?;
            file.set_len(1 << 30)
                .map_err(|e| failed(&disk.display().to_string(), &e))?;
        }
        let home = results.join("home");
        let _ = fs::remove_dir_all(&home);
        fs::create_dir_all(home.join(".ssh"))
            .map_err(|e| failed(&home.display().to_string(), &e))?;
        let ssh_script = text.contains("{ssh}");
        if text.contains("{home}") || ssh_script {
            qemu::find_program("ssh").ok_or(Missing::Tool("ssh"))?;
            let keygen = qemu::find_program("ssh-keygen").ok_or(Missing::Tool("ssh-keygen"))?;
            let key = home.join(".ssh/id_ed25519");
            let mut command = Command::new(keygen);
            command
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f"])
                .arg(&key);
            let output = qemu::output_with_timeout(&mut command, Duration::from_secs(30))
                .map_err(|e| failed("ssh-keygen", &chain(e)))?;
            if !output.status.success() {
                return Err(failed(
                    "ssh-keygen",
                    &String::from_utf8_lossy(&output.stderr),
                ));
            }
        }
        if ssh_script {
            // `{ssh}`: ssh to the guest's forwarded port with that key, as
            // any user, answering no question.
            let script = home.join("ssh");
            let text = format!(
                "#!/bin/sh\nexec ssh -q -F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes \
                 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 \
                 -p {port} -i {} \"$@\"\n",
                home.join(".ssh/id_ed25519").display()
            );
            fs::write(&script, text)
                .and_then(|()| fs::set_permissions(&script, fs::Permissions::from_mode(0o755)))
                .map_err(|e| failed(&script.display().to_string(), &e))?;
        }
        Ok(Places { port, disk, home })
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{ssh}", &self.home.join("ssh").to_string_lossy())
            .replace("{port}", &self.port.to_string())
            .replace("{disk}", &self.disk.to_string_lossy())
            .replace("{home}", &self.home.to_string_lossy())
    }
}

/// The first entry of `dir` whose name starts with `prefix`, in the
/// fixtures' unpacked Debian kernel package.
fn unpacked_kernel_entry(work: &Path, dir: &str, prefix: &str) -> Result<PathBuf, Failed> {
    let unpacked = work.join("unpacked");
    Ok(fs::read_dir(&unpacked)
        .map_err(|e| format!("{}: {e}", unpacked.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("linux-image-"))
        .find_map(|e| {
            fs::read_dir(e.path().join(dir))
                .ok()?
                .flatten()
                .find(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        })
        .ok_or_else(|| {
            format!(
                "no {dir}/{prefix}… in an unpacked kernel under {}",
                unpacked.display()
            )
        })?
        .path())
}

/// The accelerator probe's Linux boot works: Debian's kernel, alone, boots
/// to its panic under TCG. (Were it to fail everywhere, KVM would never be
/// chosen and nothing else would notice.)
fn linux_probe_boots_the_fixture_kernel(paths: &Paths, qemu: &Path) -> Result<(), Failed> {
    let kernel = unpacked_kernel_entry(&paths.fixtures_work(), "boot", "vmlinuz-")?;
    let elapsed =
        qemu::probe_linux(qemu, Accel::Tcg, &kernel, qemu_tests::TCG_TIMEOUT).map_err(chain)?;
    qemu_tests::note(&format!(
        "{} booted to its panic under tcg in {:.1} s",
        kernel.display(),
        elapsed.as_secs_f64()
    ));
    Ok(())
}

/// `berth run qemu` refuses what it cannot boot before QEMU starts, in one
/// line naming it, with status 1: a missing artifact, a disk it cannot
/// open, a published port in use, firmware that is not there; and
/// `--accel kvm` on a host where KVM does not work fails the same way
/// within seconds, where `--accel auto` (the `build` boot of 200_media)
/// falls back to TCG.
fn berth_run_refuses_bad_input(paths: &Paths, qemu: &Path) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let vm = dir.path().join("vm");
    let kernel = unpacked_kernel_entry(&paths.fixtures_work(), "boot", "vmlinuz-")?;
    fs::copy(&kernel, dir.path().join("vm-kernel")).map_err(|e| e.to_string())?;
    fs::write(dir.path().join("vm-initrd.img"), b"").map_err(|e| e.to_string())?;
    fs::write(dir.path().join("vm-cmdline"), "console=ttyS0 panic=-1\n")
        .map_err(|e| e.to_string())?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = taken.local_addr().map_err(|e| e.to_string())?.port();
    let missing = dir.path().join("missing");
    let not_a_disk = dir.path().join("a-directory");
    fs::create_dir(&not_a_disk).map_err(|e| e.to_string())?;
    let no_firmware = dir.path().join("OVMF.fd");
    let text = |path: &Path| path.display().to_string();
    let refusals: Vec<(Vec<String>, String)> = vec![
        (
            vec![text(&missing)],
            format!("{}: no such artifact", text(&missing)),
        ),
        (
            vec!["--disk".into(), text(&not_a_disk), text(&vm)],
            format!("disk {} cannot be opened for writing", text(&not_a_disk)),
        ),
        (
            vec!["-p".into(), format!("{port}:22"), text(&vm)],
            format!("port 127.0.0.1:{port} cannot be published: it is in use"),
        ),
        (
            vec!["--fw".into(), text(&no_firmware), text(&vm)],
            format!("firmware {} not found", text(&no_firmware)),
        ),
    ];
    let run = |args: &[String], timeout: Duration| {
        let mut command = Command::new(paths.berth());
        command
            .args(["run", "qemu"])
            .args(args)
            .stdin(std::process::Stdio::null());
        let shown = qemu::shell_line(&command);
        let started = std::time::Instant::now();
        let output = qemu::output_with_timeout(&mut command, timeout).map_err(chain)?;
        Ok::<_, Failed>((shown, output, started.elapsed()))
    };
    let one_line = |shown: &str, output: &std::process::Output, expected: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("berth: "))
            .collect();
        if output.status.code() != Some(1) || lines.len() != 1 || !lines[0].contains(expected) {
            return Err(format!(
                "{shown}: expected status 1 and one line with {expected:?}; got {} and:\n{stderr}",
                output.status
            ));
        }
        Ok(())
    };
    for (args, expected) in &refusals {
        let (shown, output, _) = run(args, Duration::from_secs(30))?;
        one_line(&shown, &output, expected)?;
    }
    drop(taken);

    // KVM: a refusal within seconds where it does not work (the probe's
    // own limits are 5 s and 20 s).
    let args = vec!["--accel".into(), "kvm".into(), text(&vm)];
    match run(&args, Duration::from_secs(60)) {
        Ok((shown, output, elapsed)) if output.status.code() == Some(1) => {
            one_line(&shown, &output, "--accel kvm: KVM")?;
            qemu_tests::note(&format!(
                "berth run --accel kvm refused in {:.1} s",
                elapsed.as_secs_f64()
            ));
        }
        Ok((shown, output, _)) => {
            return Err(format!(
                "{shown} ended with {} before its 60 s: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        // Still running after 60 s: KVM works here and the machine
        // booted (and was killed by the timeout).
        Err(_) if qemu::choose_accel(qemu, Some(&kernel)).accel == Accel::Kvm => {
            qemu_tests::note("KVM works here: --accel kvm booted, its refusal is not checked");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(text)
                .then_some(pid)
        })
        .collect()
}

/// `berth run qemu` killed outright (SIGKILL: nothing of berth runs) takes
/// its QEMU along, although QEMU runs in a process group of its own.
fn berth_run_killed(paths: &Paths, _qemu: &Path) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kernel = unpacked_kernel_entry(&paths.fixtures_work(), "boot", "vmlinuz-")?;
    let vm_kernel = dir.path().join("killed-kernel");
    fs::copy(&kernel, &vm_kernel).map_err(|e| e.to_string())?;
    let mut berth = Command::new(paths.berth())
        .args(["run", "qemu", "--accel", "tcg", "--networking", "none"])
        .arg(dir.path().join("killed"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let marker = vm_kernel.display().to_string();
    let started = std::time::Instant::now();
    let qemus = loop {
        let qemus: Vec<u32> = processes_mentioning(&marker)
            .into_iter()
            .filter(|&pid| pid != berth.id())
            .collect();
        if !qemus.is_empty() || started.elapsed() > Duration::from_secs(30) {
            break qemus;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = berth.kill();
    let _ = berth.wait();
    if qemus.is_empty() {
        return Err("berth run qemu started no QEMU within 30 s".into());
    }
    let killed = std::time::Instant::now();
    while killed.elapsed() < Duration::from_secs(10) {
        if processes_mentioning(&marker).is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for pid in &qemus {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    Err(format!("QEMU (pid {qemus:?}) still ran 10 s after its berth run was killed").into())
}

/// `berth run qemu --networking tap,IF`: the machine's card is on a tap
/// interface of the host, here in a network namespace of the test's own
/// (nothing reaches the host's network): the minimal example's DHCP client
/// asks on it, and the tap counts the guest's packets. Needs root (CI is).
fn berth_run_on_a_tap(paths: &Paths, _qemu: &Path) -> Result<(), Failed> {
    let ip = match qemu::find_program("ip") {
        Some(ip) => ip,
        None if qemu_tests::ci() => return Err("ip (iproute2) is not installed".into()),
        None => {
            qemu_tests::note("skipped: ip (iproute2) is not installed");
            return Ok(());
        }
    };
    let namespace = format!("berth-tap-{}", std::process::id());
    let run_ip = |args: &[&str]| -> Result<String, String> {
        let mut command = Command::new(&ip);
        command.args(args);
        let output =
            qemu::output_with_timeout(&mut command, Duration::from_secs(30)).map_err(chain)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{}: {}",
                qemu::shell_line(&command),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    if let Err(e) = run_ip(&["netns", "add", &namespace]) {
        if qemu_tests::ci() {
            return Err(e.into());
        }
        qemu_tests::note(&format!("skipped: no network namespace of our own: {e}"));
        return Ok(());
    }
    struct Namespace<'a>(&'a str, &'a Path);
    impl Drop for Namespace<'_> {
        fn drop(&mut self) {
            let _ = Command::new(self.1)
                .args(["netns", "delete", self.0])
                .status();
        }
    }
    let _namespace = Namespace(&namespace, &ip);
    run_ip(&[
        "-n", &namespace, "tuntap", "add", "dev", "tap0", "mode", "tap",
    ])?;
    run_ip(&["-n", &namespace, "link", "set", "tap0", "up"])?;

    let example = paths.workspace.join("examples");
    let yaml = fs::read_to_string(example.join("minimal.yml")).map_err(|e| e.to_string())?;
    build_packages(paths, &paths.berth(), &example, &yaml, false)?;
    let out = paths.case_dir("tap").join("out");
    let _ = fs::remove_dir_all(&out);
    let mut build = Command::new(paths.berth());
    build
        .env("BERTH_OFFLINE", "1")
        .args(["build", "-o"])
        .arg(&out)
        .arg("--cache")
        .arg(paths.fixtures_cache())
        .arg(example.join("minimal.yml"));
    let output = qemu::output_with_timeout(&mut build, BUILD_TIMEOUT).map_err(chain)?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
    }

    let mut command = Command::new(&ip);
    command
        .args(["netns", "exec", &namespace])
        .arg(paths.berth())
        .args(["run", "qemu", "--accel", "tcg", "--mem", "512"])
        .args(["--networking", "tap,tap0"])
        .arg(out.join("minimal"));
    let expect: Vec<String> = [
        "berth-init: all services started",
        "login:",
        "^C",
        "reboot: Power down",
    ]
    .map(String::from)
    .to_vec();
    let report = qemu_tests::boot_launch(
        qemu_tests::Launch::berth_run(command),
        &expect,
        qemu_tests::TCG_TIMEOUT,
    )
    .map_err(|e| format!("{e:#}"))?;
    let saved = report
        .save(&paths.case_dir("tap"))
        .map_err(|e| format!("{e:#}"))?;
    report
        .verdict
        .clone()
        .map_err(|reason| format!("{reason}\nserial transcript: {}", saved.serial.display()))?;
    // The tap's receive counter: what the guest sent (DHCP, IPv6).
    let statistics = run_ip(&["-n", &namespace, "-s", "-j", "link", "show", "tap0"])?;
    let links: serde_json::Value =
        serde_json::from_str(&statistics).map_err(|e| format!("{e}: {statistics}"))?;
    let received = links[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0);
    if received == 0 {
        return Err(format!("the tap received nothing from the guest: {statistics}").into());
    }
    qemu_tests::note(&format!(
        "the tap received {received} packets from the guest"
    ));
    Ok(())
}

/// Debian's OVMF in one file (`ovmf`), for `berth run --fw`.
const DEBIAN_OVMF_IMAGE: &str = "/usr/share/ovmf/OVMF.fd";

/// The definition the media checks build: the one the media boot case
/// boots.
const MEDIA_CASE: &str = "qemu-tests/cases/200_media";

/// Every format of bootable media berth writes in one build (dynamic-vhd
/// apart: it writes NAME.vhd as vhd does).
const MEDIA_FORMATS: &[&str] = &["uki", "iso", "raw", "qcow2", "vhd", "vmdk", "gcp"];

/// `berth build` of the media case into `out` with `args`; its output.
fn build_media(paths: &Paths, out: &Path, args: &[&str]) -> Result<std::process::Output, Failed> {
    let case = paths.workspace.join(MEDIA_CASE);
    let yaml = fs::read_to_string(case.join("image.yml")).map_err(|e| e.to_string())?;
    build_packages(paths, &paths.berth(), &case, &yaml, true)?;
    let mut command = Command::new(paths.berth());
    command
        .env("BERTH_OFFLINE", "1")
        .arg("build")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("--cache")
        .arg(paths.fixtures_cache())
        .args(["--name", "media"])
        .arg(case.join("image.yml"))
        .current_dir(&case);
    qemu::output_with_timeout(&mut command, BUILD_TIMEOUT).map_err(|e| chain(e).into())
}

/// Like [`build_media`], but a failed build is an error.
fn built_media(paths: &Paths, out: &Path, formats: &[&str]) -> Result<(), Failed> {
    let _ = fs::remove_dir_all(out);
    let args: Vec<&str> = formats.iter().flat_map(|f| ["-f", f]).collect();
    let output = build_media(paths, out, &args)?;
    if !output.status.success() {
        return Err(format!(
            "berth build {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

/// Every medium of one build passes the checks of tools berth did not
/// write; a second build gives the same bytes, and so does each format
/// built alone.
fn media_are_sound_and_reproducible(paths: &Paths, _qemu: &Path) -> Result<(), Failed> {
    let missing: Vec<&str> = qemu_tests::media::TOOLS
        .iter()
        .copied()
        .filter(|tool| qemu::find_program(tool).is_none())
        .collect();
    if !missing.is_empty() {
        let reason = format!("{missing:?} not installed");
        return match qemu_tests::ci() {
            true => Err(format!("{reason}, and CI=true makes a skip a failure").into()),
            false => {
                qemu_tests::note(&format!("skipped: {reason}"));
                Ok(())
            }
        };
    }
    let work = paths.case_dir("media-checks");
    let all = work.join("all");
    built_media(paths, &all, MEDIA_FORMATS)?;
    let scratch = work.join("scratch");
    fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    for line in
        qemu_tests::media::check_artifacts(&all, "media", &scratch).map_err(|e| format!("{e:#}"))?
    {
        qemu_tests::note(&line);
    }
    let listed = |dir: &Path| qemu_tests::media::files(dir).map_err(|e| format!("{e:#}"));
    let artifact = |format: &str| match format {
        "uki" => "media.efi".to_string(),
        "gcp" => "media.img.tar.gz".to_string(),
        other => format!("media.{other}"),
    };
    let mut expected: Vec<String> = MEDIA_FORMATS.iter().map(|f| artifact(f)).collect();
    expected.push("media.lock".into());
    expected.push("media.spdx.json".into());
    expected.sort();
    if listed(&all)? != expected {
        return Err(format!(
            "the build of every format wrote {:?}, not {expected:?}",
            listed(&all)?
        )
        .into());
    }
    let again = work.join("again");
    built_media(paths, &again, MEDIA_FORMATS)?;
    qemu_tests::media::same_dirs(&all, &again).map_err(|e| format!("{e:#}"))?;
    for format in MEDIA_FORMATS {
        let alone = work.join(format!("alone-{format}"));
        built_media(paths, &alone, &[format])?;
        let mut expected = vec![
            artifact(format),
            "media.lock".to_string(),
            "media.spdx.json".to_string(),
        ];
        expected.sort();
        if listed(&alone)? != expected {
            return Err(format!(
                "-f {format} alone wrote {:?}, not {expected:?}",
                listed(&alone)?
            )
            .into());
        }
        for name in qemu_tests::media::files(&alone).map_err(|e| format!("{e:#}"))? {
            let (a, b) = (alone.join(&name), all.join(&name));
            if !qemu_tests::media::same_bytes(&a, &b).map_err(|e| format!("{e:#}"))? {
                return Err(format!(
                    "-f {format} alone wrote a {name} other than the build of every format"
                )
                .into());
            }
        }
    }
    // dynamic-vhd, with the raw disk it is converted from, twice.
    let dynamic = work.join("dynamic");
    built_media(paths, &dynamic, &["raw", "dynamic-vhd"])?;
    qemu_tests::media::check_artifacts(&dynamic, "media", &scratch)
        .map_err(|e| format!("{e:#}"))?;
    let kinds = [all.join("media.vhd"), dynamic.join("media.vhd")]
        .map(|vhd| qemu_tests::media::vhd_kind(&vhd).map_err(|e| format!("{e:#}")));
    if !matches!(kinds, [Ok(2), Ok(3)]) {
        return Err(format!(
            "-f vhd and -f dynamic-vhd wrote VHDs of types {kinds:?}, not 2 (fixed) and 3 (dynamic)"
        )
        .into());
    }
    let dynamic_again = work.join("dynamic-again");
    built_media(paths, &dynamic_again, &["raw", "dynamic-vhd"])?;
    qemu_tests::media::same_dirs(&dynamic, &dynamic_again).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

/// `--size` too small for the disk: the build fails with one line naming
/// the format and the size needed, writes nothing, and leaves an earlier
/// artifact of the same name as it was.
fn too_small_disk(paths: &Paths, _qemu: &Path) -> Result<(), Failed> {
    let out = paths.case_dir("media-checks").join("too-small");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let earlier = out.join("media.qcow2");
    fs::write(&earlier, b"an earlier build").map_err(|e| e.to_string())?;
    // A build of `args`: its exit status, its whole standard error and
    // that error's last line.
    let build = |args: &[&str]| -> Result<(Option<i32>, String, String), Failed> {
        let output = build_media(paths, &out, args)?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let last = stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        Ok((output.status.code(), stderr, last))
    };
    let (status, stderr, last) = build(&["-f", "qcow2", "-f", "iso", "--size", "4M"])?;
    if status != Some(1)
        || !last.contains("-f qcow2")
        || !last.contains("too small")
        || !last.contains("needs at least")
    {
        return Err(format!(
            "expected exit status 1 and one line naming -f qcow2 and the size it needs, got {status:?}:\n{stderr}"
        )
        .into());
    }
    let left = qemu_tests::media::files(&out).map_err(|e| format!("{e:#}"))?;
    if left != ["media.qcow2"] || fs::read(&earlier).ok().as_deref() != Some(b"an earlier build") {
        return Err(format!("the failed build left {left:?} in {}", out.display()).into());
    }
    qemu_tests::note(&format!("--size 4M: {last}"));
    // The size needed is the disk's, however small the size asked for.
    let needed = |line: &str| line.split("needs at least ").nth(1).map(str::to_string);
    let (tiny_status, _, tiny_last) = build(&["-f", "raw", "--size", "1M"])?;
    if tiny_status != Some(1) || needed(&tiny_last) != needed(&last) || needed(&last).is_none() {
        return Err(format!("--size 1M said {tiny_last:?}, --size 4M said {last:?}").into());
    }
    // Not a whole MiB: refused before anything is built.
    let (odd_status, odd_stderr, _) = build(&["-f", "vhd", "--size", "1000000"])?;
    if odd_status != Some(1)
        || !odd_stderr.contains("--size 1000000: a disk is a whole number of MiB")
    {
        return Err(format!("--size 1000000 said {odd_stderr:?}").into());
    }
    let left = qemu_tests::media::files(&out).map_err(|e| format!("{e:#}"))?;
    if left != ["media.qcow2"] {
        return Err(format!("the failed builds left {left:?} in {}", out.display()).into());
    }
    Ok(())
}

/// Every name of the builder's default module set is a module or built
/// into Debian's cloud kernel, except the drivers only Debian's generic
/// kernel has: a misspelt name would silently drop a driver.
fn default_modules_exist(paths: &Paths, _qemu: &Path) -> Result<(), Failed> {
    let work = &paths.fixtures_work();
    const GENERIC_KERNEL_ONLY: &[&str] = &["e1000", "e1000e", "ahci", "9p", "9pnet_virtio"];
    let version_dir = unpacked_kernel_entry(work, "lib/modules", "")?;
    let mut known = std::collections::BTreeSet::new();
    let mut dirs = vec![version_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(name) = contract::depmod::module_name(&path.to_string_lossy()) {
                known.insert(name);
            }
        }
    }
    let builtin = fs::read_to_string(version_dir.join("modules.builtin")).unwrap_or_default();
    known.extend(contract::depmod::parse_builtin(&builtin));
    let missing: Vec<&str> = builder::kernel::modules::VM_DEFAULT
        .iter()
        .copied()
        .filter(|n| !known.contains(*n) && !GENERIC_KERNEL_ONLY.contains(n))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not in {}: {missing:?}", version_dir.display()).into())
    }
}

/// Writes the file a `random` line asks for (`NAME MIB`) into `home`:
/// MIB MiB of a fixed xorshift sequence, which no compressor shrinks and
/// whose checksum an `expect` file can name.
fn write_random(home: &Path, line: &str) -> Result<(), String> {
    use std::io::Write;
    let (name, mib) = line
        .split_once(' ')
        .and_then(|(name, mib)| Some((name, mib.trim().parse::<usize>().ok()?)))
        .ok_or_else(|| format!("{line:?} is not NAME MIB"))?;
    let path = home.join(name);
    let file = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    out.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// A launcher error and its causes, on one line.
fn chain(error: qemu::Error) -> String {
    format!("{:#}", anyhow::Error::new(error))
}

fn skip(reason: String) -> Result<Completion, Failed> {
    if qemu_tests::ci() {
        Err(format!("skipped, and CI=true makes a skip a failure: {reason}").into())
    } else {
        qemu_tests::note(&format!("skipped: {reason}"));
        Ok(Completion::ignored_with(reason))
    }
}

/// What a case's build made, shared by its boots.
struct Built {
    out: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    /// `NAME-squashfs.img` of a `kernel+squashfs` build, attached as a
    /// read-only virtio disk.
    squashfs: Option<PathBuf>,
    /// The verdict of the case's `inspect` checks on the initrd.
    inspection: Result<(), String>,
}

fn run_case(
    case: &Case,
    boot: Option<&MediaBoot>,
    paths: &Paths,
    setup: &Setup,
) -> Result<Completion, Failed> {
    let (qemu, accel, berth) = match setup {
        Setup::Ready { qemu, accel, berth } => (qemu, accel, berth),
        Setup::Skip(reason) => return skip(reason.clone()),
        Setup::Fail(error) => return Err(error.clone().into()),
    };
    let checks = match fs::read_to_string(case.dir.join("inspect")) {
        Ok(text) => initrd::parse_checks(&text)
            .map_err(|e| format!("{}: {e:#}", case.dir.join("inspect").display()))?,
        Err(_) => Vec::new(),
    };
    let missing_tool = initrd::TOOLS
        .iter()
        .find(|tool| qemu::find_program(tool).is_none());
    let changes_initrd = !checks.is_empty() || case.dir.join("append").is_dir();
    if let (true, Some(tool)) = (changes_initrd, missing_tool) {
        return skip(format!(
            "{tool} is not installed (needed to inspect or append to the initrd)"
        ));
    }
    let label = match boot {
        None => case.name.clone(),
        Some(boot) => format!("{}/{}", case.name, boot.label()),
    };
    let results = match boot {
        None => paths.case_dir(&case.name),
        Some(boot) => paths.case_dir(&case.name).join(boot.label()),
    };
    fs::create_dir_all(&results).map_err(|e| format!("creating {}: {e}", results.display()))?;

    let read = |name: &str| case.read(name);
    let own = |base: &str| boot.map_or(base.to_string(), |boot| boot.file(base));
    let expect_text = read(&own("expect"))?.unwrap_or_default();
    if expect_text.trim().is_empty() {
        return Err(format!(
            "{}: nothing expected",
            case.dir.join(own("expect")).display()
        )
        .into());
    }
    let qemu_args_text = read("qemu-args")?.unwrap_or_default();
    let run_args_text = read(&own("run-args"))?.unwrap_or_default();
    let setup_text = match boot {
        Some(boot) if boot.scenario.is_some() => read(&boot.file("setup"))?.unwrap_or_default(),
        _ => String::new(),
    };
    let places = match Places::make(
        &results,
        &format!("{expect_text}{qemu_args_text}{run_args_text}{setup_text}"),
    ) {
        Ok(places) => places,
        Err(Missing::Tool(tool)) => return skip(format!("{tool} is not installed")),
        Err(Missing::Failed(e)) => return Err(e.into()),
    };
    let expect = qemu_tests::parse_expect(&places.fill(&expect_text));
    let built = case
        .built
        .get_or_init(|| build_case(case, paths, berth, &places, &checks))
        .as_ref()
        .map_err(|e| e.clone())?;

    // The scenario's host commands, before its boot.
    for line in qemu_tests::parse_expect(&places.fill(&setup_text)) {
        host_setup(&line, &case.dir, &results)?;
    }

    // Boot.
    let accel = *accel.get_or_init(|| qemu_tests::accel(qemu, &built.kernel));
    let memory =
        match read("memory")? {
            Some(memory) => Some(memory.trim().parse::<u32>().map_err(|_| {
                format!("{}: not a number of MiB", case.dir.join("memory").display())
            })?),
            None => None,
        };
    let qemu_args: Vec<std::ffi::OsString> = places
        .fill(&qemu_args_text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Into::into)
        .collect();
    // A short path: Unix socket names are limited to 108 bytes.
    let monitor = std::env::temp_dir().join(format!(
        "berth-qemu-{}-{}.sock",
        std::process::id(),
        label.replace('/', "-")
    ));
    let mut server = None;
    let mut metadata_server = None;
    let launch = match boot {
        Some(boot) if case.dir.join(boot.file("server")).exists() => {
            let (launch, imds) = server_launch(qemu, accel, boot, case, built, &places, &results)?;
            let needs_monitor = expect.iter().any(|l| l.starts_with("> ") || l == "^C");
            let launch = if needs_monitor {
                let _ = fs::remove_file(&monitor);
                qemu_tests::Launch::machine(&launch.monitor(&monitor))
            } else {
                qemu_tests::Launch::machine(&launch)
            };
            metadata_server = Some(imds);
            launch
        }
        Some(boot) if boot.artifact == Artifact::Pxe => {
            let _ = fs::remove_file(&monitor);
            let (launch, serving) = pxe_launch(
                berth, qemu, accel, boot, &case.name, built, &results, &monitor,
            )?;
            server = Some(serving);
            launch
        }
        Some(boot) => {
            if !qemu_args.is_empty() {
                return Err(format!(
                    "{}: qemu-args do not apply to the boots of `media`",
                    case.dir.display()
                )
                .into());
            }
            let run_args = qemu_tests::parse_expect(&places.fill(&run_args_text));
            media_launch(berth, accel, boot, case, built, &results, memory, &run_args)?
        }
        None => {
            let mut machine = Machine::new(qemu, accel)
                .kernel(Kernel::new(&built.kernel, &built.cmdline).initrd(&built.initrd));
            if let Some(image) = &built.squashfs {
                machine = machine.drive(
                    qemu::Drive::disk(image, qemu::Format::Raw, qemu::Interface::Virtio)
                        .read_only(),
                );
            }
            if let Some(memory) = memory {
                machine.memory_mib = memory;
            }
            // Devices for the case (network cards, disks): `qemu-args`, one
            // argument per line.
            machine.allow_reboot = case.dir.join("reboots").exists();
            machine.extra_args = qemu_args;
            if expect
                .iter()
                .any(|line| line.starts_with("> ") || line == "^C")
            {
                let _ = fs::remove_file(&monitor);
                machine = machine.monitor(&monitor);
            }
            qemu_tests::Launch::machine(&machine)
        }
    };
    // A case that runs long checks says how long it may take: `timeout`,
    // in seconds under TCG (half of it with KVM).
    let timeout_file = case.dir.join("timeout");
    let timeout = match fs::read_to_string(&timeout_file) {
        Ok(text) => {
            let seconds: u64 = text
                .trim()
                .parse()
                .map_err(|_| format!("{}: not a number of seconds", timeout_file.display()))?;
            match accel {
                Accel::Kvm => Duration::from_secs(seconds / 2),
                Accel::Tcg => Duration::from_secs(seconds),
            }
        }
        Err(_) => qemu_tests::boot_timeout(accel),
    };
    let report = qemu_tests::boot_launch(launch, &expect, timeout).map_err(|e| format!("{e:#}"));
    let _ = fs::remove_file(&monitor);
    let report = report?;
    // A network boot: what the server's access log says was fetched.
    let served = match (server, boot) {
        (Some(server), Some(boot)) => server.check(&case.name, boot.uefi),
        _ => Ok(()),
    };
    // A metadata server: its log, and what the guest's requests must show.
    let served = match metadata_server {
        Some(imds) => {
            let lines = imds.server.log_lines();
            let _ = fs::write(results.join("imds.log"), lines.join("\n") + "\n");
            served.and(check_imds_log(&imds, &lines))
        }
        None => served,
    };
    let saved = report
        .save(&results)
        .map_err(|e| format!("saving the transcript: {e:#}"))?;
    let verdict = report.verdict.clone().map_err(|reason| {
        format!(
            "{reason}\n\
             accelerator: {}\n\
             matched {} of {} expected lines\n\
             serial transcript: {}\n\
             qemu command line: {}\n\
             qemu stderr:       {}\n\
             last console lines:\n{}",
            accel,
            report.matched,
            expect.len(),
            saved.serial.display(),
            saved.command.display(),
            saved.stderr.display(),
            report.serial_tail(25)
        )
    });
    if verdict.is_ok() {
        qemu_tests::note(&format!(
            "{label}: booted with {} in {:.1} s",
            accel.name(),
            report.elapsed.as_secs_f64()
        ));
    }
    let verdict = match (verdict, served) {
        (Ok(()), Err(log)) => Err(format!("{log}\n(the boot itself succeeded)")),
        (verdict, _) => verdict,
    };
    match (built.inspection.clone(), verdict) {
        (Ok(()), Ok(())) => Ok(Completion::Completed),
        (Err(inspection), Ok(())) => {
            Err(format!("{inspection}\n(the boot itself succeeded)").into())
        }
        (Ok(()), Err(boot)) => Err(boot.into()),
        (Err(inspection), Err(boot)) => Err(format!("{inspection}\n\n{boot}").into()),
    }
}

/// A scenario's metadata server (`NAME.server`) and what its log must
/// show.
struct MetadataServer {
    server: fixtures::imds::Imds,
    /// EC2 with tokens: the first EC2 request (after those of sources
    /// probed before EC2) is for a token, and no request without a valid
    /// token gets anything.
    tokens: bool,
    /// Tokens wear out during the boot: a 401 is followed by a new token
    /// and a request that succeeds.
    renewals: bool,
}

/// The server a scenario describes, one `KEY VALUE` per line:
/// `service ec2|openstack`, `instance-id ID`, `hostname NAME`,
/// `public-key FILE`, `user-data FILE`, `token-uses N`,
/// `token-lifetime SECONDS`, `token-endpoint forbidden|not-found`,
/// `silent`; and the boot: its disk (the artifact, changes thrown away) on
/// SeaBIOS or OVMF, a user network on 169.254.0.0/16 where
/// 169.254.169.254:80 is the server and the guest's port 22 is `{port}`.
fn server_launch(
    qemu: &Path,
    accel: Accel,
    boot: &MediaBoot,
    case: &Case,
    built: &Built,
    places: &Places,
    results: &Path,
) -> Result<(Machine, MetadataServer), Failed> {
    use fixtures::imds::{Config, Imds, Instance, TokenEndpoint};
    let file = case.dir.join(boot.file("server"));
    let text =
        places.fill(&fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?);
    let bad = |line: &str, why: &str| format!("{}: {line:?}: {why}", file.display());
    let read = |name: &str| {
        let path = case.dir.join(name);
        fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    // The guest's address on the user network below (QEMU's DHCP hands
    // out .2.15 of a /16, its router .2.2, its name server .2.3).
    let mut instance = Instance {
        local_ipv4: "169.254.2.15".into(),
        prefix_len: 16,
        gateway: "169.254.2.2".into(),
        nameserver: "169.254.2.3".into(),
        ..Instance::new("i-0berth0test0000001")
    };
    let mut service = None;
    let mut settings = Vec::new();
    for line in qemu_tests::parse_expect(&text) {
        let (key, value) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match key {
            "service" => service = Some(value.to_string()),
            "instance-id" => instance.instance_id = value.to_string(),
            "hostname" => instance.hostname = value.to_string(),
            "public-key" => {
                let key = String::from_utf8_lossy(&read(value)?).trim().to_string();
                instance.public_keys.push(("berth-test".into(), key));
            }
            "user-data" => instance.user_data = Some(read(value)?),
            "token-uses" | "token-lifetime" | "token-endpoint" | "silent" => {
                settings.push((key.to_string(), value.to_string()))
            }
            _ => return Err(bad(&line, "unknown key").into()),
        }
    }
    let mut config = match service.as_deref() {
        Some("ec2") => Config::ec2(instance),
        Some("openstack") => Config::openstack(instance),
        _ => return Err(format!("{}: service ec2 or openstack", file.display()).into()),
    };
    for (key, value) in settings {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(&value, "not a number"))
        };
        match key.as_str() {
            "token-uses" => config.token_uses = Some(number()? as usize),
            "token-lifetime" => config.token_lifetime_cap = Some(Duration::from_secs(number()?)),
            "token-endpoint" => {
                config.token_endpoint = match value.as_str() {
                    "forbidden" => TokenEndpoint::Forbidden,
                    "not-found" => TokenEndpoint::NotFound,
                    _ => return Err(bad(&value, "forbidden or not-found").into()),
                }
            }
            _ => config.silent = true,
        }
    }
    let tokens = config.ec2
        && !config.openstack
        && config.token_endpoint == TokenEndpoint::Issue
        && !config.silent;
    let renewals = tokens && (config.token_uses.is_some() || config.token_lifetime_cap.is_some());
    let server = Imds::start(config).map_err(|e| format!("starting the metadata server: {e:#}"))?;
    let socat = qemu::find_program("socat").ok_or("socat is not installed")?;
    let artifact = built.out.join(boot.artifact.file(&case.name));
    let format = match boot.artifact {
        Artifact::Qcow2 => qemu::Format::Qcow2,
        Artifact::Vhd => qemu::Format::Vhd,
        Artifact::Vmdk => qemu::Format::Vmdk,
        _ => qemu::Format::Raw,
    };
    let mut machine = Machine::new(qemu, accel)
        .drive(qemu::Drive::disk(&artifact, format, qemu::Interface::Virtio).snapshot())
        .nic(qemu::Nic {
            restrict: true,
            network: Some("169.254.0.0/16".into()),
            forwards: vec![qemu::PortForward::tcp(places.port, 22)],
            guest_forwards: vec![qemu::GuestForward {
                address: std::net::Ipv4Addr::new(169, 254, 169, 254),
                port: 80,
                command: format!("{} STDIO TCP:{}", socat.display(), server.address()),
            }],
            ..qemu::Nic::default()
        });
    if boot.uefi {
        let vars = results.join("OVMF_VARS.fd");
        let _ = fs::remove_file(&vars);
        machine.firmware = qemu::Firmware::Uefi(qemu::Ovmf::debian(&vars).map_err(chain)?);
    }
    Ok((
        machine,
        MetadataServer {
            server,
            tokens,
            renewals,
        },
    ))
}

/// What a metadata server's log must show of the guest's requests.
fn check_imds_log(imds: &MetadataServer, lines: &[String]) -> Result<(), String> {
    let log = imds.server.log();
    let fail = |why: &str| {
        Err(format!(
            "{why}; the metadata server's log:\n{}",
            lines.join("\n")
        ))
    };
    if log.is_empty() {
        return fail("the guest asked the metadata server nothing");
    }
    if imds.tokens {
        use fixtures::imds::Token;
        let first = log.iter().find(|r| r.path.starts_with("/latest/"));
        if !first.is_some_and(|r| r.method == "PUT" && r.path == "/latest/api/token") {
            return fail("the guest's first EC2 request was not for a token");
        }
        if log
            .iter()
            .any(|r| r.token != Token::Valid && r.method == "GET" && r.status == Some(200))
        {
            return fail("a request without a valid token was answered");
        }
    }
    if imds.renewals {
        let renewed = log.iter().enumerate().any(|(i, r)| {
            r.status == Some(401)
                && log[i + 1..]
                    .iter()
                    .position(|n| n.method == "PUT" && n.status == Some(200))
                    .is_some_and(|p| {
                        log[i + 1 + p + 1..]
                            .iter()
                            .any(|n| n.method == "GET" && n.status == Some(200))
                    })
        });
        if !renewed {
            return fail("no 401 was followed by a new token and a request that got an answer");
        }
    }
    Ok(())
}

/// Runs one line of a scenario's `setup` with `sh -c` in the case's
/// directory; its output goes to `setup.log` in the boot's results.
fn host_setup(line: &str, dir: &Path, results: &Path) -> Result<(), String> {
    let mut command = Command::new("sh");
    command.args(["-c", line]).current_dir(dir);
    let output =
        qemu::output_with_timeout(&mut command, Duration::from_secs(120)).map_err(chain)?;
    let log = results.join("setup.log");
    let mut text = fs::read(&log).unwrap_or_default();
    text.extend_from_slice(format!("$ {line}\n").as_bytes());
    text.extend_from_slice(&output.stdout);
    text.extend_from_slice(&output.stderr);
    let _ = fs::write(&log, text);
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "setup command {line:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `berth run qemu` booting `boot`'s artifact, as a user would: the
/// artifact is never changed (berth attaches it with a throw-away
/// overlay), and the machine's state (OVMF's variables) is kept in the
/// boot's results, made anew for each boot.
#[allow(clippy::too_many_arguments)]
fn media_launch(
    berth: &Path,
    accel: Accel,
    boot: &MediaBoot,
    case: &Case,
    built: &Built,
    results: &Path,
    memory: Option<u32>,
    run_args: &[String],
) -> Result<qemu_tests::Launch, Failed> {
    let name = &case.name;
    let file = match boot.artifact {
        Artifact::Build => built.out.join(name),
        artifact => built.out.join(artifact.file(name)),
    };
    let state = results.join("state");
    if state.exists() {
        fs::remove_dir_all(&state).map_err(|e| format!("clearing {}: {e}", state.display()))?;
    }
    let accel = if boot.auto_accel {
        "auto"
    } else {
        accel.name()
    };
    let mut command = Command::new(berth);
    command.args(["run", "qemu", "--accel", accel]);
    // No network unless the case's run-args ask for one.
    if !run_args
        .iter()
        .any(|arg| ["-p", "--publish", "--networking"].contains(&arg.as_str()))
    {
        command.args(["--networking", "none"]);
    }
    command
        .arg("--mem")
        .arg(memory.unwrap_or(512).to_string())
        .arg("--state")
        .arg(&state);
    if boot.firmware_image {
        command.args(["--fw", DEBIAN_OVMF_IMAGE]);
    } else if boot.uefi {
        command.arg("--uefi");
    }
    if boot.medium == Medium::Usb {
        command.arg("--usb");
    }
    // The case's own arguments (`run-args`), relative to its directory.
    command.args(run_args).current_dir(&case.dir);
    command.arg(&file);
    Ok(match boot.medium {
        Medium::Terminal => qemu_tests::Launch::berth_run_on_terminal(&command),
        _ => qemu_tests::Launch::berth_run(command),
    })
}

/// `berth serve` for a network boot, running until dropped; its access
/// log goes to a file in the boot's results.
struct Serving {
    child: std::process::Child,
    log: PathBuf,
    /// The registry of `--from`, kept until the boot is over.
    _registry: Option<fixtures::registry::Registry>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    /// Starts `berth ARGS --addr 127.0.0.1:0` and reads the port it
    /// listens on from its line `berth serve: serving … on URL` on standard
    /// error; that and the rest (the access log) are copied into `log`.
    fn start(
        berth: &Path,
        args: &[std::ffi::OsString],
        log: PathBuf,
        registry: Option<fixtures::registry::Registry>,
    ) -> Result<(Serving, u16), String> {
        let mut command = Command::new(berth);
        command.args(args).args(["--addr", "127.0.0.1:0"]);
        let shown = qemu::shell_line(&command);
        let mut log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {shown}: {e}"))?;
        let mut serving = Serving {
            child,
            log,
            _registry: registry,
        };
        let stderr = serving.child.stderr.take().ok_or("no stderr")?;
        let mut reader = std::io::BufReader::new(stderr);
        // Lines before it say what --from pulls.
        let mut first = String::new();
        loop {
            let mut line = String::new();
            match std::io::BufRead::read_line(&mut reader, &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = std::io::Write::write_all(&mut log_file, line.as_bytes());
            if line.starts_with("berth serve: serving") {
                first = line;
                break;
            }
        }
        // The rest goes on into the log while berth serves.
        let copier = std::thread::spawn(move || std::io::copy(&mut reader, &mut log_file));
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok());
        let Some(port) = port else {
            let serving_log = serving.log.clone();
            drop(serving);
            let _ = copier.join();
            return Err(format!(
                "{shown} printed no address to serve on; its standard error is in {}",
                serving_log.display()
            ));
        };
        Ok((serving, port))
    }

    /// The access log shows the files of a network boot fetched whole:
    /// the kernel and the initrd, or under UEFI the UKI.
    fn check(self, name: &str, uefi: bool) -> Result<(), String> {
        let log_path = self.log.clone();
        drop(self);
        let log = fs::read_to_string(&log_path)
            .map_err(|e| format!("reading {}: {e}", log_path.display()))?;
        let wanted = if uefi {
            vec![format!("{name}.efi")]
        } else {
            vec![format!("{name}-kernel"), format!("{name}-initrd.img")]
        };
        for file in wanted {
            let fetched = log
                .lines()
                .any(|line| line.contains(&format!("GET /{file} ")) && line.contains(" 200 "));
            if !fetched {
                return Err(format!(
                    "berth serve's access log ({}) shows no GET /{file} answered 200:\n{log}",
                    log_path.display()
                ));
            }
        }
        Ok(())
    }
}

/// A network boot, BIOS or UEFI, as a bare-metal machine does it: QEMU
/// with a virtio card and Debian's iPXE ROM, `-boot n`, QEMU's user
/// network handing iPXE (over DHCP and TFTP) a two-line script that
/// chains to `berth serve`'s `/boot.ipxe` on the host's loopback
/// (10.0.2.2 to the guest). `berth serve` serves the build's directory,
/// or (`registry`) the build pushed to a registry with `berth push`,
/// through a cache of its own.
#[allow(clippy::too_many_arguments)]
fn pxe_launch(
    berth: &Path,
    qemu: &Path,
    accel: Accel,
    boot: &MediaBoot,
    name: &str,
    built: &Built,
    results: &Path,
    monitor: &Path,
) -> Result<(qemu_tests::Launch, Serving), Failed> {
    let log = results.join("berth-serve.log");
    let (serving, port) = match boot.medium {
        Medium::Http => Serving::start(
            berth,
            &["serve".into(), built.out.clone().into()],
            log,
            None,
        )?,
        Medium::Registry => {
            let registry = fixtures::registry::Registry::start()
                .map_err(|e| format!("starting a registry: {e:#}"))?;
            // Only what a network boot needs: the kernel, initrd,
            // command line and UKI of the build.
            let dir = results.join("pushed");
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for file in [
                format!("{name}-kernel"),
                format!("{name}-initrd.img"),
                format!("{name}-cmdline"),
                format!("{name}.efi"),
            ] {
                fs::copy(built.out.join(&file), dir.join(&file))
                    .map_err(|e| format!("copying {file}: {e}"))?;
            }
            let reference = format!("{}/pxe/{name}:1", registry.host());
            let cache = results.join("serve-cache");
            let _ = fs::remove_dir_all(&cache);
            let mut push = Command::new(berth);
            push.arg("push").arg(&dir).arg(&reference);
            let shown = qemu::shell_line(&push);
            let output = qemu::output_with_timeout(&mut push, BUILD_TIMEOUT).map_err(chain)?;
            if !output.status.success() {
                return Err(format!(
                    "{shown} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            let args: Vec<std::ffi::OsString> = vec![
                "serve".into(),
                "--from".into(),
                reference.into(),
                "--cache".into(),
                cache.into(),
            ];
            Serving::start(berth, &args, log, Some(registry))?
        }
        other => return Err(format!("a pxe boot is over http or registry, not {other:?}").into()),
    };
    let tftp = results.join("tftp");
    fs::create_dir_all(&tftp).map_err(|e| format!("{}: {e}", tftp.display()))?;
    fs::write(
        tftp.join("chain.ipxe"),
        format!("#!ipxe\nchain http://10.0.2.2:{port}/boot.ipxe\n"),
    )
    .map_err(|e| format!("{}: {e}", tftp.display()))?;
    let mut machine = Machine::new(qemu, accel);
    machine.defaults = false;
    machine.network_boot = true;
    if boot.uefi {
        let vars = results.join("OVMF_VARS.fd");
        let _ = fs::remove_file(&vars);
        machine.firmware = qemu::Firmware::Uefi(qemu::Ovmf::debian(&vars).map_err(chain)?);
    }
    let machine = machine
        .nic(qemu::Nic {
            tftp: Some(tftp),
            bootfile: Some("chain.ipxe".into()),
            ..qemu::Nic::default()
        })
        .monitor(monitor);
    Ok((qemu_tests::Launch::machine(&machine), serving))
}

/// Builds the images a definition names as `"@pkg:DIR"`, and berth's boot
/// image when `boot` is set, into the fixture cache: online, as their
/// Debian packages come from the archive. Builds of definitions are then
/// offline.
fn build_packages(
    paths: &Paths,
    berth: &Path,
    yaml_dir: &Path,
    yaml: &str,
    boot: bool,
) -> Result<(), String> {
    let mut packages: Vec<PathBuf> = yaml
        .split("\"@pkg:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|package| yaml_dir.join(package))
        .collect();
    if boot {
        packages.push(paths.workspace.join("images/boot"));
    }
    for package in packages {
        let mut command = Command::new(berth);
        command
            .args(["pkg", "build", "--cache"])
            .arg(paths.fixtures_cache())
            .arg(&package)
            .env_remove("BERTH_OFFLINE");
        let output = qemu::output_with_timeout(&mut command, BUILD_TIMEOUT).map_err(chain)?;
        if !output.status.success() {
            return Err(format!(
                "berth pkg build {} failed:\n{}",
                package.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// Builds the case: kernel+initrd always (the initrd is inspected, and its
/// kernel decides the accelerator), and every artifact its boots need, in
/// one `berth build`.
fn build_case(
    case: &Case,
    paths: &Paths,
    berth: &Path,
    places: &Places,
    checks: &[initrd::Check],
) -> Result<Built, String> {
    let results = paths.case_dir(&case.name);
    let out = results.join("out");
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

    // image.yml may be a link to an example: paths in it are relative to
    // the file it names.
    let image_yml = case
        .dir
        .join("image.yml")
        .canonicalize()
        .map_err(|e| format!("{}: {e}", case.dir.join("image.yml").display()))?;
    let yaml_dir = image_yml.parent().unwrap_or(&case.dir).to_path_buf();
    let yaml = fs::read_to_string(&image_yml)
        .map_err(|e| format!("reading {}: {e}", image_yml.display()))?;
    build_packages(paths, berth, &yaml_dir, &yaml, !case.media.is_empty())?;
    let read = |name: &str| case.read(name);
    let format = read("format")?.map_or("kernel+initrd".to_string(), |f| f.trim().to_string());
    if !["kernel+initrd", "kernel+squashfs"].contains(&format.as_str()) {
        return Err(format!(
            "{}: format {format:?} is not one the harness boots",
            case.dir.display()
        ));
    }
    for line in read("random")?.unwrap_or_default().lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        write_random(&places.home, line)
            .map_err(|e| format!("{}: {e}", case.dir.join("random").display()))?;
    }

    // Build.
    let name = &case.name;
    let mut command = Command::new(berth);
    // The fixture images exist only in the local cache.
    command.env("BERTH_OFFLINE", "1").env("HOME", &places.home);
    command.args(["build", "-f", &format]);
    let mut formats: Vec<&str> = case
        .media
        .iter()
        .filter_map(|b| match b.artifact {
            Artifact::Build => None,
            // The UKI, for UEFI network boots.
            Artifact::Pxe => Some("uki"),
            other => Some(other.format()),
        })
        .collect();
    formats.sort();
    formats.dedup();
    for format in formats {
        command.args(["-f", format]);
    }
    command
        .arg("-o")
        .arg(&out)
        .arg("--cache")
        .arg(paths.fixtures_cache())
        .args(["--name", name])
        .arg(&image_yml)
        .current_dir(&case.dir);
    let shown = qemu::shell_line(&command);
    let output = qemu::output_with_timeout(&mut command, BUILD_TIMEOUT).map_err(chain)?;
    let log = results.join("berth-build.log");
    let _ = fs::write(
        &log,
        [
            shown.as_bytes(),
            b"\n",
            output.stdout.as_slice(),
            output.stderr.as_slice(),
        ]
        .concat(),
    );
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    let kernel = out.join(format!("{name}-kernel"));
    let initrd_image = out.join(format!("{name}-initrd.img"));
    let cmdline_file = out.join(format!("{name}-cmdline"));
    let mut artifacts = vec![kernel.clone(), initrd_image.clone(), cmdline_file.clone()];
    artifacts.extend(case.media.iter().map(|b| out.join(b.artifact.file(name))));
    for artifact in &artifacts {
        if !artifact.is_file() {
            return Err(format!("{shown} wrote no {}", artifact.display()));
        }
    }
    for artifact in [&kernel, &initrd_image] {
        if fs::metadata(artifact).map_or(0, |m| m.len()) == 0 {
            return Err(format!("{shown} wrote an empty {}", artifact.display()));
        }
    }
    // A case's `append/` tree goes on as a second archive, replacing
    // files of the first (a bundle broken on purpose).
    let extra = case.dir.join("append");
    if extra.is_dir() {
        initrd::append(&initrd_image, &extra).map_err(|e| format!("{e:#}"))?;
    }
    // Inspect. A failed check does not stop the boot: both verdicts
    // together say more about what went wrong.
    let inspection = if checks.is_empty() {
        Ok(())
    } else {
        initrd::inspect(&initrd_image, checks, &paths.workspace).map_err(|e| format!("{e:#}"))
    };
    let cmdline = fs::read_to_string(&cmdline_file)
        .map_err(|e| format!("reading {}: {e}", cmdline_file.display()))?;
    let squashfs = match format.as_str() {
        "kernel+squashfs" => {
            let image = out.join(format!("{name}-squashfs.img"));
            if !image.is_file() {
                return Err(format!("{shown} wrote no {}", image.display()));
            }
            Some(image)
        }
        _ => None,
    };
    Ok(Built {
        out,
        kernel,
        initrd: initrd_image,
        cmdline: cmdline.trim().to_string(),
        squashfs,
        inspection,
    })
}
