//! The vocabulary of LinuxKit's YAML: capabilities, rlimits, binds and
//! modes, parsed from the strings a definition writes them as.
//!
//! Validation uses these to report problems with their place; bundles,
//! packages and assembly use the same functions to turn the strings into
//! values, so a string that validates is one that builds. Nothing here
//! knows where a value was written; that is the caller's to add.

/// Linux capabilities by name (capability.h), in number order.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Resource limits by name (setrlimit(2)), as the OCI spec spells them.
pub const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// Normalises a capability as LinuxKit accepts it (`cap_sys_admin`,
/// `SYS_ADMIN`), or `None` if it names no capability.
pub fn capability(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES.iter().copied().find(|c| *c == full)
}

/// A parsed `rlimits` entry: `name,soft,hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

/// Parses `nofile,1024,4096` (names with or without `RLIMIT_`, any case;
/// `unlimited` or `-1` for no limit).
pub fn rlimit(text: &str) -> Result<Rlimit, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [name, soft, hard] = parts[..] else {
        return Err(format!("rlimit {text:?} is not of the form name,soft,hard"));
    };
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("RLIMIT_") {
        upper
    } else {
        format!("RLIMIT_{upper}")
    };
    let name = RLIMITS
        .iter()
        .copied()
        .find(|r| *r == full)
        .ok_or_else(|| format!("unknown rlimit {name:?}"))?;
    let number = |v: &str| -> Result<u64, String> {
        match v {
            _ if v.eq_ignore_ascii_case("unlimited") || v == "-1" => Ok(u64::MAX),
            _ => v
                .parse()
                .map_err(|_| format!("rlimit value {v:?} is not a number or \"unlimited\"")),
        }
    };
    let (soft, hard) = (number(soft)?, number(hard)?);
    if soft > hard {
        return Err(format!(
            "rlimit {name}: soft limit {soft} exceeds hard limit {hard}"
        ));
    }
    Ok(Rlimit { name, soft, hard })
}

/// A parsed bind: `src:dst[:opt,opt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub source: &'a str,
    pub destination: &'a str,
    pub options: Vec<&'a str>,
}

/// Checks a path that init or the runtime acts on at boot (a mount's
/// destination or source, `runtime.mkdir`, `bindNS`, a device node):
/// absolute, without `.` or `..` components or `//`, without NUL. A
/// trailing `/` is allowed, as LinuxKit's files write `/dev/:/dev`.
pub fn absolute_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must be absolute"));
    }
    clean_path(text)
}

/// Checks a path that init joins onto a directory of its own
/// (`runtime.cgroups` under `/sys/fs/cgroup`, `cgroupsPath`): relative or
/// absolute, but never leaving it.
pub fn clean_path(text: &str) -> Result<(), String> {
    text_without_nul(text)?;
    let inner = text.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(());
    }
    if inner
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "path {text:?} is not normalised (no `.` or `..` components, no `//`)"
        ));
    }
    Ok(())
}

/// Checks a container's `cgroupsPath`: a [`clean_path`] that names a
/// cgroup of its own. The root of the tree holds every process of the
/// host, and a device program attached there would confine them all.
pub fn cgroup_path(text: &str) -> Result<(), String> {
    clean_path(text)?;
    if !text.is_empty() && text.trim_matches('/').is_empty() {
        return Err(format!(
            "path {text:?} is the root of the cgroup tree, which holds every process of the host"
        ));
    }
    Ok(())
}

/// Checks that a string can reach the kernel: strings are passed to it as
/// C strings, which end at the first NUL.
pub fn text_without_nul(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!("{text:?} contains a NUL byte"));
    }
    Ok(())
}

pub fn bind(text: &str) -> Result<Bind<'_>, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, destination, options) = match parts[..] {
        [s, d] => (s, d, Vec::new()),
        [s, d, o] => (s, d, o.split(',').filter(|o| !o.is_empty()).collect()),
        _ => {
            return Err(format!(
                "bind {text:?} is not of the form src:dst[:options]"
            ));
        }
    };
    if source.is_empty() || destination.is_empty() {
        return Err(format!("bind {text:?} has an empty source or destination"));
    }
    if !destination.starts_with('/') {
        return Err(format!(
            "bind {text:?}: destination must be an absolute path"
        ));
    }
    absolute_path(destination).map_err(|e| format!("bind {text:?}: destination {e}"))?;
    // A source that is no path names a volume (docs/linuxkit-runtime.md
    // §1.12).
    if source.starts_with('/') {
        absolute_path(source).map_err(|e| format!("bind {text:?}: source {e}"))?;
    } else if !contract::is_entry_name(source) {
        return Err(format!(
            "bind {text:?}: source must be an absolute path or a volume name"
        ));
    }
    for option in &options {
        text_without_nul(option).map_err(|e| format!("bind {text:?}: option {e}"))?;
    }
    Ok(Bind {
        source,
        destination,
        options,
    })
}

/// Parses a mode written as octal (`"0644"`, or YAML `0644` read as text).
pub fn mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("mode {text:?} is not an octal number"))?;
    if mode > 0o7777 {
        return Err(format!("mode {text:?} is more than 07777"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_parse() {
        assert_eq!(
            rlimit("nofile,1024,4096"),
            Ok(Rlimit {
                name: "RLIMIT_NOFILE",
                soft: 1024,
                hard: 4096
            })
        );
        assert_eq!(
            rlimit("RLIMIT_CORE,unlimited,unlimited").unwrap().hard,
            u64::MAX
        );
        assert!(rlimit("nofile,1024").is_err());
        assert!(rlimit("nofiles,1,2").is_err());
        assert!(rlimit("nofile,9,2").is_err());
    }

    #[test]
    fn binds_parse() {
        assert_eq!(
            bind("/a:/b:ro,rshared").unwrap(),
            Bind {
                source: "/a",
                destination: "/b",
                options: vec!["ro", "rshared"]
            }
        );
        assert!(bind("/a").is_err());
        assert!(bind("/a:b").is_err());
        assert!(bind("/a:/b:c:d").is_err());
        assert!(bind("/var/:/host_var:rbind").is_ok());
        assert!(bind("docker:/var/lib/docker").is_ok());
        assert_eq!(
            bind("/a:/b/../../etc").unwrap_err(),
            "bind \"/a:/b/../../etc\": destination path \"/b/../../etc\" is not normalised (no `.` or `..` components, no `//`)"
        );
        assert!(bind("/a/./b:/b").is_err());
        assert!(bind("../x:/b").is_err());
        assert!(bind("/a\0:/b").is_err());
    }

    #[test]
    fn runtime_paths_stay_where_they_are_put() {
        for good in ["/", "/a", "/a/b/", "/dev/"] {
            assert_eq!(absolute_path(good), Ok(()), "{good}");
        }
        for bad in [
            "a", "", "../x", "/a/../b", "/a/./b", "/a//b", "/..", "/a/..", "/a\0b",
        ] {
            assert!(absolute_path(bad).is_err(), "{bad}");
        }
        for good in ["podruntime/docker", "/berth/x", "x"] {
            assert_eq!(clean_path(good), Ok(()), "{good}");
        }
        for bad in ["../x", "a/../../x", "a//b", "a\0"] {
            assert!(clean_path(bad).is_err(), "{bad}");
        }
    }
}
