//! The whole document checked before the first change: every path, owner,
//! encoding, permission, name and command, decoded into a [`Plan`] that
//! can be applied without another reason to stop. A problem is one line
//! naming the key and entry (`write_files[2].path: ...`); then nothing is
//! applied.

use std::collections::BTreeSet;

use crate::etc::{self, Accounts};
use crate::files;
use crate::found::Metadata;
use crate::userdata::{self, Script};

use super::config::{CloudConfig, CommandSpec, ManageEtcHosts, UserEntry};
use super::mounts::{self, FstabEntry};

/// What to apply, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    // At every boot.
    pub bootcmd: Vec<Vec<String>>,
    pub mounts: Vec<FstabEntry>,
    pub hostname: Option<HostName>,
    pub etc_hosts: Option<EtcHosts>,
    pub root_keys: Vec<String>,
    pub ntp_servers: Option<Vec<String>>,
    pub boot_scripts: Vec<Script>,
    // Once per instance.
    pub groups: Vec<(String, Vec<String>)>,
    pub users: Vec<UserPlan>,
    pub files: Vec<FilePlan>,
    pub timezone: Option<String>,
    pub runcmd: Vec<Vec<String>>,
    pub scripts: Vec<Script>,
    /// Lines for the log: what is accepted but means nothing on berth.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    /// What sethostname and /etc/hostname get.
    pub system: String,
    pub short: String,
    pub fqdn: String,
    /// Set by the document (`hostname`, `fqdn`), not the metadata's.
    pub from_document: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcHosts {
    /// `true`/`template`: /etc/hosts written whole.
    Whole,
    /// `localhost`: only the 127.0.1.1 line changed.
    Localhost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    pub name: String,
    pub uid: Option<u32>,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// The primary group: named, else the user's own group (created).
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub keys: Vec<String>,
    /// shadow's password field.
    pub password: String,
    pub sudo: Vec<String>,
    pub system: bool,
    pub create_home: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlan {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
    /// `user:group` names, checked; `None`: root's, as written.
    pub owner: Option<(String, String)>,
    pub append: bool,
    pub defer: bool,
}

/// Checks `config` (and the user data's scripts) against the host's
/// accounts; `Err` is one line naming what is wrong.
pub fn plan(
    config: &CloudConfig,
    metadata: &Metadata,
    scripts: &[Script],
    accounts: &Accounts,
) -> Result<Plan, String> {
    let mut plan = Plan {
        bootcmd: commands(config.bootcmd.as_deref(), "bootcmd")?,
        runcmd: commands(config.runcmd.as_deref(), "runcmd")?,
        ..Plan::default()
    };
    // A bad host name from the metadata is the source's problem, not the
    // document's: it is logged and the document still applies.
    let from_metadata = config.fqdn.is_none() && config.hostname.is_none();
    plan.hostname = match hostname(config, metadata) {
        Ok(name) => name,
        Err(e) if from_metadata => {
            plan.notes
                .push(format!("{e}; the host name is left as it is"));
            None
        }
        Err(e) => return Err(e),
    };
    plan.etc_hosts = match &config.manage_etc_hosts {
        None | Some(ManageEtcHosts::Bool(false)) => None,
        Some(ManageEtcHosts::Bool(true)) => Some(EtcHosts::Whole),
        Some(ManageEtcHosts::Mode(mode)) => match mode.as_str() {
            "template" | "true" => Some(EtcHosts::Whole),
            "localhost" => Some(EtcHosts::Localhost),
            "false" => None,
            other => {
                return Err(format!(
                    "manage_etc_hosts: {other:?} is not true, false, template or localhost"
                ));
            }
        },
    };
    if plan.etc_hosts.is_some() && plan.hostname.is_none() {
        plan.notes
            .push("manage_etc_hosts: no host name to write; /etc/hosts left alone".into());
        plan.etc_hosts = None;
    }
    for (index, key) in config.ssh_authorized_keys.iter().flatten().enumerate() {
        plan.root_keys.push(key_line(
            key.as_str(),
            &format!("ssh_authorized_keys[{index}]"),
        )?);
    }
    if let Some(ntp) = &config.ntp
        && ntp.enabled != Some(false)
    {
        let mut servers = Vec::new();
        for (key, list) in [("servers", &ntp.servers), ("pools", &ntp.pools)] {
            for (index, server) in list.iter().flatten().enumerate() {
                let server = server.as_str().trim();
                if server.is_empty() || !server.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "ntp.{key}[{index}]: {server:?} is not a host name or address"
                    ));
                }
                // The ntp image's reading: `NAME` a server, `pool NAME`
                // a pool.
                servers.push(match key {
                    "pools" => format!("pool {server}"),
                    _ => server.to_string(),
                });
            }
        }
        plan.ntp_servers = Some(servers);
    }
    plan.mounts = mounts::plan(
        config.mounts.as_deref().unwrap_or_default(),
        config.mount_default_fields.as_deref(),
        &mut plan.notes,
    )?;
    if let Some(zone) = &config.timezone {
        let zone = zone.as_str();
        let valid = !zone.is_empty()
            && !zone.starts_with('/')
            && files::check(&format!("/{zone}")).is_ok()
            && zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
        if !valid {
            return Err(format!("timezone: {zone:?} is not a zone name"));
        }
        plan.timezone = Some(zone.to_string());
    }
    for (name, members) in config.groups.iter().flat_map(|g| &g.0) {
        if !etc::valid_name(name) {
            return Err(format!("groups: {name:?} is not a valid group name"));
        }
        if let Some(bad) = members.iter().find(|m| !etc::valid_name(m)) {
            return Err(format!("groups.{name}: {bad:?} is not a valid user name"));
        }
        plan.groups.push((name.clone(), members.clone()));
    }
    for (index, entry) in config.users.iter().flat_map(|u| &u.0).enumerate() {
        match entry {
            UserEntry::Default => plan
                .notes
                .push("users: default: berth has no default user; nothing made for it".into()),
            UserEntry::User(user) => {
                let user = user_plan(user, index)?;
                if let Some(uid) = user.uid
                    && accounts.user(&user.name).is_none()
                    && (accounts.uid_used(uid) || plan.users.iter().any(|u| u.uid == Some(uid)))
                {
                    return Err(format!("users[{index}].uid: {uid} is taken"));
                }
                plan.users.push(user);
            }
        }
    }
    // Group members must be users by the time the files are written.
    let user_exists =
        |name: &str| accounts.user(name).is_some() || plan.users.iter().any(|u| u.name == name);
    for (group, members) in &plan.groups {
        if let Some(m) = members.iter().find(|m| !user_exists(m)) {
            return Err(format!("groups.{group}: no user {m:?}"));
        }
    }
    let group_exists = |name: &str| {
        accounts.group(name).is_some()
            || plan.groups.iter().any(|(g, _)| g == name)
            || plan.users.iter().any(|u| {
                u.name == name
                    || u.primary_group.as_deref() == Some(name)
                    || u.groups.iter().any(|g| g == name)
            })
    };
    for (index, file) in config.write_files.iter().flatten().enumerate() {
        let at = format!("write_files[{index}]");
        let path = file.path.as_str();
        files::check_shared(path).map_err(|e| format!("{at}.path: {e}"))?;
        let content = file.content.as_ref().map_or("", |c| c.as_str());
        let bytes = decode_content(content, file.encoding.as_ref().map(|e| e.as_str()))
            .map_err(|e| format!("{at}.content ({path}): {e}"))?;
        let mode = match &file.permissions {
            None => 0o644,
            Some(p) => parse_mode(p.as_str()).ok_or_else(|| {
                format!(
                    "{at}.permissions ({path}): {:?} is not an octal mode",
                    p.as_str()
                )
            })?,
        };
        let owner = match &file.owner {
            None => None,
            Some(owner) => {
                let owner = owner.as_str();
                let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
                if !user_exists(user) {
                    return Err(format!("{at}.owner ({path}): no user {user:?}"));
                }
                if !group_exists(group) {
                    return Err(format!("{at}.owner ({path}): no group {group:?}"));
                }
                Some((user.to_string(), group.to_string()))
            }
        };
        plan.files.push(FilePlan {
            path: path.to_string(),
            bytes,
            mode,
            owner,
            append: file.append.unwrap_or(false),
            defer: file.defer.unwrap_or(false),
        });
    }
    for script in scripts {
        if script.per_boot {
            plan.boot_scripts.push(script.clone());
        } else {
            plan.scripts.push(script.clone());
        }
    }
    Ok(plan)
}

