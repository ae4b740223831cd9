//! The accelerator: KVM when it works, TCG (software emulation) otherwise.
//! `/dev/kvm` existing proves nothing: on some hosts KVM hangs a Linux
//! boot, so it is used only once a trivial guest ([`crate::guest`]) has run
//! under it, quickly, within a short timeout.
//!
//! A fast trivial guest is not enough either: some hosts run it under KVM
//! in a fraction of a second and then hang every Linux boot right after
//! "Probing EDD". So when the caller has the kernel it will boot, that
//! kernel is booted under KVM too ([`probe_linux`]), to its panic for want
//! of a root file system, before KVM is chosen.
//!
//! Whether a user may override the choice (an option, an environment
//! variable) is the caller's decision: [`Accel`] parses from `kvm`/`tcg`.

use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::machine::{Kernel, Machine};
use crate::{Error, chain, guest, output_with_timeout};

/// QEMU's accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Accel {
    type Err = Error;

    fn from_str(text: &str) -> Result<Accel, Error> {
        match text {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(Error::UnknownAccel(text.to_string())),
        }
    }
}

/// How long the KVM probe may take before it is killed.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the KVM probe may take for KVM to be used. A working KVM runs
/// the probe (firmware included) in well under a second. The broken KVM of
/// the development machines finishes it too, but in 4 to 6 s of kernel
/// time, and then hangs a Linux boot at "Probing EDD": finishing is not
/// enough, finishing fast is the sign of health.
pub const KVM_PROBE_HEALTHY: Duration = Duration::from_secs(2);

/// How long Linux may take under KVM to boot to its panic (no root file
/// system): a working KVM takes a second or two.
pub const LINUX_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a kernel prints when it has run its whole boot and found no root
/// file system: proof that the accelerator carried it through.
const LINUX_PROBE_END: &str = "Kernel panic - not syncing";

/// The accelerator to boot with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// KVM if [`probe`] proves it runs a guest, and fast, and, when `linux` (a
/// kernel image) is given, [`probe_linux`] proves it boots that kernel; TCG
/// otherwise. Each call probes again: a caller that starts many machines
/// decides once.
pub fn choose_accel(qemu: &Path, linux: Option<&Path>) -> AccelChoice {
    let trivial = match probe(qemu, Accel::Kvm, KVM_PROBE_TIMEOUT) {
        Ok(elapsed) if elapsed <= KVM_PROBE_HEALTHY => elapsed,
        Ok(elapsed) => {
            return AccelChoice::tcg(format!(
                "KVM is too slow here: a trivial guest took {:.1} s",
                elapsed.as_secs_f64()
            ));
        }
        Err(error) => {
            return AccelChoice::tcg(format!("KVM does not work here: {}", chain(&error)));
        }
    };
    let trivial = format!("KVM ran a trivial guest in {:.1} s", trivial.as_secs_f64());
    let Some(kernel) = linux else {
        return AccelChoice {
            accel: Accel::Kvm,
            reason: trivial,
        };
    };
    match probe_linux(qemu, Accel::Kvm, kernel, LINUX_PROBE_TIMEOUT) {
        Ok(elapsed) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "{trivial} and booted {} in {:.1} s",
                kernel.display(),
                elapsed.as_secs_f64()
            ),
        },
        Err(error) => AccelChoice::tcg(format!("{trivial}, but {}", chain(&error))),
    }
}

impl AccelChoice {
    fn tcg(reason: String) -> AccelChoice {
        AccelChoice {
            accel: Accel::Tcg,
            reason,
        }
    }
}

/// Boots `kernel` alone (no initrd, no devices) with `accel` and fails
/// unless it runs its whole boot, to the panic for want of a root file
/// system, within `timeout`; returns how long it took.
pub fn probe_linux(
    qemu: &Path,
    accel: Accel,
    kernel: &Path,
    timeout: Duration,
) -> Result<Duration, Error> {
    let machine = Machine {
        memory_mib: 256,
        defaults: false,
        // Linux never writes to it; a guest that is not Linux may exit by it.
        debug_exit: true,
        ..Machine::new(qemu, accel).kernel(Kernel::new(kernel, "console=ttyS0 panic=-1"))
    };
    let started = Instant::now();
    let output = match output_with_timeout(&mut machine.command(), timeout) {
        Err(Error::Timeout { .. }) => {
            return Err(Error::LinuxProbeTimeout {
                accel,
                kernel: kernel.to_path_buf(),
                timeout,
            });
        }
        output => output?,
    };
    let elapsed = started.elapsed();
    let console = String::from_utf8_lossy(&output.stdout);
    if console.contains(LINUX_PROBE_END) {
        Ok(elapsed)
    } else {
        Err(Error::LinuxProbeFailed {
            accel,
            kernel: kernel.to_path_buf(),
            status: output.status,
            console: console
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | "),
        })
    }
}

