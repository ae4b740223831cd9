//! The firmware a machine starts: QEMU's own SeaBIOS (BIOS), or OVMF
//! (UEFI) from Debian's `ovmf` package, in two flash chips as Debian ships
//! it: the code read-only, and a variable store the machine may write,
//! which is therefore the machine's own copy of Debian's template.
//!
//! Installing firmware is not this module's business: a missing file is an
//! error that names it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::machine::option_value;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default: no arguments at all.
    #[default]
    Bios,
    Uefi(Ovmf),
    /// One firmware image of the caller's, loaded as QEMU's BIOS (`-bios`):
    /// e.g. a combined `OVMF.fd`, whose variables do not persist.
    Image(PathBuf),
}

/// OVMF's two flash images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovmf {
    /// The firmware code, mapped read-only.
    pub code: PathBuf,
    /// The machine's UEFI variable store (boot entries and the like),
    /// written by the guest.
    pub vars: PathBuf,
}

impl Ovmf {
    /// Where Debian's `ovmf` package installs its files.
    pub const DEBIAN_DIR: &str = "/usr/share/OVMF";
    /// The 4 MiB builds: Debian's current layout, without Secure Boot keys.
    pub const CODE: &str = "OVMF_CODE_4M.fd";
    pub const VARS_TEMPLATE: &str = "OVMF_VARS_4M.fd";

    /// Debian's OVMF, with the machine's variable store at `vars`.
    pub fn debian(vars: &Path) -> Result<Ovmf, Error> {
        Ovmf::from_dir(Path::new(Ovmf::DEBIAN_DIR), vars)
    }

    /// OVMF from `dir`, with the machine's variable store at `vars`: copied
    /// from the template in `dir` unless `vars` exists already, in which
    /// case it is that machine's saved state and is kept.
    pub fn from_dir(dir: &Path, vars: &Path) -> Result<Ovmf, Error> {
        let code = dir.join(Ovmf::CODE);
        let template = dir.join(Ovmf::VARS_TEMPLATE);
        for file in [&code, &template] {
            if !file.is_file() {
                return Err(Error::FirmwareMissing { path: file.clone() });
            }
        }
        let copy_error = |source| Error::FirmwareCopy {
            from: template.clone(),
            to: vars.to_path_buf(),
            source,
        };
        let template_size = fs::metadata(&template).map_err(copy_error)?.len();
        match fs::metadata(vars) {
            // A machine's saved variables: kept, if they can be.
            Ok(saved) if saved.len() == template_size => {}
            Ok(saved) => {
                return Err(Error::FirmwareVars {
                    path: vars.to_path_buf(),
                    size: saved.len(),
                    expected: template_size,
                });
            }
            // Copied under a temporary name and renamed: an interrupted
            // copy leaves no store of the wrong size behind.
            Err(_) => {
                let dir = vars
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let copy = tempfile::NamedTempFile::new_in(dir).map_err(copy_error)?;
                fs::copy(&template, copy.path()).map_err(copy_error)?;
                copy.persist(vars).map_err(|e| copy_error(e.error))?;
            }
        }
        Ok(Ovmf {
            code,
            vars: vars.to_path_buf(),
        })
    }
}

impl Firmware {
    pub(crate) fn args(&self) -> Vec<OsString> {
        match self {
            Firmware::Bios => Vec::new(),
            Firmware::Image(file) => vec!["-bios".into(), file.clone().into_os_string()],
            Firmware::Uefi(ovmf) => {
                let flash = |unit: &str, writable: &str, file: &Path| {
                    let mut value =
                        OsString::from(format!("if=pflash,format=raw,unit={unit}{writable},file="));
                    value.push(option_value(file));
                    ["-drive".into(), value]
                };
                let mut args = flash("0", ",readonly=on", &ovmf.code).to_vec();
                args.extend(flash("1", "", &ovmf.vars));
                args
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("vars.fd");
        let error = Ovmf::from_dir(dir.path(), &vars).unwrap_err();
        let missing = dir.path().join("OVMF_CODE_4M.fd");
        assert_eq!(
            error.to_string(),
            format!(
                "UEFI firmware file {} is missing: Debian's ovmf package installs it",
                missing.display()
            )
        );

        fs::write(&missing, b"code").unwrap();
        let error = Ovmf::from_dir(dir.path(), &vars).unwrap_err();
        assert!(
            matches!(&error, Error::FirmwareMissing { path } if path.ends_with("OVMF_VARS_4M.fd")),
            "{error:?}"
        );
        assert!(!vars.exists());
    }

    #[test]
    fn the_variable_store_is_the_machines_own_copy() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(Ovmf::CODE), b"code").unwrap();
        fs::write(dir.path().join(Ovmf::VARS_TEMPLATE), b"template").unwrap();
        let vars = dir.path().join("machine-vars.fd");
        let ovmf = Ovmf::from_dir(dir.path(), &vars).unwrap();
        assert_eq!(ovmf.code, dir.path().join(Ovmf::CODE));
        assert_eq!(ovmf.vars, vars);
        assert_eq!(fs::read(&vars).unwrap(), b"template");

        // A second start of the same machine keeps what the guest wrote.
        fs::write(&vars, b"by guest").unwrap();
        Ovmf::from_dir(dir.path(), &vars).unwrap();
        assert_eq!(fs::read(&vars).unwrap(), b"by guest");

        // A store of another size (a truncated copy) is refused, named,
        // and left for the user to remove.
        fs::write(&vars, b"").unwrap();
        let error = Ovmf::from_dir(dir.path(), &vars).unwrap_err();
        assert!(
            matches!(&error, Error::FirmwareVars { path, size: 0, expected: 8 } if path == &vars),
            "{error:?}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no scratch file left"
        );
    }

    /// Debian's OVMF, as the machine description passes it, starts: its
    /// boot manager reports on the serial console (in about 6 s under TCG).
    #[test]
    fn uefi_firmware_starts() {
        use std::io::Read;
        use std::process::Stdio;
        use std::sync::mpsc;
        use std::time::{Duration, Instant};

        use crate::{Accel, Machine};

        let Some(qemu) = crate::tests::qemu_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ovmf = match Ovmf::debian(&dir.path().join("vars.fd")) {
            Ok(ovmf) => ovmf,
            Err(error) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{error}, and CI=true makes a skip a failure"
                );
                eprintln!("skipped: {error}");
                return;
            }
        };
        let machine = Machine {
            memory_mib: 256,
            defaults: false,
            ..Machine::new(&qemu, Accel::Tcg).firmware(Firmware::Uefi(ovmf))
        };
        let mut child = machine
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if tx.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut serial = Vec::new();
        while !String::from_utf8_lossy(&serial).contains("BdsDxe") {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(bytes) => serial.extend(bytes),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            String::from_utf8_lossy(&serial).contains("BdsDxe"),
            "{}\nserial console:\n{}",
            machine.command_line(),
            String::from_utf8_lossy(&serial)
        );
    }
}
