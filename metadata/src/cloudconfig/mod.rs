//! The cloud-config subset (docs/cloud-config.md), applied in one run:
//! the writable `/etc` and `/home` first, then the user data (and vendor
//! data under it) decoded, parsed and checked whole — a problem anywhere
//! is one logged line and nothing is applied — then the per-boot keys,
//! then, once per instance ID, the rest.
//!
//! The order, as cloud-init's stages order the same modules (with users
//! before write_files, so files can be owned by them):
//! bootcmd, mounts, hostname and /etc/hosts, root's keys, ntp — at every
//! boot; groups and users, write_files, timezone, deferred write_files,
//! runcmd, user data scripts — once per instance; then per-boot scripts.
//! Every path is under [`Host::root`] and every mount, host name and
//! command goes through [`System`], so tests run in a temporary directory
//! and record them. Reading the data sources is not done here.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::etc::Accounts;
use crate::files;
use crate::found::Found;
use crate::state::{self, State};
use crate::userdata::{self, Script};

pub mod config;
pub mod mounts;
pub mod plan;
pub mod system;
pub mod users;

use config::CloudConfig;
use plan::{EtcHosts, FilePlan, HostName, Plan};
pub use system::{Live, System};

/// The host name for other containers (LinuxKit's name, as
/// `run_config` writes the metadata's).
pub const HOSTNAME_FILE: &str = "/run/config/hostname";

/// Where every command's output is appended, as cloud-init keeps it.
pub const OUTPUT_LOG: &str = "/var/log/cloud-init-output.log";

/// The host cloud-config changes.
pub struct Host {
    /// `/` on the host; a temporary directory in tests.
    pub root: PathBuf,
    pub system: Box<dyn System>,
}

impl Host {
    pub fn live() -> Host {
        Host {
            root: PathBuf::from("/"),
            system: Box::new(Live),
        }
    }
}

/// Applies what `found` holds; every problem is logged, none stops the boot.
/// Makes /etc and /home writable in the state directory (see
/// [`State::choose`]), so that what earlier boots applied on a persistent
/// disk is there whether or not a data source answers this time. Returns
/// the state and the mounts it was chosen from.
pub fn make_writable(host: &Host) -> (State, Vec<state::MountEntry>) {
    let root = host.root.as_path();
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    let mounted = state::parse_mountinfo(
        &std::fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default(),
    );
    let state = State::choose(&mounted);
    match state.make_writable(root, &mounted, system) {
        Ok(()) => log(&format!(
            "state in {} ({}); /etc and /home writable",
            state.dir,
            if state.persistent {
                "persistent"
            } else {
                "this boot only"
            }
        )),
        Err(e) => log(&format!(
            "making /etc and /home writable in {}: {e}",
            state.dir
        )),
    }
    (state, mounted)
}

pub fn apply(found: &Found, host: &Host) {
    let root = host.root.as_path();
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    let (state, mounted) = make_writable(host);
    let Some((config, scripts)) = documents(found, system) else {
        return;
    };
    let accounts = match Accounts::read(&files::under(root, "/etc")) {
        Ok(accounts) => accounts,
        Err(e) => {
            log(&format!(
                "reading /etc/passwd and /etc/group: {e}; nothing applied"
            ));
            return;
        }
    };
    let plan = match plan::plan(&config, &found.metadata, &scripts, &accounts) {
        Ok(plan) => plan,
        Err(e) => {
            log(&format!("{e}; nothing applied"));
            return;
        }
    };
    for note in &plan.notes {
        log(note);
    }
    let id = found.metadata.instance_id.as_deref();
    let new_instance = match id {
        None => {
            log("no instance ID: everything applies at every boot");
            true
        }
        Some(id) if state.applied_instance(root).as_deref() == Some(id) => {
            log(&format!(
                "instance ID {id} already applied; nothing to do but the per-boot keys"
            ));
            false
        }
        Some(_) => true,
    };
    apply_per_boot(&plan, host, &mounted);
    if new_instance {
        apply_per_instance(&plan, accounts, host, &state);
        if let Some(id) = id {
            match state.record_instance(root, id) {
                Ok(()) => log(&format!("instance ID {id} applied")),
                Err(e) => log(&format!("recording instance ID {id}: {e}")),
            }
        }
    }
    run_scripts(&plan.boot_scripts, host, &state);
}

/// The user data's and vendor data's cloud-config merged (user data wins
/// key by key) and their scripts; `None` when the user data is broken
/// (logged: nothing applies). Broken vendor data is logged and ignored.
fn documents(found: &Found, system: &dyn System) -> Option<(CloudConfig, Vec<Script>)> {
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    let mut merged = CloudConfig::default();
    let mut scripts = Vec::new();
    for (what, data) in [
        ("vendor data", &found.vendor_data),
        ("user data", &found.user_data),
    ] {
        let Some(data) = data else { continue };
        let decoded = userdata::decode(data, what);
        for note in &decoded.notes {
            log(note);
        }
        let mut config = CloudConfig::default();
        let mut broken = false;
        for (origin, text) in &decoded.cloud_configs {
            match config::parse(text, origin) {
                Ok((document, ignored)) => {
                    for key in ignored {
                        log(&format!("{key} is not supported; skipped"));
                    }
                    config = config.merged(document);
                }
                Err(e) if what == "user data" => {
                    log(&format!("{e}; nothing applied"));
                    return None;
                }
                Err(e) => {
                    log(&format!("{e}; vendor data ignored"));
                    broken = true;
                }
            }
        }
        if !broken {
            merged = merged.merged(config);
            scripts.extend(decoded.scripts);
        }
    }
    Some((merged, scripts))
}

