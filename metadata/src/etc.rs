//! The accounts files in an `/etc`: `passwd`, `group`, `shadow` and (when
//! the host has one) `gshadow`, read as colon-separated lines, added to,
//! and written back each under a temporary name then renamed, so a reader
//! never sees half a file. Lines berth does not touch are kept as they were.
//!
//! It knows nothing of cloud-config: users and groups come in already
//! checked; what a user's home holds is left to the caller.

use std::io;
use std::path::{Path, PathBuf};

use crate::files;

/// The first id given to a user or group made without one (useradd's
/// UID_MIN), and the first of a system user or group (SYS_UID_MIN).
pub const FIRST_ID: u32 = 1000;
pub const FIRST_SYSTEM_ID: u32 = 100;

/// One accounts file: its lines, and whether berth changed it.
#[derive(Debug, Clone)]
struct Table {
    name: &'static str,
    lines: Vec<String>,
    existed: bool,
    changed: bool,
}

impl Table {
    fn read(etc: &Path, name: &'static str) -> io::Result<Table> {
        // Never through a link: root reads and rewrites these.
        let (text, existed) = match files::read(&etc.join(name)) {
            Ok(bytes) => (String::from_utf8(bytes).map_err(io::Error::other)?, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(e),
        };
        Ok(Table {
            name,
            lines: text.lines().map(str::to_string).collect(),
            existed,
            changed: false,
        })
    }

    fn entry(&self, name: &str) -> Option<Vec<&str>> {
        self.lines
            .iter()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.lines
            .iter()
            .filter_map(|l| l.split(':').nth(2)?.parse().ok())
    }

    fn push(&mut self, fields: &[&str]) {
        self.lines.push(fields.join(":"));
        self.changed = true;
    }

    /// Changes field `index` of `name`'s line.
    fn set_field(&mut self, name: &str, index: usize, value: &str) {
        for line in &mut self.lines {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&name) {
                while fields.len() <= index {
                    fields.push("");
                }
                fields[index] = value;
                *line = fields.join(":");
                self.changed = true;
                return;
            }
        }
    }

    fn write(&self, etc: &Path, mode: u32) -> io::Result<()> {
        let mut text = self.lines.join("\n");
        text.push('\n');
        files::write_atomic(&etc.join(self.name), text.as_bytes(), mode, None)
    }
}

/// A user to add, its fields checked by the caller ([`valid_name`],
/// [`valid_field`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// shadow's password field: a crypt hash, `!HASH` (locked), `*`.
    pub password: String,
}

/// The accounts of one `/etc`.
#[derive(Debug, Clone)]
pub struct Accounts {
    etc: PathBuf,
    passwd: Table,
    group: Table,
    shadow: Table,
    gshadow: Table,
}

impl Accounts {
    pub fn read(etc: &Path) -> io::Result<Accounts> {
        Ok(Accounts {
            etc: etc.to_path_buf(),
            passwd: Table::read(etc, "passwd")?,
            group: Table::read(etc, "group")?,
            shadow: Table::read(etc, "shadow")?,
            gshadow: Table::read(etc, "gshadow")?,
        })
    }

    /// A user's uid, primary gid and home.
    pub fn user(&self, name: &str) -> Option<(u32, u32, String)> {
        let f = self.passwd.entry(name)?;
        Some((
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
            f.get(5)?.to_string(),
        ))
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.group.entry(name)?.get(2)?.parse().ok()
    }

    pub fn uid_used(&self, uid: u32) -> bool {
        self.passwd.ids().any(|u| u == uid)
    }

    pub fn gid_used(&self, gid: u32) -> bool {
        self.group.ids().any(|g| g == gid)
    }

    /// The lowest free uid from [`FIRST_ID`] (or [`FIRST_SYSTEM_ID`] for
    /// system users, below [`FIRST_ID`]).
    pub fn free_uid(&self, system: bool) -> Option<u32> {
        free_id(system, |id| self.uid_used(id))
    }

    pub fn free_gid(&self, system: bool) -> Option<u32> {
        free_id(system, |id| self.gid_used(id))
    }

    /// Adds a group (and its gshadow line when the host keeps gshadow).
    pub fn add_group(&mut self, name: &str, gid: u32) {
        self.group.push(&[name, "x", &gid.to_string(), ""]);
        if self.gshadow.existed {
            self.gshadow.push(&[name, "!", "", ""]);
        }
    }

    /// Adds `user` to the member list of `group`, once.
    pub fn add_member(&mut self, group: &str, user: &str) {
        let add = |members: &str| -> Option<String> {
            let mut list: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
            if list.contains(&user) {
                return None;
            }
            list.push(user);
            Some(list.join(","))
        };
        if let Some(members) = self
            .group
            .entry(group)
            .map(|f| f.get(3).copied().unwrap_or(""))
            && let Some(new) = add(members)
        {
            self.group.set_field(group, 3, &new);
        }
        if let Some(members) = self
            .gshadow
            .entry(group)
            .map(|f| f.get(3).copied().unwrap_or(""))
            && let Some(new) = add(members)
        {
            self.gshadow.set_field(group, 3, &new);
        }
    }

    pub fn add_user(&mut self, user: &NewUser) {
        self.passwd.push(&[
            &user.name,
            "x",
            &user.uid.to_string(),
            &user.gid.to_string(),
            &user.gecos,
            &user.home,
            &user.shell,
        ]);
        self.shadow
            .push_owned(&shadow_line(&user.name, &user.password));
    }

