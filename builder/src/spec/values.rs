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
    }
}
