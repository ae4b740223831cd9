//! The cloud-config subset as types: what a `#cloud-config` document may
//! say, parsed from YAML with serde-saphyr. Keys outside the subset are
//! reported by name (serde_ignored) so they can be logged and skipped.
//! Merging (vendor data under user data, several parts in order) is key by
//! key: a key in the later document replaces the earlier one's.
//!
//! Checking what the values mean (paths, owners, encodings) is `plan`'s.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One document's keys, each absent unless the document has it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CloudConfig {
    pub hostname: Option<Text>,
    pub fqdn: Option<Text>,
    pub prefer_fqdn_over_hostname: Option<bool>,
    pub manage_etc_hosts: Option<ManageEtcHosts>,
    pub bootcmd: Option<Vec<CommandSpec>>,
    pub runcmd: Option<Vec<CommandSpec>>,
    pub ntp: Option<Ntp>,
    pub mounts: Option<Vec<Vec<Option<Text>>>>,
    pub mount_default_fields: Option<Vec<Option<Text>>>,
    pub users: Option<Users>,
    pub groups: Option<Groups>,
    pub ssh_authorized_keys: Option<Vec<Text>>,
    pub write_files: Option<Vec<WriteFile>>,
    pub timezone: Option<Text>,
}

impl CloudConfig {
    /// `self` with every key `over` has replaced by `over`'s.
    pub fn merged(self, over: CloudConfig) -> CloudConfig {
        CloudConfig {
            hostname: over.hostname.or(self.hostname),
            fqdn: over.fqdn.or(self.fqdn),
            prefer_fqdn_over_hostname: over
                .prefer_fqdn_over_hostname
                .or(self.prefer_fqdn_over_hostname),
            manage_etc_hosts: over.manage_etc_hosts.or(self.manage_etc_hosts),
            bootcmd: over.bootcmd.or(self.bootcmd),
            runcmd: over.runcmd.or(self.runcmd),
            ntp: over.ntp.or(self.ntp),
            mounts: over.mounts.or(self.mounts),
            mount_default_fields: over.mount_default_fields.or(self.mount_default_fields),
            users: over.users.or(self.users),
            groups: over.groups.or(self.groups),
            ssh_authorized_keys: over.ssh_authorized_keys.or(self.ssh_authorized_keys),
            write_files: over.write_files.or(self.write_files),
            timezone: over.timezone.or(self.timezone),
        }
    }
}

/// Parses one document. `Ok` has the document and the keys outside the
/// subset (`foo`, `users[0].expiredate`); `Err` one line with the line and
/// column of the problem.
pub fn parse(text: &str, origin: &str) -> Result<(CloudConfig, Vec<String>), String> {
    let mut ignored = Vec::new();
    // An empty document (only the `#cloud-config` line) says nothing.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Ok((CloudConfig::default(), ignored));
    }
    // `!!binary` scalars reach the types as the base64 text they are
    // written in; `plan::decode_content` takes them where cloud-init's
    // documented example puts one (`encoding: gzip`).
    let mut options = serde_saphyr::Options::default();
    options.ignore_binary_tag_for_string = true;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(key_name(&path.to_string()));
        let de = serde_ignored::Deserializer::new(de, &mut record);
        CloudConfig::deserialize(de)
    });
    match result {
        Ok(config) => Ok((config, ignored)),
        Err(error) => Err(crate::yaml::error_line(origin, &error)),
    }
}

