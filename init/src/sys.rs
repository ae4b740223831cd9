//! The one module of the workspace where `unsafe` is allowed: system calls
//! that neither rustix nor libcontainer wraps, each behind a safe function
//! that owns what the kernel reads.
#![allow(unsafe_code)]

use crate::seccomp::Filter;

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