fn commands(specs: Option<&[CommandSpec]>, key: &str) -> Result<Vec<Vec<String>>, String> {
    let mut argvs = Vec::new();
    for (index, spec) in specs.unwrap_or_default().iter().enumerate() {
        let argv = match spec {
            CommandSpec::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
            CommandSpec::Argv(argv) => argv.clone(),
        };
        if argv.first().is_none_or(|a| a.trim().is_empty()) {
            return Err(format!("{key}[{index}]: an empty command"));
        }
        argvs.push(argv);
    }
    Ok(argvs)
}

/// cloud-init's choice: `fqdn`, else `hostname` (split at its first dot
/// when it is a FQDN), else the metadata's host name; the system host name
/// is the short one unless `prefer_fqdn_over_hostname`.
fn hostname(config: &CloudConfig, metadata: &Metadata) -> Result<Option<HostName>, String> {
    let (key, name) = if let Some(fqdn) = &config.fqdn {
        ("fqdn", fqdn.as_str().to_string())
    } else if let Some(hostname) = &config.hostname {
        ("hostname", hostname.as_str().to_string())
    } else if let Some(name) = metadata
        .local_hostname
        .as_ref()
        .or(metadata.hostname.as_ref())
    {
        ("metadata's host name", name.clone())
    } else {
        return Ok(None);
    };
    let name = name.trim().trim_end_matches('.').to_string();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!("{key}: {name:?} is not a valid host name"));
    }
    let mut short = name.split('.').next().unwrap_or_default().to_string();
    if key == "fqdn"
        && let Some(h) = &config.hostname
    {
        short = h.as_str().trim().to_string();
        if !valid_label(&short) {
            return Err(format!("hostname: {short:?} is not a valid host name"));
        }
    }
    let system = if config.prefer_fqdn_over_hostname == Some(true) {
        name.clone()
    } else {
        short.clone()
    };
    // HOST_NAME_MAX.
    if system.len() > 64 {
        return Err(format!(
            "{key}: {system:?} is longer than 64 bytes, the kernel's limit"
        ));
    }
    Ok(Some(HostName {
        system,
        short,
        fqdn: name,
        from_document: key != "metadata's host name",
    }))
}