/// Runs a trivial guest with `accel` and fails unless it exits as planned
/// within `timeout`; returns how long it took.
pub fn probe(qemu: &Path, accel: Accel, timeout: Duration) -> Result<Duration, Error> {
    let dir = tempfile::tempdir().map_err(|source| Error::ProbeImage {
        path: std::env::temp_dir(),
        source,
    })?;
    let image = dir.path().join("probe.bin");
    fs::write(&image, guest::image(b"", true)).map_err(|source| Error::ProbeImage {
        path: dir.path().to_path_buf(),
        source,
    })?;
    // Nothing but the exit port: no option ROMs to run before the guest.
    let machine = Machine {
        memory_mib: 64,
        defaults: false,
        debug_exit: true,
        ..Machine::new(qemu, accel).kernel(Kernel::new(&image, ""))
    };
    let started = Instant::now();
    let output = match output_with_timeout(&mut machine.command(), timeout) {
        Err(Error::Timeout { .. }) => return Err(Error::ProbeTimeout { accel, timeout }),
        output => output?,
    };
    let elapsed = started.elapsed();
    if output.status.code() == Some(guest::EXIT_STATUS) {
        Ok(elapsed)
    } else {
        Err(Error::ProbeFailed {
            accel,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_parse_from_their_names() {
        for accel in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(accel.name().parse::<Accel>().unwrap(), accel);
            assert_eq!(accel.to_string(), accel.name());
        }
        assert_eq!(
            "hvf".parse::<Accel>().unwrap_err().to_string(),
            "\"hvf\" is not an accelerator: kvm or tcg"
        );
    }

    /// The probe guest itself works: under TCG it must exit as planned, so a
    /// failed KVM probe means KVM, not the probe.
    #[test]
    fn probe_guest_runs_under_tcg() {
        let Some(qemu) = crate::tests::qemu_or_skip() else {
            return;
        };
        probe(&qemu, Accel::Tcg, Duration::from_secs(30)).unwrap();
    }

    /// Whatever KVM does here, the choice is made within the probe's
    /// timeout and says why.
    #[test]
    fn the_choice_is_explained() {
        let Some(qemu) = crate::tests::qemu_or_skip() else {
            return;
        };
        let started = Instant::now();
        let choice = choose_accel(&qemu, None);
        assert!(started.elapsed() < KVM_PROBE_TIMEOUT + Duration::from_secs(5));
        assert!(choice.reason.starts_with("KVM "), "{choice:?}");
    }

    /// A guest that exits without Linux's panic did not boot Linux: the
    /// probe fails and shows what the guest printed.
    #[test]
    fn a_guest_that_is_not_linux_fails_the_linux_probe() {
        let Some(qemu) = crate::tests::qemu_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("not-linux.bin");
        fs::write(&image, guest::image(b"hello\n", true)).unwrap();
        let error = probe_linux(&qemu, Accel::Tcg, &image, Duration::from_secs(30)).unwrap_err();
        match &error {
            Error::LinuxProbeFailed { console, .. } => {
                assert!(console.ends_with("hello"), "{console}")
            }
            _ => panic!("{error:?}"),
        }
    }

    #[test]
    fn a_missing_qemu_is_a_failed_probe() {
        let error = probe(
            Path::new("/nonexistent/qemu-system-x86_64"),
            Accel::Kvm,
            KVM_PROBE_TIMEOUT,
        )
        .unwrap_err();
        assert!(matches!(error, Error::Start { .. }), "{error:?}");
        let choice = choose_accel(Path::new("/nonexistent/qemu-system-x86_64"), None);
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(
            choice.reason.starts_with(
                "KVM does not work here: starting /nonexistent/qemu-system-x86_64 -machine q35 -accel kvm"
            ) && choice.reason.ends_with("No such file or directory (os error 2)"),
            "{}",
            choice.reason
        );
    }
}