/// serde_ignored's `users.0.?.expiredate` as `users[0].expiredate`.
fn key_name(raw: &str) -> String {
    let mut key = String::new();
    for segment in raw.split('.').filter(|s| *s != "?") {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// A scalar taken as its text, whatever YAML would make of it: `0644`,
/// `1000`, `true` stay as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `manage_etc_hosts`: `true`/`false`, `"template"` (as `true`) or
/// `"localhost"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManageEtcHosts {
    Bool(bool),
    Mode(String),
}

impl<'de> Deserialize<'de> for ManageEtcHosts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ManageEtcHosts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, \"template\" or \"localhost\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ManageEtcHosts::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ManageEtcHosts::Mode(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A bootcmd or runcmd entry: a string for `/bin/sh -c`, or an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    Shell(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CommandSpec::Shell(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut argv = Vec::new();
                while let Some(Text(arg)) = seq.next_element()? {
                    argv.push(arg);
                }
                Ok(CommandSpec::Argv(argv))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `ntp`: the servers and pools handed to the ntp image.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Ntp {
    pub enabled: Option<bool>,
    pub servers: Option<Vec<Text>>,
    pub pools: Option<Vec<Text>>,
}

/// Names as cloud-init takes them: a list, or one comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of names or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Names, E> {
                Ok(Names(split_names(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(Text(name)) = seq.next_element()? {
                    names.push(name.trim().to_string());
                }
                Ok(Names(names))
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn split_names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// `users`: a list of entries, or one comma-separated string of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users(pub Vec<UserEntry>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEntry {
    /// `default`: the distribution's default user (berth has none).
    Default,
    User(Box<User>),
}

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Users;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of users or a comma-separated string of names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Users, E> {
                Ok(Users(
                    split_names(v).into_iter().map(UserEntry::named).collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Users, A::Error> {
                let mut users = Vec::new();
                while let Some(user) = seq.next_element()? {
                    users.push(user);
                }
                Ok(Users(users))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl UserEntry {
    fn named(name: String) -> UserEntry {
        if name == "default" {
            UserEntry::Default
        } else {
            UserEntry::User(Box::new(User {
                name,
                ..User::default()
            }))
        }
    }
}

impl<'de> Deserialize<'de> for UserEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UserEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user (a mapping with a name) or a user name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserEntry, E> {
                Ok(UserEntry::named(v.trim().to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UserEntry, A::Error> {
                let user = User::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(UserEntry::User(Box::new(user)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub gecos: Option<Text>,
    #[serde(default)]
    pub homedir: Option<Text>,
    #[serde(default)]
    pub shell: Option<Text>,
    #[serde(default)]
    pub primary_group: Option<Text>,
    #[serde(default)]
    pub groups: Option<Names>,
    #[serde(default)]
    pub ssh_authorized_keys: Option<Vec<Text>>,
    #[serde(default)]
    pub passwd: Option<Text>,
    #[serde(default)]
    pub hashed_passwd: Option<Text>,
    #[serde(default)]
    pub lock_passwd: Option<bool>,
    #[serde(default)]
    pub sudo: Option<Sudo>,
    #[serde(default)]
    pub system: Option<bool>,
    #[serde(default)]
    pub uid: Option<Text>,
    #[serde(default)]
    pub no_create_home: Option<bool>,
    #[serde(default)]
    pub no_user_group: Option<bool>,
}

/// `sudo`: one rule, a list of rules, or `false`/null for none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sudo(pub Vec<String>);

impl<'de> Deserialize<'de> for Sudo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sudo;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sudo rule, a list of rules, or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Sudo, E> {
                if v {
                    Err(E::custom(
                        "sudo: true is not a rule (give one, e.g. \"ALL=(ALL) NOPASSWD:ALL\")",
                    ))
                } else {
                    Ok(Sudo(Vec::new()))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Sudo, E> {
                Ok(Sudo(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Sudo, E> {
                Ok(Sudo(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Sudo, E> {
                Ok(Sudo(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sudo, A::Error> {
                let mut rules = Vec::new();
                while let Some(Text(rule)) = seq.next_element()? {
                    rules.push(rule);
                }
                Ok(Sudo(rules))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `groups`: names, a comma-separated string, or entries `{name: members}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(pub Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for Groups {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry(Vec<(String, Vec<String>)>);
        impl<'de> Deserialize<'de> for Entry {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(V).map(|g| Entry(g.0))
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Groups;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("group names, or group names with their members")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Groups, E> {
                Ok(Groups(
                    split_names(v)
                        .into_iter()
                        .map(|n| (n, Vec::new()))
                        .collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Groups, A::Error> {
                let mut groups = Vec::new();
                while let Some(Entry(entry)) = seq.next_element()? {
                    groups.extend(entry);
                }
                Ok(Groups(groups))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Groups, A::Error> {
                let mut groups = Vec::new();
                while let Some((Text(name), members)) = map.next_entry::<Text, Option<Names>>()? {
                    groups.push((name, members.map(|m| m.0).unwrap_or_default()));
                }
                Ok(Groups(groups))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One entry of `write_files`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct WriteFile {
    pub path: Text,
    #[serde(default)]
    pub content: Option<Text>,
    #[serde(default)]
    pub encoding: Option<Text>,
    #[serde(default)]
    pub owner: Option<Text>,
    #[serde(default)]
    pub permissions: Option<Text>,
    #[serde(default)]
    pub append: Option<bool>,
    #[serde(default)]
    pub defer: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (CloudConfig, Vec<String>) {
        parse(text, "user data").unwrap()
    }

    #[test]
    fn scalars_keep_their_text() {
        let (config, _) = parsed(
            "#cloud-config\nwrite_files:\n- path: /a\n  permissions: 0644\n  content: 1000\nhostname: 007\n",
        );
        let file = &config.write_files.unwrap()[0];
        assert_eq!(file.permissions, Some(Text("0644".into())));
        assert_eq!(file.content, Some(Text("1000".into())));
        assert_eq!(config.hostname, Some(Text("007".into())));
    }

    #[test]
    fn unknown_keys_by_name() {
        let (_, ignored) = parsed(
            "#cloud-config\npackages: [nginx]\nusers:\n- name: a\n  expiredate: '2030-01-01'\nwrite_files:\n- path: /x\n  source: {uri: http://example.org/}\nntp:\n  ntp_client: chrony\n",
        );
        assert_eq!(
            ignored,
            [
                "packages",
                "users[0].expiredate",
                "write_files[0].source",
                "ntp.ntp_client"
            ]
        );
    }

    #[test]
    fn errors_have_a_position() {
        let error = parse(
            "#cloud-config\nusers:\n  - name: a\n   bad: [\n",
            "user data",
        )
        .unwrap_err();
        assert!(error.starts_with("user data:4:"), "{error}");
        let error = parse("#cloud-config\nruncmd: 3\n", "user data").unwrap_err();
        assert!(error.starts_with("user data:2:9: "), "{error}");
    }

    #[test]
    fn users_groups_and_commands_in_every_spelling() {
        let (config, ignored) = parsed(
            "#cloud-config\nusers: [default, {name: bob, groups: 'a, b', sudo: false}, carol]\n\
             groups:\n  - admingroup: [root, sys]\n  - cloud-users\nruncmd:\n  - [ls, -l, /]\n  - echo hi\n  - [echo, 1]\n",
        );
        assert!(ignored.is_empty(), "{ignored:?}");
        let users = config.users.unwrap().0;
        assert_eq!(users[0], UserEntry::Default);
        let UserEntry::User(bob) = &users[1] else {
            panic!()
        };
        assert_eq!(bob.groups, Some(Names(vec!["a".into(), "b".into()])));
        assert_eq!(bob.sudo, Some(Sudo(vec![])));
        assert!(matches!(&users[2], UserEntry::User(u) if u.name == "carol"));
        assert_eq!(
            config.groups.unwrap().0,
            [
                (
                    "admingroup".to_string(),
                    vec!["root".to_string(), "sys".to_string()]
                ),
                ("cloud-users".to_string(), vec![])
            ]
        );
        assert_eq!(
            config.runcmd.unwrap(),
            [
                CommandSpec::Argv(vec!["ls".into(), "-l".into(), "/".into()]),
                CommandSpec::Shell("echo hi".into()),
                CommandSpec::Argv(vec!["echo".into(), "1".into()]),
            ]
        );
        let (config, _) = parsed("#cloud-config\nusers: 'alice, default'\n");
        assert_eq!(config.users.unwrap().0.len(), 2);
    }

    #[test]
    fn user_data_wins_key_by_key() {
        let (vendor, _) = parsed("#cloud-config\nhostname: vendor\ntimezone: UTC\n");
        let (user, _) = parsed("#cloud-config\nhostname: mine\n");
        let merged = vendor.merged(user);
        assert_eq!(merged.hostname, Some(Text("mine".into())));
        assert_eq!(merged.timezone, Some(Text("UTC".into())));
    }
}