fn key_line(key: &str, at: &str) -> Result<String, String> {
    let key = key.trim();
    if key.is_empty() || key.contains(['\n', '\r']) {
        return Err(format!("{at}: not one line of an OpenSSH public key"));
    }
    Ok(key.to_string())
}

fn user_plan(user: &super::config::User, index: usize) -> Result<UserPlan, String> {
    let name = user.name.trim().to_string();
    let at = format!("users[{index}] ({name})");
    if !etc::valid_name(&name) {
        return Err(format!(
            "users[{index}].name: {name:?} is not a valid user name"
        ));
    }
    let text = |field: &Option<super::config::Text>, key: &str| -> Result<Option<String>, String> {
        match field {
            Some(t) if !etc::valid_field(t.as_str()) => Err(format!(
                "{at}.{key}: {:?} has a ':' or a line break",
                t.as_str()
            )),
            Some(t) => Ok(Some(t.as_str().to_string())),
            None => Ok(None),
        }
    };
    let home = text(&user.homedir, "homedir")?.unwrap_or_else(|| format!("/home/{name}"));
    files::check(&home).map_err(|e| format!("{at}.homedir: {e}"))?;
    let shell = text(&user.shell, "shell")?.unwrap_or_else(|| "/bin/sh".into());
    let uid = match &user.uid {
        None => None,
        Some(uid) => Some(
            uid.as_str()
                .parse::<u32>()
                .map_err(|_| format!("{at}.uid: {:?} is not a number", uid.as_str()))?,
        ),
    };
    let hash = match (
        text(&user.hashed_passwd, "hashed_passwd")?,
        text(&user.passwd, "passwd")?,
    ) {
        (Some(h), _) | (None, Some(h)) => Some(h),
        (None, None) => None,
    };
    if let Some(h) = &hash
        && !h.starts_with('$')
    {
        return Err(format!(
            "{at}.passwd: not a crypt hash (like `openssl passwd -6` makes)"
        ));
    }
    // Locked: no password logs in. `*` rather than `!` when there is no
    // hash, so an sshd without PAM still takes the user's keys.
    let password = match (hash, user.lock_passwd.unwrap_or(true)) {
        (Some(h), true) => format!("!{h}"),
        (Some(h), false) => h,
        (None, _) => "*".into(),
    };
    let primary_group = text(&user.primary_group, "primary_group")?;
    let groups = user.groups.clone().map(|g| g.0).unwrap_or_default();
    for group in primary_group.iter().chain(&groups) {
        if !etc::valid_name(group) {
            return Err(format!("{at}.groups: {group:?} is not a valid group name"));
        }
    }
    let mut keys = Vec::new();
    for (i, key) in user.ssh_authorized_keys.iter().flatten().enumerate() {
        keys.push(key_line(
            key.as_str(),
            &format!("{at}.ssh_authorized_keys[{i}]"),
        )?);
    }
    let sudo = user.sudo.clone().map(|s| s.0).unwrap_or_default();
    if sudo.iter().any(|r| r.contains(['\n', '\r'])) {
        return Err(format!("{at}.sudo: a rule has a line break"));
    }
    let system = user.system.unwrap_or(false);
    Ok(UserPlan {
        name,
        uid,
        gecos: text(&user.gecos, "gecos")?.unwrap_or_default(),
        home,
        shell,
        primary_group: primary_group
            .or_else(|| (user.no_user_group == Some(true)).then(|| "users".into())),
        groups: groups
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        keys,
        password,
        sudo,
        system,
        create_home: !system && user.no_create_home != Some(true),
    })
}