fn apply_per_boot(plan: &Plan, host: &Host, mounted: &[state::MountEntry]) {
    let root = host.root.as_path();
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    for (index, argv) in plan.bootcmd.iter().enumerate() {
        run(host, &format!("bootcmd[{index}]"), argv);
    }
    mounts::apply(&plan.mounts, root, mounted, system);
    if let Some(name) = &plan.hostname {
        set_hostname(name, plan.etc_hosts, host);
    }
    if !plan.root_keys.is_empty() {
        // 0700, as run_config makes it when the metadata has keys.
        let dir = files::under(root, "/run/config/ssh");
        let path = dir.join("authorized_keys");
        match files::make_dir(&dir, 0o700, None)
            .and_then(|()| users::add_keys(&path, &plan.root_keys, None))
        {
            Ok(()) => log(&format!(
                "{} key(s) for root in /run/config/ssh/authorized_keys",
                plan.root_keys.len()
            )),
            Err(e) => log(&format!("root's keys: {e}")),
        }
    }
    if let Some(servers) = &plan.ntp_servers {
        let text: String = servers.iter().map(|s| format!("{s}\n")).collect();
        match files::write_atomic(
            &files::under(root, "/run/config/ntp/servers"),
            text.as_bytes(),
            0o644,
            None,
        ) {
            Ok(()) => log(&format!(
                "ntp: {} server(s) in /run/config/ntp/servers",
                servers.len()
            )),
            Err(e) => log(&format!("ntp: /run/config/ntp/servers: {e}")),
        }
    }
}

fn set_hostname(name: &HostName, etc_hosts: Option<EtcHosts>, host: &Host) {
    let root = host.root.as_path();
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    match system.sethostname(&name.system) {
        Ok(()) => log(&format!("host name {}", name.system)),
        Err(e) => log(&format!("setting the host name {}: {e}", name.system)),
    }
    let hostname = format!("{}\n", name.system);
    if let Err(e) = files::write_atomic(
        &files::under(root, "/etc/hostname"),
        hostname.as_bytes(),
        0o644,
        None,
    ) {
        log(&format!("/etc/hostname: {e}"));
    }
    // The dhcp image leaves the host name alone when this file has one
    // (else a lease renewal would set the DHCP server's); the metadata's
    // own name is there already. LinuxKit's form: no newline.
    if name.from_document
        && let Err(e) = files::write_atomic(
            &files::under(root, HOSTNAME_FILE),
            name.system.as_bytes(),
            0o644,
            None,
        )
    {
        log(&format!("{HOSTNAME_FILE}: {e}"));
    }
    let Some(mode) = etc_hosts else { return };
    let path = files::under(root, "/etc/hosts");
    let line = if name.fqdn == name.short {
        format!("127.0.1.1 {}", name.short)
    } else {
        format!("127.0.1.1 {} {}", name.fqdn, name.short)
    };
    let text = match mode {
        EtcHosts::Whole => format!(
            "# Written by berth's metadata agent (cloud-config manage_etc_hosts).\n\
             127.0.0.1 localhost\n{line}\n::1 localhost ip6-localhost ip6-loopback\n"
        ),
        EtcHosts::Localhost => {
            let old = match files::read_text_or_empty(&path) {
                Ok(old) => old,
                Err(e) => return log(&format!("/etc/hosts: {e}")),
            };
            let mut lines: Vec<String> = old
                .lines()
                .filter(|l| !l.trim_start().starts_with("127.0.1.1"))
                .map(str::to_string)
                .collect();
            if !lines
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some("localhost"))
            {
                lines.insert(0, "127.0.0.1 localhost".into());
            }
            lines.push(line);
            lines.join("\n") + "\n"
        }
    };
    match files::write_atomic(&path, text.as_bytes(), 0o644, None) {
        Ok(()) => log("/etc/hosts written"),
        Err(e) => log(&format!("/etc/hosts: {e}")),
    }
}

fn apply_per_instance(plan: &Plan, mut accounts: Accounts, host: &Host, state: &State) {
    let root = host.root.as_path();
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    if (!plan.users.is_empty() || !plan.groups.is_empty())
        && let Err(e) = users::apply(plan, &mut accounts, root, system)
    {
        log(&format!("users: {e}"));
    }
    write_files(plan.files.iter().filter(|f| !f.defer), &accounts, host);
    if let Some(zone) = &plan.timezone {
        set_timezone(zone, host);
    }
    // cloud-init's write_files_deferred runs in its final stage, before
    // scripts_user runs runcmd and the user data's scripts.
    write_files(plan.files.iter().filter(|f| f.defer), &accounts, host);
    for (index, argv) in plan.runcmd.iter().enumerate() {
        run(host, &format!("runcmd[{index}]"), argv);
    }
    run_scripts(&plan.scripts, host, state);
}

