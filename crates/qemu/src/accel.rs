//! The accelerator: KVM when it works, TCG (software emulation) otherwise.
//! `/dev/kvm` existing proves nothing: on some hosts KVM hangs a Linux
//! boot, so it is used only once a trivial guest ([`crate::guest`]) has run
//! under it, quickly, within a short timeout.
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

/// The accelerator to boot with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// KVM if [`probe`] proves it runs a guest, and fast; TCG otherwise. Each
/// call probes again: a caller that starts many machines decides once.
pub fn choose_accel(qemu: &Path) -> AccelChoice {
    let (accel, reason) = match probe(qemu, Accel::Kvm, KVM_PROBE_TIMEOUT) {
        Ok(elapsed) if elapsed <= KVM_PROBE_HEALTHY => (
            Accel::Kvm,
            format!("KVM ran a trivial guest in {:.1} s", elapsed.as_secs_f64()),
        ),
        Ok(elapsed) => (
            Accel::Tcg,
            format!(
                "KVM is too slow here: a trivial guest took {:.1} s",
                elapsed.as_secs_f64()
            ),
        ),
        Err(error) => (
            Accel::Tcg,
            format!("KVM does not work here: {}", chain(&error)),
        ),
    };
    AccelChoice { accel, reason }
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
        let choice = choose_accel(&qemu);
        assert!(started.elapsed() < KVM_PROBE_TIMEOUT + Duration::from_secs(5));
        assert!(choice.reason.starts_with("KVM "), "{choice:?}");
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
        let choice = choose_accel(Path::new("/nonexistent/qemu-system-x86_64"));
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
