//! berth's one QEMU launcher, shared by the boot tests and `berth run qemu`:
//! a [`Machine`] describes a virtual machine (machine type, firmware,
//! accelerator, memory and CPUs, a kernel booted directly, disks and
//! CD-ROMs, network cards, the serial console on stdio, a monitor socket)
//! and [`Machine::args`] is the only place its QEMU command line is
//! written. Around it: the accelerator choice ([`choose_accel`]: KVM only
//! once a trivial guest, and the kernel to boot, have proven it works; TCG
//! otherwise), Debian's OVMF
//! files for UEFI boots ([`Ovmf`]), QEMU's human monitor ([`monitor`]),
//! the multiboot guests of a few bytes the probe runs ([`guest`]), and
//! running QEMU and the programs around it with deadlines ([`process`]).
//!
//! It deliberately knows nothing of berth's YAML, its artifacts or what a
//! boot should print: what to boot is the caller's, and watching a console
//! for expected lines, typing on it or keeping its transcript is the boot
//! tests' (`qemu-tests`). It starts QEMU; it does not decide what a
//! successful boot looks like.

mod accel;
mod firmware;
pub mod guest;
pub mod identify;
mod machine;
pub mod monitor;
pub mod process;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use accel::{
    Accel, AccelChoice, KVM_PROBE_HEALTHY, KVM_PROBE_TIMEOUT, LINUX_PROBE_TIMEOUT, choose_accel,
    probe, probe_linux,
};
pub use firmware::{Firmware, Ovmf};
pub use machine::{
    Drive, Format, GuestForward, Interface, Kernel, Machine, MachineType, Media, NetBackend, Nic,
    NicModel, PortForward, Protocol,
};
pub use process::{find_program, output_with_timeout, shell_line, wait_timeout};

/// The QEMU program berth runs: x86-64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// [`QEMU`] on `PATH`.
pub fn locate() -> Result<PathBuf, Error> {
    find_program(QEMU).ok_or(Error::NotInstalled { program: QEMU })
}

/// What went wrong launching or talking to QEMU; each error names what it
/// was working on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{program} is not installed: no executable of that name on PATH")]
    NotInstalled { program: &'static str },
    #[error("UEFI firmware file {} is missing: Debian's ovmf package installs it", path.display())]
    FirmwareMissing { path: PathBuf },
    #[error("copying the UEFI variable store {} to {}", from.display(), to.display())]
    FirmwareCopy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "UEFI variable store {} has {size} bytes, not the {expected} of OVMF's template: remove it for a fresh one",
        path.display()
    )]
    FirmwareVars {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("starting {command}")]
    Start {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {command}")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} did not finish in {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("writing the probe guest into {}", path.display())]
    ProbeImage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a trivial {accel} guest did not finish in {timeout:?}")]
    ProbeTimeout { accel: Accel, timeout: Duration },
    #[error("a trivial {accel} guest did not exit as planned: qemu {status}: {stderr}")]
    ProbeFailed {
        accel: Accel,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{} did not boot under {accel} within {timeout:?}", kernel.display())]
    LinuxProbeTimeout {
        accel: Accel,
        kernel: PathBuf,
        timeout: Duration,
    },
    #[error("{} did not boot to its end under {accel}: qemu {status}, last console lines: {console}", kernel.display())]
    LinuxProbeFailed {
        accel: Accel,
        kernel: PathBuf,
        status: ExitStatus,
        console: String,
    },
    #[error("connecting to the QEMU monitor at {}", socket.display())]
    MonitorConnect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sending {command:?} to the QEMU monitor at {}", socket.display())]
    MonitorSend {
        socket: PathBuf,
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{0:?} is not an accelerator: kvm or tcg")]
    UnknownAccel(String),
}

/// `error` and its sources, `: `-separated, for messages that are not
/// printed by a caller's own error chain.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// QEMU, or `None` and a visible skip; in CI (`CI=true`) a missing QEMU
    /// is a failure, so a broken runner cannot turn the suite green.
    pub(crate) fn qemu_or_skip() -> Option<PathBuf> {
        let qemu = super::locate();
        if let Err(error) = &qemu {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{error}, and CI=true makes a skip a failure"
            );
            eprintln!("skipped: {error}");
        }
        qemu.ok()
    }
}