/// `permissions` as cloud-init reads it: octal, with or without a leading
/// `0` or `0o`.
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    let mode = u32::from_str_radix(digits, 8).ok()?;
    (mode <= 0o7777).then_some(mode)
}

/// A write_files content in its `encoding`.
pub fn decode_content(content: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    let base64 = |text: &str| {
        userdata::base64_lenient(text.as_bytes()).map_err(|e| format!("not valid base64: {e}"))
    };
    // gzip content is binary, so YAML carries it as `!!binary` base64
    // (cloud-init's documented example); it arrives here as that text.
    let gzip = |bytes: &[u8]| match base64(content) {
        Ok(decoded) if !bytes.starts_with(&[0x1f, 0x8b]) && decoded.starts_with(&[0x1f, 0x8b]) => {
            userdata::gunzip(&decoded)
        }
        _ => userdata::gunzip(bytes),
    };
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "text/plain") => Ok(content.as_bytes().to_vec()),
        Some("b64" | "base64") => base64(content),
        Some("gz" | "gzip") => gzip(content.as_bytes()),
        Some("gz+b64" | "gzip+base64" | "gz+base64" | "gzip+b64") => gzip(&base64(content)?),
        Some(other) => Err(format!(
            "encoding {other:?} is not one of b64, gzip, gz+b64"
        )),
    }
}
