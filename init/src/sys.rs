//! The one module of the workspace where `unsafe` is allowed: the system
//! calls that neither rustix nor libcontainer wraps, each behind a safe
//! function that owns what the kernel reads. Today those are `bpf(2)`, to
//! load the device program of [`crate::devices`] and attach it to a
//! container's cgroup, and `seccomp(2)`, to load the filter of
//! [`crate::seccomp`]. Each `unsafe` block says why it is sound; nothing
//! `unsafe` leaves this module.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::devices::Insn;
use crate::seccomp::Filter;

// linux/bpf.h
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs on the cgroup and its parents run too; every one must
/// allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const LICENSE: &[u8] = b"Apache-2.0\0";

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program. The verifier's last
/// words come with a refusal.
pub fn load_device_program(program: &[Insn]) -> Result<OwnedFd, String> {
    // The verifier gives up with EAGAIN when a signal arrives while it
    // works, as SIGCHLD does whenever a container ends; libbpf tries again
    // too.
    let mut tries = 0;
    let loaded = loop {
        match load(program, None) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 10 => tries += 1,
            loaded => break loaded,
        }
    };
    loaded.map_err(|e| {
        let mut log = vec![0u8; 1 << 16];
        let _ = load(program, Some(&mut log));
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0');
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.len().saturating_sub(2);
        let last = lines.get(last..).unwrap_or_default().join("; ");
        match last.is_empty() {
            true => format!("loading the device program: {e}"),
            false => format!("loading the device program: {e} ({last})"),
        }
    })
}

fn load(program: &[Insn], log: Option<&mut [u8]>) -> std::io::Result<OwnedFd> {
    let count = u32::try_from(program.len()).map_err(|_| std::io::Error::other("too long"))?;
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"berth_devices");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: count,
        insns: program.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // SAFETY: `attr` is the kernel's `bpf_attr` layout for BPF_PROG_LOAD
    // (repr(C), no padding, its size passed), fully initialised. The
    // pointers in it are to `program` (`Insn` is `struct bpf_insn`,
    // `insn_cnt` of them), to the NUL-terminated `LICENSE`, and to `log`
    // with its length, all borrowed for the whole call; the kernel reads
    // the first two and writes at most `log_size` bytes into the third.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoad,
            std::mem::size_of::<ProgLoad>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("bad descriptor"))?;
    // SAFETY: on success BPF_PROG_LOAD returns a new descriptor of the
    // program, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches a loaded device program to the cgroup v2 directory `cgroup`:
/// from then on the kernel asks it about every device its processes open
/// or make, and those of the cgroups below it.
pub fn attach_device_program(program: BorrowedFd<'_>, cgroup: &Path) -> Result<(), String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", cgroup.display());
    let dir = rustix::fs::open(
        cgroup,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| named(&e))?;
    let fd = |fd: BorrowedFd<'_>| u32::try_from(fd.as_raw_fd()).map_err(|e| named(&e));
    let attr = ProgAttach {
        target_fd: fd(std::os::fd::AsFd::as_fd(&dir))?,
        attach_bpf_fd: fd(program)?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is the kernel's `bpf_attr` layout for BPF_PROG_ATTACH
    // (repr(C), five u32, its size passed), fully initialised, holding two
    // descriptors that stay open for the call; it has no pointers.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttach,
            std::mem::size_of::<ProgAttach>() as libc::c_uint,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(named(&format!(
            "attaching the device program: {}",
            std::io::Error::last_os_error()
        ))),
    }
}

/// `SECCOMP_SET_MODE_FILTER`, from `linux/seccomp.h`.
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;

/// Loads `filter` into the calling thread with `seccomp(2)`; the kernel
/// copies the program, so it need only live through the call. Without
/// `no_new_privs` the caller needs `CAP_SYS_ADMIN`.
pub fn load_seccomp_filter(filter: &Filter) -> std::io::Result<()> {
    let mut program: Vec<libc::sock_filter> = filter
        .program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `len` initialised `sock_filter`s in
    // `program`, which outlives the call; the kernel only reads them (and
    // copies them) during it, and keeps no pointer into our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            filter.flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use serde_json::json;

    use super::*;
    use crate::devices;

    fn program(rules: serde_json::Value) -> Vec<Insn> {
        let config = json!({"linux": {"resources": {"devices": rules}}});
        devices::program(&devices::rules(&config).unwrap()).unwrap()
    }

    /// The kernel's verifier takes the program, when this test may load
    /// programs (root, `bpf(2)` allowed); otherwise it says why it skips.
    fn loaded(rules: serde_json::Value) -> Option<OwnedFd> {
        match load_device_program(&program(rules)) {
            Ok(fd) => Some(fd),
            Err(e) if e.contains("Operation not permitted") || e.contains("not implemented") => {
                eprintln!("skipped: this kernel or user may not load BPF programs: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_kernel_verifies_the_device_programs() {
        for rules in [
            json!([]),
            json!([{"allow": true}]),
            json!([{"allow": false, "access": "rwm"}]),
            json!([{"allow": true, "type": "b", "major": 254, "minor": 0, "access": "rw"},
                   {"allow": false, "type": "c", "major": 5, "access": "w"}]),
        ] {
            let _ = loaded(rules);
        }
    }

    #[test]
    fn an_attached_program_confines_a_cgroup() {
        // cgroup v2 at its usual place, or beside v1 (systemd's hybrid).
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|p| rustix::fs::statfs(*p).is_ok_and(|s| s.f_type == 0x6367_7270));
        let Some(root) = root else {
            eprintln!("skipped: no cgroup v2 hierarchy mounted");
            return;
        };
        let Some(program) = loaded(json!([])) else {
            return;
        };
        let cgroup = root.join(format!("berth-devices-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&cgroup) {
            eprintln!("skipped: no cgroup v2 directory to make here: {e}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // /dev/kmsg's numbers, which the defaults do not allow.
        let node = dir.path().join("kmsg");
        let made = Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "11"])
            .status();
        // Reads a byte of the node and of /dev/null, in `cgroup` or not.
        let read = |inside: bool| {
            let join = match inside {
                true => format!("echo $$ > {}/cgroup.procs && ", cgroup.display()),
                false => String::new(),
            };
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{join}head -c 0 /dev/null && dd if={} bs=1 count=0 2>&1",
                    node.display()
                ))
                .output()
                .unwrap()
        };
        let result = (|| {
            if !made.is_ok_and(|s| s.success()) {
                return Err("skipped: mknod could not make a node".to_string());
            }
            let outside = read(false);
            if !outside.status.success() {
                return Err(format!(
                    "skipped: the node cannot be opened even outside: {}",
                    String::from_utf8_lossy(&outside.stdout)
                ));
            }
            attach_device_program(std::os::fd::AsFd::as_fd(&program), &cgroup)
                .map_err(|e| format!("failed: {e}"))?;
            let inside = read(true);
            let said = String::from_utf8_lossy(&inside.stdout).to_string();
            match !inside.status.success() && said.contains("Operation not permitted") {
                true => Ok(()),
                false => Err(format!("failed: the node was opened in the cgroup: {said}")),
            }
        })();
        let _ = std::fs::remove_dir(&cgroup);
        match result {
            Ok(()) => {}
            Err(e) if e.starts_with("skipped") => eprintln!("{e}"),
            Err(e) => panic!("{e}"),
        }
    }
}
