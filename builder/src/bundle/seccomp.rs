//! The seccomp profile of an entry's `config.json` (`linux.seccomp`).
//!
//! A profile is written in Docker's format (`seccomp: FILE` in the YAML,
//! or berth's default, which allows what Docker's and containerd's
//! default allows) and turned into the OCI form for x86_64 here, at build
//! time, as dockerd turns it for runc: the parts that depend on a
//! capability are kept when the entry's bounding set has it, those for
//! other architectures are dropped. An entry given every capability gets
//! no profile, as Docker's `--privileged`; `seccomp: unconfined` opts out.
//!
//! The builder decides rather than init because the profile depends on
//! the definition (capabilities, a file beside the YAML): `config.json`
//! stays a complete OCI bundle that says what is enforced, which any
//! runtime (runc, or berth's init, which compiles it to BPF) enforces the
//! same way, and a bad profile fails the build, not the boot.

use std::collections::BTreeSet;

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompArg};
use serde::Deserialize;
use serde_json::{Value, json};

/// Docker's architecture name for x86_64, as its profiles' `arches` say.
const ARCH: &str = "amd64";

/// A profile in Docker's JSON format (moby's `profiles/seccomp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub syscalls: Option<Vec<Syscall>>,
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub includes: Filter,
    #[serde(default)]
    pub excludes: Filter,
}

/// When a rule applies (`includes`) or not (`excludes`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    /// berth's kernels are all newer than any `minKernel` of Docker's
    /// profile (4.8), so it is read and not checked.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// Reads a profile file's text; the error names the key that is wrong.
pub fn parse(text: &str) -> Result<Profile, String> {
    let mut json = serde_json::Deserializer::from_str(text);
    let profile: Profile = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => e.inner().to_string(),
            _ => format!("{path}: {}", e.inner()),
        }
    })?;
    check(&profile)?;
    Ok(profile)
}

/// What init could not enforce, refused at build time.
fn check(profile: &Profile) -> Result<(), String> {
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    if notify(profile.default_action)
        || profile.listener_path.is_some()
        || profile.syscalls.iter().flatten().any(|s| notify(s.action))
    {
        return Err(
            "SCMP_ACT_NOTIFY and listenerPath need a seccomp agent, which berth does not run"
                .into(),
        );
    }
    if profile.architectures.is_some() && profile.arch_map.is_some() {
        return Err("architectures and archMap cannot both be set".into());
    }
    for (i, syscall) in profile.syscalls.iter().flatten().enumerate() {
        if syscall.name.is_some() && syscall.names.is_some() {
            return Err(format!("syscalls[{i}]: set either name or names"));
        }
        if let Some(arg) = syscall.args.iter().flatten().find(|a| a.index() > 5) {
            return Err(format!(
                "syscalls[{i}]: argument index {} is out of range (0 to 5)",
                arg.index()
            ));
        }
        if syscall.errno_ret.is_some_and(|e| e > 0xffff) {
            return Err(format!(
                "syscalls[{i}]: errnoRet is out of range (at most 65535)"
            ));
        }
        for filter in [&syscall.includes, &syscall.excludes] {
            if let Some(cap) = filter
                .caps
                .iter()
                .flatten()
                .find(|c| crate::spec::values::capability(c).is_none())
            {
                return Err(format!("syscalls[{i}]: unknown capability {cap:?}"));
            }
        }
    }
    for flag in profile.flags.iter().flatten() {
        if ![
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ]
        .contains(&flag.as_str())
        {
            return Err(format!(
                "flags: {flag:?} is not a flag berth can load a filter with"
            ));
        }
    }
    Ok(())
}