    /// Writes back the files that changed. `passwd` and `group` are
    /// world-readable, `shadow` and `gshadow` root's only (a host's own keep
    /// their mode). Every user in passwd with an `x` gets a shadow line, so
    /// the files stay consistent for pwck.
    pub fn write(&mut self) -> io::Result<()> {
        if !self.passwd.changed && !self.group.changed && !self.shadow.changed {
            return Ok(());
        }
        let missing: Vec<String> = self
            .passwd
            .lines
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(1) == Some(&"x") && self.shadow.entry(f[0]).is_none())
                    .then(|| f[0].to_string())
            })
            .collect();
        for name in missing {
            self.shadow.push_owned(&shadow_line(&name, "*"));
        }
        let mode = |table: &Table, new: u32| -> u32 {
            files::mode_of(&self.etc.join(table.name)).unwrap_or(new)
        };
        // shadow before passwd, so no user ever lacks its shadow line.
        for (table, new_mode) in [
            (&self.shadow, 0o600),
            (&self.gshadow, 0o600),
            (&self.group, 0o644),
            (&self.passwd, 0o644),
        ] {
            if table.changed {
                table.write(&self.etc, mode(table, new_mode))?;
            }
        }
        for table in [
            &mut self.shadow,
            &mut self.gshadow,
            &mut self.group,
            &mut self.passwd,
        ] {
            table.changed = false;
            table.existed = true;
        }
        Ok(())
    }
}

fn free_id(system: bool, used: impl Fn(u32) -> bool) -> Option<u32> {
    let mut range = if system {
        FIRST_SYSTEM_ID..FIRST_ID
    } else {
        FIRST_ID..60000
    };
    range.find(|&id| !used(id))
}

fn shadow_line(name: &str, password: &str) -> Vec<String> {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    [
        name,
        password,
        &days.to_string(),
        "0",
        "99999",
        "7",
        "",
        "",
        "",
    ]
    .map(str::to_string)
    .to_vec()
}

// `push` takes `&[&str]`; shadow lines are built as owned strings.
impl Table {
    fn push_owned(&mut self, fields: &[String]) {
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.push(&refs);
    }
}

/// A user or group name as useradd accepts it (its default NAME_REGEX,
/// with capitals allowed as Debian's `--badname` does): at most 32
/// characters, a letter or `_` first, then letters, digits, `_`, `-`, `.`,
/// perhaps a final `$`.
pub fn valid_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// A free-text field (gecos, home, shell, hash): no `:` and no line break.
pub fn valid_field(text: &str) -> bool {
    !text.contains([':', '\n', '\r'])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n";

    fn user(name: &str, uid: u32, password: &str) -> NewUser {
        NewUser {
            name: name.into(),
            uid,
            gid: uid,
            gecos: "A User".into(),
            home: format!("/home/{name}"),
            shell: "/bin/sh".into(),
            password: password.into(),
        }
    }

    #[test]
    fn ids_from_1000_skip_used_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            format!("{PASSWD}a:x:1000:1000::/:/bin/sh\nb:x:1002:1000::/:/bin/sh\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        let mut accounts = Accounts::read(dir.path()).unwrap();
        assert_eq!(accounts.free_uid(false), Some(1001));
        accounts.add_user(&user("c", 1001, "*"));
        assert_eq!(accounts.free_uid(false), Some(1003));
        assert_eq!(accounts.free_uid(true), Some(100));
        assert_eq!(accounts.free_gid(false), Some(1000));
    }

    #[test]
    fn names() {
        for good in ["alice", "_svc", "Bob", "a.b-c_d", "host$"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1abc", "a:b", "a b", "-x", "$", &"a".repeat(33), "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    /// The files berth writes pass pwck and grpck from Debian's passwd
    /// package, in a root of their own.
    #[test]
    fn files_pass_pwck_and_grpck() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), PASSWD).unwrap();
        std::fs::write(etc.join("group"), GROUP).unwrap();
        std::fs::write(etc.join("gshadow"), "root:*::\ntty:*::\nnogroup:*::\n").unwrap();
        let mut accounts = Accounts::read(&etc).unwrap();
        accounts.add_group("alice", 1000);
        accounts.add_group("admins", 1001);
        accounts.add_user(&user("alice", 1000, "$6$salt$hash"));
        accounts.add_member("admins", "alice");
        accounts.add_member("tty", "alice");
        accounts.add_member("tty", "alice");
        accounts.write().unwrap();
        for dir in ["root", "home/alice", "nonexistent"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let group = std::fs::read_to_string(etc.join("group")).unwrap();
        assert_eq!(
            group,
            "root:x:0:\ntty:x:5:alice\nnogroup:x:65534:\nalice:x:1000:\nadmins:x:1001:alice\n"
        );
        let shadow = std::fs::read_to_string(etc.join("shadow")).unwrap();
        assert!(shadow.starts_with("alice:$6$salt$hash:"), "{shadow}");
        assert!(shadow.contains("\nroot:*:"), "{shadow}");
        assert_eq!(files::mode_of(&etc.join("shadow")), Some(0o600));
        assert_eq!(files::mode_of(&etc.join("passwd")), Some(0o644));
        check_with_pwck(root.path());
    }

    /// Runs `pwck -r -q` and `grpck -r` on the root's accounts files.
    pub(crate) fn check_with_pwck(root: &Path) {
        for program in ["pwck", "grpck"] {
            let mut command = Command::new(program);
            command.arg("-r");
            if program == "pwck" {
                command.arg("-q");
            }
            command.arg("-R").arg(root);
            let out = match command.output() {
                Ok(out) => out,
                Err(e) => {
                    crate::test_support::skip(&format!("{program}: {e}"));
                    return;
                }
            };
            assert!(
                out.status.success(),
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
