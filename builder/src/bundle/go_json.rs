//! JSON bytes as LinuxKit's Go code writes them: `json.MarshalIndent` with
//! four spaces, Go's string escaping, and the runtime-spec's Go struct key
//! order with `omitempty` members left out (docs/linuxkit-runtime.md §4).
//!
//! Only the bytes are this module's; what the documents hold is the bundle
//! module's.

use std::io;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use serde_json::ser::{Formatter, PrettyFormatter};

/// Pretty JSON as Go's `json.MarshalIndent(v, "", "    ")` writes it, plus a
/// final newline, which LinuxKit does not write
/// (docs/linuxkit-runtime.md §4.1, §4.4).
pub(super) fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = GoFormatter(PrettyFormatter::with_indent(b"    "));
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("values in memory always serialise");
    out.push(b'\n');
    out
}

/// serde_json's pretty printer, with strings escaped as Go's encoder does:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` sequences
/// (docs/linuxkit-runtime.md §4.3).
struct GoFormatter(PrettyFormatter<'static>);

impl Formatter for GoFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..at])?;
            w.write_all(escaped.as_bytes())?;
            start = at + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// A `config.json` value written with its keys in the runtime-spec's Go
/// struct order (which is not oci-spec's), and without the members Go's
/// `omitempty` leaves out: nulls, empty lists, empty maps
/// (docs/linuxkit-runtime.md §4.2).
pub(super) struct Ordered<'a> {
    pub(super) value: &'a Value,
    /// The dotted key path of `value`; list items share their list's path.
    pub(super) path: String,
}

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(members) => {
                let order = key_order(&self.path);
                let rank = |key: &str| order.iter().position(|k| *k == key).unwrap_or(order.len());
                let mut members: Vec<(&String, &Value, String)> = members
                    .iter()
                    .map(|(key, value)| (key, value, child_path(&self.path, key)))
                    .filter(|(_, value, path)| !omitted(path, value))
                    .collect();
                // Known keys in struct order, any others after them by name
                // (map keys, which Go sorts, are all "others").
                members.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value, path) in members {
                    map.serialize_entry(key, &Ordered { value, path })?;
                }
                map.end()
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(|value| Ordered {
                value,
                path: self.path.clone(),
            })),
            other => other.serialize(serializer),
        }
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The members of `config.json` that are Go maps, left out when empty; struct
/// pointers such as `process.capabilities` are written even when empty.
const MAPS: &[&str] = &[
    "annotations",
    "linux.sysctl",
    "linux.resources.rdma",
    "linux.resources.unified",
    "linux.timeOffsets",
];

fn omitted(path: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(members) => members.is_empty() && MAPS.contains(&path),
        _ => false,
    }
}

/// The JSON key order of the runtime-spec v1.2.1 Go structs (specs-go/config.go).
fn key_order(path: &str) -> &'static [&'static str] {
    match path {
        "" => &[
            "ociVersion",
            "process",
            "root",
            "hostname",
            "domainname",
            "mounts",
            "hooks",
            "annotations",
            "linux",
        ],
        "process" => &[
            "terminal",
            "consoleSize",
            "user",
            "args",
            "commandLine",
            "env",
            "cwd",
            "capabilities",
            "rlimits",
            "noNewPrivileges",
            "apparmorProfile",
            "oomScoreAdj",
            "scheduler",
            "selinuxLabel",
            "ioPriority",
        ],
        "process.user" => &["uid", "gid", "umask", "additionalGids", "username"],
        "process.capabilities" => &[
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ],
        "process.rlimits" => &["type", "hard", "soft"],
        "root" => &["path", "readonly"],
        "mounts" => &[
            "destination",
            "type",
            "source",
            "options",
            "uidMappings",
            "gidMappings",
        ],
        "linux" => &[
            "uidMappings",
            "gidMappings",
            "sysctl",
            "resources",
            "cgroupsPath",
            "namespaces",
            "devices",
            "seccomp",
            "rootfsPropagation",
            "maskedPaths",
            "readonlyPaths",
            "mountLabel",
            "intelRdt",
            "personality",
            "timeOffsets",
        ],
        "linux.uidMappings" | "linux.gidMappings" | "mounts.uidMappings" | "mounts.gidMappings" => {
            &["containerID", "hostID", "size"]
        }
        "linux.resources" => &[
            "devices",
            "memory",
            "cpu",
            "pids",
            "blockIO",
            "hugepageLimits",
            "network",
            "rdma",
            "unified",
        ],
        "linux.resources.devices" => &["allow", "type", "major", "minor", "access"],
        "linux.resources.memory" => &[
            "limit",
            "reservation",
            "swap",
            "kernel",
            "kernelTCP",
            "swappiness",
            "disableOOMKiller",
            "useHierarchy",
            "checkBeforeUpdate",
        ],
        "linux.resources.cpu" => &[
            "shares",
            "quota",
            "burst",
            "period",
            "realtimeRuntime",
            "realtimePeriod",
            "cpus",
            "mems",
            "idle",
        ],
        "linux.resources.blockIO" => &[
            "weight",
            "leafWeight",
            "weightDevice",
            "throttleReadBpsDevice",
            "throttleWriteBpsDevice",
            "throttleReadIOPSDevice",
            "throttleWriteIOPSDevice",
        ],
        "linux.resources.blockIO.weightDevice" => &["major", "minor", "weight", "leafWeight"],
        "linux.resources.blockIO.throttleReadBpsDevice"
        | "linux.resources.blockIO.throttleWriteBpsDevice"
        | "linux.resources.blockIO.throttleReadIOPSDevice"
        | "linux.resources.blockIO.throttleWriteIOPSDevice" => &["major", "minor", "rate"],
        "linux.resources.hugepageLimits" => &["pageSize", "limit"],
        "linux.resources.network" => &["classID", "priorities"],
        "linux.resources.network.priorities" => &["name", "priority"],
        "linux.namespaces" => &["type", "path"],
        "linux.devices" => &["path", "type", "major", "minor", "fileMode", "uid", "gid"],
        "linux.seccomp" => &[
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "flags",
            "listenerPath",
            "listenerMetadata",
            "syscalls",
        ],
        "linux.seccomp.syscalls" => &["names", "action", "errnoRet", "args"],
        "linux.seccomp.syscalls.args" => &["index", "value", "valueTwo", "op"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_go_does() {
        let text = to_json(&serde_json::json!({"a<b>": "x & y\u{2028}\n\"é"}));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "{\n    \"a\\u003cb\\u003e\": \"x \\u0026 y\\u2028\\n\\\"é\"\n}\n"
        );
    }

    #[test]
    fn empty_lists_and_objects_are_written_in_brief() {
        let text = to_json(&serde_json::json!({"a": [], "b": {}, "c": [1]}));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": [\n        1\n    ]\n}\n"
        );
    }
}