fn write_files<'a>(files: impl Iterator<Item = &'a FilePlan>, accounts: &Accounts, host: &Host) {
    let system = &*host.system;
    let log = |line: &str| system.log(&format!("cloud-config: {line}"));
    for file in files {
        let owner = match &file.owner {
            None => None,
            Some((user, group)) => match (accounts.user(user), accounts.group(group)) {
                (Some((uid, _, _)), Some(gid)) => Some((uid, gid)),
                _ => {
                    log(&format!(
                        "write_files: {}: owner {user}:{group} was not made; not written",
                        file.path
                    ));
                    continue;
                }
            },
        };
        let path = files::under(&host.root, &file.path);
        let result = if file.append {
            append(&path, &file.bytes, file.mode, owner)
        } else {
            files::write_atomic(&path, &file.bytes, file.mode, owner)
        };
        match result {
            Ok(()) => log(&format!(
                "wrote {} ({} bytes, mode {:04o}{})",
                file.path,
                file.bytes.len(),
                file.mode,
                if file.append { ", appended" } else { "" }
            )),
            Err(e) => log(&format!("write_files: {}: {e}", file.path)),
        }
    }
}

fn append(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = files::open_append(path, mode)?;
    file.write_all(bytes)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

fn set_timezone(zone: &str, host: &Host) {
    let root = host.root.as_path();
    let log = |line: &str| host.system.log(&format!("cloud-config: {line}"));
    let target = format!("/usr/share/zoneinfo/{zone}");
    if !files::under(root, &target).exists() {
        log(&format!(
            "timezone: this host has no {target}; /etc/localtime points there anyway"
        ));
    }
    let link = files::under(root, "/etc/localtime");
    let temporary = files::under(root, "/etc/.localtime.berth-new");
    let _ = std::fs::remove_file(&temporary);
    let result = files::write_atomic(
        &files::under(root, "/etc/timezone"),
        format!("{zone}\n").as_bytes(),
        0o644,
        None,
    )
    .and_then(|()| std::os::unix::fs::symlink(&target, &temporary))
    .and_then(|()| std::fs::rename(&temporary, &link));
    match result {
        Ok(()) => log(&format!("timezone {zone}")),
        Err(e) => log(&format!("timezone {zone}: {e}")),
    }
}

/// Scripts from user data, kept in the state directory and run through the
/// interpreter their `#!` line names (so a `noexec` /run does not matter).
fn run_scripts(scripts: &[Script], host: &Host, state: &State) {
    let dir = state.scripts_dir(&host.root);
    for script in scripts {
        let path = dir.join(&script.name);
        if let Err(e) = files::write_atomic(&path, &script.body, 0o700, None) {
            host.system
                .log(&format!("cloud-config: script {}: {e}", script.name));
            continue;
        }
        let first = script
            .body
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let shebang = String::from_utf8_lossy(first.strip_prefix(b"#!").unwrap_or_default());
        // Like the kernel: the interpreter, then at most one argument.
        let mut argv: Vec<String> = match shebang.trim().split_once(char::is_whitespace) {
            Some((interpreter, arg)) => vec![interpreter.into(), arg.trim().into()],
            None if !shebang.trim().is_empty() => vec![shebang.trim().into()],
            None => vec!["/bin/sh".into()],
        };
        argv.push(path.display().to_string());
        run(host, &format!("script {}", script.name), &argv);
    }
}

/// Runs one command with the time limit, its output in the log and in
/// [`OUTPUT_LOG`]; a failure is one line with its status.
fn run(host: &Host, label: &str, argv: &[String]) {
    let system = &*host.system;
    let mut output = files::open_append(&files::under(&host.root, OUTPUT_LOG), 0o640)
        .map_err(|e| system.log(&format!("cloud-config: {OUTPUT_LOG}: {e}")))
        .ok();
    let command = system::Command {
        argv: argv.to_vec(),
        limit: system::COMMAND_LIMIT,
    };
    let outcome = system.run(&command, &mut |line| {
        system.log(&format!("{label}: {line}"));
        if let Some(file) = &mut output {
            let _ = writeln!(file, "{line}");
        }
    });
    let failure = match outcome {
        Ok(system::Outcome::Exited(0)) => return,
        Ok(system::Outcome::Exited(code)) => format!("failed with exit status {code}"),
        Ok(system::Outcome::Signalled(signal)) => format!("killed by signal {signal}"),
        Ok(system::Outcome::TimedOut) => {
            format!("killed after {} s, its time limit", command.limit.as_secs())
        }
        Err(e) => format!("could not start: {e}"),
    };
    system.log(&format!("cloud-config: {label} {failure}"));
}

#[cfg(test)]
mod tests;