/// `profile` in the OCI form for an x86_64 process whose bounding set is
/// `capabilities`.
pub fn to_oci(profile: &Profile, capabilities: &BTreeSet<&str>) -> Value {
    let has = |c: &String| capabilities.contains(c.as_str());
    let mut syscalls = Vec::new();
    for syscall in profile.syscalls.iter().flatten() {
        let (inc, exc) = (&syscall.includes, &syscall.excludes);
        let skip = exc.arches.iter().flatten().any(|a| a == ARCH)
            || exc.caps.iter().flatten().any(has)
            || inc
                .arches
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.iter().any(|a| a == ARCH))
            || !inc.caps.iter().flatten().all(has);
        if skip {
            continue;
        }
        let names: Vec<&String> = syscall
            .name
            .iter()
            .chain(syscall.names.iter().flatten())
            .collect();
        syscalls.push(json!({
            "names": names,
            "action": syscall.action,
            "errnoRet": syscall.errno_ret,
            "args": syscall.args,
        }));
    }
    let architectures: Vec<String> = match (&profile.architectures, &profile.arch_map) {
        (Some(list), _) => list.clone(),
        (None, Some(map)) => map
            .iter()
            .filter(|m| m.architecture == "SCMP_ARCH_X86_64")
            .flat_map(|m| {
                std::iter::once(&m.architecture).chain(m.sub_architectures.iter().flatten())
            })
            .cloned()
            .collect(),
        (None, None) => Vec::new(),
    };
    json!({
        "defaultAction": profile.default_action,
        "defaultErrnoRet": profile.default_errno_ret,
        "architectures": architectures,
        "flags": profile.flags,
        "syscalls": syscalls,
    })
}

/// The calls berth's default profile allows to every container: the same
/// as Docker's and containerd's default (moby `profiles/seccomp/default.json`),
/// x86_64's share of it, grouped by what they are for.
const ALLOWED: &[&str] = &[
    // Files and directories.
    "access chdir chmod chown close close_range copy_file_range creat dup dup2 dup3 faccessat faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchmodat2 fchown fchownat fcntl fdatasync flock fstat fstatfs fsync ftruncate futimesat getcwd getdents getdents64 lchown link linkat lseek lstat mkdir mkdirat mknod mknodat name_to_handle_at newfstatat open openat openat2 read readahead readlink readlinkat readv pread64 preadv preadv2 pwrite64 pwritev pwritev2 rename renameat renameat2 rmdir sendfile splice stat statfs statx symlink symlinkat sync sync_file_range syncfs tee truncate umask unlink unlinkat utime utimensat utimes vmsplice write writev",
    // Extended attributes and notifications.
    "fgetxattr flistxattr fremovexattr fsetxattr getxattr lgetxattr listxattr llistxattr lremovexattr lsetxattr removexattr setxattr fanotify_mark inotify_add_watch inotify_init inotify_init1 inotify_rm_watch",
    // Asynchronous and multiplexed I/O.
    "epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 io_cancel io_destroy io_getevents io_pgetevents io_setup io_submit ioctl pipe pipe2 poll ppoll pselect6 select",
    // Memory.
    "brk madvise membarrier memfd_create memfd_secret mincore mlock mlock2 mlockall mmap mprotect mremap msync munlock munlockall munmap pkey_alloc pkey_free pkey_mprotect remap_file_pages",
    // Processes, threads, identity, limits and scheduling.
    "arch_prctl capget capset execve execveat exit exit_group fork getcpu getegid getrandom geteuid getgid getgroups getpgid getpgrp getpid getppid getpriority getresgid getresuid getrlimit get_robust_list getrusage getsid get_thread_area gettid getuid ioprio_get ioprio_set kill landlock_add_rule landlock_create_ruleset landlock_restrict_self modify_ldt pidfd_open pidfd_send_signal prctl prlimit64 process_mrelease restart_syscall rseq sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp setfsgid setfsuid setgid setgroups setpgid setpriority setregid setresgid setresuid setreuid setrlimit set_robust_list setsid set_thread_area set_tid_address setuid sysinfo tgkill tkill uname vfork wait4 waitid",
    // Signals.
    "pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sigaltstack signalfd signalfd4",
    // Time and timers.
    "adjtimex alarm clock_adjtime clock_getres clock_gettime clock_nanosleep getitimer gettimeofday nanosleep setitimer time timer_create timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime times",
    // Futexes, System V and POSIX IPC.
    "futex futex_waitv mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop shmat shmctl shmdt shmget",
    // Sockets (`socket` itself has its own rule).
    "accept accept4 bind connect getpeername getsockname getsockopt listen recvfrom recvmmsg recvmsg sendmmsg sendmsg sendto setsockopt shutdown socketpair",
    // Docker's minKernel 4.8 rule: tracing one's own processes.
    "ptrace process_vm_readv process_vm_writev",
];

/// Calls allowed when the bounding set has a capability.
const WITH_CAPABILITY: &[(&str, &str)] = &[
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module"),
    ("CAP_SYS_PACCT", "acct"),
    ("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday clock_settime"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    ),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
];

