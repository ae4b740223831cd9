//! `groups` and `users` applied: the accounts files, each new user's home
//! (from `/etc/skel`) with `.ssh/authorized_keys`, and the recorded sudo
//! rules. Runs once per instance, before `write_files`, so files can be
//! owned by the users made here.

use std::io;
use std::path::Path;

use crate::etc::{Accounts, NewUser};
use crate::files;

use super::plan::Plan;
use super::system::System;

/// Where the users' `sudo` rules are recorded (berth has no sudo; an image
/// that adds one reads them there).
pub const SUDOERS: &str = "/etc/sudoers.d/berth-cloud-config";

pub fn apply(
    plan: &Plan,
    accounts: &mut Accounts,
    root: &Path,
    system: &dyn System,
) -> io::Result<()> {
    let log = |line: String| system.log(&format!("cloud-config: {line}"));
    let ensure_group = |accounts: &mut Accounts, name: &str, system_group: bool| {
        if accounts.group(name).is_none() {
            match accounts.free_gid(system_group) {
                Some(gid) => {
                    accounts.add_group(name, gid);
                    log(format!("group {name} made (gid {gid})"));
                }
                None => log(format!("group {name}: no free gid; not made")),
            }
        }
    };
    for (group, _) in &plan.groups {
        ensure_group(accounts, group, false);
    }
    let mut made = Vec::new();
    for user in &plan.users {
        if accounts.user(&user.name).is_some() {
            log(format!(
                "user {} exists; only its groups and keys are added",
                user.name
            ));
        } else {
            let uid = match user.uid {
                Some(uid) if accounts.uid_used(uid) => {
                    log(format!("user {}: uid {uid} is taken; not made", user.name));
                    continue;
                }
                Some(uid) => uid,
                None => match accounts.free_uid(user.system) {
                    Some(uid) => uid,
                    None => {
                        log(format!("user {}: no free uid; not made", user.name));
                        continue;
                    }
                },
            };
            let group = user
                .primary_group
                .clone()
                .unwrap_or_else(|| user.name.clone());
            if accounts.group(&group).is_none() {
                // The user's own group takes the uid as gid when it is free.
                let gid = if accounts.gid_used(uid) {
                    accounts.free_gid(user.system)
                } else {
                    Some(uid)
                };
                if let Some(gid) = gid {
                    accounts.add_group(&group, gid);
                }
            }
            let Some(gid) = accounts.group(&group) else {
                log(format!(
                    "user {}: no free gid for group {group}; not made",
                    user.name
                ));
                continue;
            };
            accounts.add_user(&NewUser {
                name: user.name.clone(),
                uid,
                gid,
                gecos: user.gecos.clone(),
                home: user.home.clone(),
                shell: user.shell.clone(),
                password: user.password.clone(),
            });
            log(format!("user {} made (uid {uid}, gid {gid})", user.name));
            made.push(user.name.clone());
        }
        for group in &user.groups {
            ensure_group(accounts, group, false);
            accounts.add_member(group, &user.name);
        }
    }
    for (group, members) in &plan.groups {
        for member in members {
            accounts.add_member(group, member);
        }
    }
    accounts.write()?;
    for user in &plan.users {
        let Some((uid, gid, home)) = accounts.user(&user.name) else {
            continue;
        };
        let home_path = files::under(root, &home);
        // A home or key that cannot be made (a link in the way, say) is
        // one line; the other users still get theirs.
        let result = (|| {
            if made.contains(&user.name)
                && user.create_home
                && std::fs::symlink_metadata(&home_path).is_err()
            {
                files::make_dir(&home_path, 0o755, Some((uid, gid)))?;
                copy_skeleton(&files::under(root, "/etc/skel"), &home_path, (uid, gid))?;
            }
            if !user.keys.is_empty() {
                let ssh = home_path.join(".ssh");
                files::make_dir(&ssh, 0o700, Some((uid, gid)))?;
                add_keys(&ssh.join("authorized_keys"), &user.keys, Some((uid, gid)))?;
            }
            io::Result::Ok(())
        })();
        if let Err(e) = result {
            log(format!("user {}: {e}", user.name));
        }
    }
    let rules: Vec<String> = plan
        .users
        .iter()
        .flat_map(|u| u.sudo.iter().map(move |rule| format!("{} {rule}", u.name)))
        .collect();
    if !rules.is_empty() {
        let text = format!(
            "# The sudo rules of cloud-config's users, recorded by berth's metadata agent.\n{}\n",
            rules.join("\n")
        );
        files::write_atomic(&files::under(root, SUDOERS), text.as_bytes(), 0o440, None)?;
    }
    Ok(())
}

/// Appends the keys not there yet to an authorized_keys file (0600).
pub fn add_keys(path: &Path, keys: &[String], owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut text = files::read_text_or_empty(path)?;
    let had = text.clone();
    for key in keys {
        if !text.lines().any(|l| l.trim() == key) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(key);
            text.push('\n');
        }
    }
    if text == had && std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    files::write_atomic(path, text.as_bytes(), 0o600, owner)
}

/// `/etc/skel` into a new home, owned by its user.
fn copy_skeleton(skel: &Path, home: &Path, owner: (u32, u32)) -> io::Result<()> {
    let Ok(entries) = std::fs::read_dir(skel) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let kind = entry.file_type()?;
        let target = home.join(entry.file_name());
        let mode = files::mode_of(&entry.path()).unwrap_or(0o644);
        if kind.is_dir() {
            files::make_dir(&target, mode, Some(owner))?;
            copy_skeleton(&entry.path(), &target, owner)?;
        } else if kind.is_file() {
            let bytes = std::fs::read(entry.path())?;
            files::write_atomic(&target, &bytes, mode, Some(owner))?;
        }
    }
    Ok(())
}