/// The `clone` flags that make namespaces (`CLONE_NEWNS`, `NEWCGROUP`,
/// `NEWUTS`, `NEWIPC`, `NEWUSER`, `NEWPID`, `NEWNET`): without
/// `CAP_SYS_ADMIN`, `clone` is allowed only without them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `AF_VSOCK`: the one socket family Docker's default refuses.
const AF_VSOCK: u64 = 40;
/// The `personality` values Docker's default allows: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `UNAME26|PER_LINUX32`, and the query.
const PERSONALITIES: &[u64] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// berth's default profile, in Docker's format.
pub fn default_profile() -> Profile {
    let names = |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };
    let mut syscalls = vec![json!({
        "names": ALLOWED.iter().flat_map(|group| names(group)).collect::<Vec<_>>(),
        "action": "SCMP_ACT_ALLOW",
    })];
    // The kernel reads `socket`'s family as an int: a family whose low
    // word is `AF_VSOCK` is refused first, whatever its high word, which
    // Docker's one comparison of all 64 bits lets through.
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
        "args": [{"index": 0, "value": 0xffff_ffff_u64, "valueTwo": AF_VSOCK, "op": "SCMP_CMP_MASKED_EQ"}]}));
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]}));
    for value in PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}));
    }
    for (capability, list) in WITH_CAPABILITY {
        syscalls.push(json!({"names": names(list), "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": [capability]}}));
    }
    syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
        "excludes": {"caps": ["CAP_SYS_ADMIN"]}}));
    // glibc falls back to clone when clone3 says it does not exist; clone3's
    // flags are in memory, where a filter cannot look.
    syscalls.push(
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
        "excludes": {"caps": ["CAP_SYS_ADMIN"]}}),
    );
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": syscalls,
    });
    serde_json::from_value(profile).expect("the default profile is well-formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&'static str]) -> BTreeSet<&'static str> {
        list.iter().copied().collect()
    }

    fn allowed(oci: &Value, name: &str) -> Vec<Value> {
        oci["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["names"].as_array().unwrap().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    #[test]
    fn the_default_depends_on_capabilities() {
        let profile = default_profile();
        let plain = to_oci(&profile, &caps(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]));
        assert!(allowed(&plain, "unshare").is_empty());
        assert!(allowed(&plain, "mount").is_empty());
        assert!(allowed(&plain, "reboot").is_empty());
        assert_eq!(
            allowed(&plain, "clone")[0]["args"][0]["op"],
            "SCMP_CMP_MASKED_EQ"
        );
        assert_eq!(allowed(&plain, "clone3")[0]["errnoRet"], 38);
        assert_eq!(allowed(&plain, "read")[0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(allowed(&plain, "getrandom")[0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(allowed(&plain, "personality").len(), 5);
        assert_eq!(
            plain["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );

        let admin = to_oci(&profile, &caps(&["CAP_SYS_ADMIN", "CAP_SYS_BOOT"]));
        assert_eq!(allowed(&admin, "unshare").len(), 1);
        assert_eq!(allowed(&admin, "reboot").len(), 1);
        // clone and clone3 unconditionally, not the rules without SYS_ADMIN.
        assert!(allowed(&admin, "clone").iter().all(|r| r["args"].is_null()));
        assert!(
            allowed(&admin, "clone3")
                .iter()
                .all(|r| r["action"] == "SCMP_ACT_ALLOW")
        );
    }

    #[test]
    fn arch_rules_of_other_architectures_are_left_out() {
        let profile = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
                {"name": "b", "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["amd64"]}},
                {"names": ["c"], "action": "SCMP_ACT_ERRNO", "excludes": {"arches": ["amd64"]}}]}"#,
        )
        .unwrap();
        let oci = to_oci(&profile, &caps(&[]));
        assert_eq!(
            oci["syscalls"],
            json!([{"names": ["b"], "action": "SCMP_ACT_ERRNO", "errnoRet": null, "args": null}])
        );
    }

    #[test]
    fn a_bad_profile_names_what_is_wrong() {
        for (text, expected) in [
            (
                r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
                "defaultAction: unknown variant `SCMP_ACT_NOPE`",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}"#,
                "unknown field `syscals`",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
                "need a seccomp agent",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_NOPE"]}}]}"#,
                "syscalls[0]: unknown capability \"CAP_NOPE\"",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0]: argument index 6 is out of range",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
