//! The definition: LinuxKit's YAML schema as typed, validated Rust values.
//!
//! This module owns parsing ([`parse`]), merging several files into one
//! definition ([`Definition::merge`]), the semantic checks ([`validate`]) and
//! the vocabulary values are written in ([`values`]).
//! It does no I/O: callers hand it text and a name for that text, so `berth
//! validate` and the tests see exactly what `berth build` sees.
//! What an image reference points at, and what the image's own label adds, is
//! decided later (`plan`, `bundle`).

mod located;
mod parse;
mod validate;
pub mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use located::{Located, Origin};
pub use parse::{Problem, SpecError};
pub use parse::{parse, parse_as, parse_label};
pub use validate::{check_label, validate};
pub use values::{Bind, CAPABILITIES, RLIMITS, Rlimit, bind, capability, mode, rlimit};

/// A whole definition: one YAML file, or several merged in order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub onboot: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub onshutdown: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
    /// berth: the image of boot loaders and stubs that bootable media are
    /// made with (default: berth's own, `images/boot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
}

/// `boot:` (berth): where the boot loaders and the UKI stub come from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    pub image: Located<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The kernel's file name inside the kernel image (default `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The modules tarball inside the kernel image (default `kernel.tar`,
    /// `none` for no modules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<String>,
    /// A microcode cpio inside the kernel image, prepended to the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucode: Option<String>,
    /// berth: the modules to put in the initrd (`all`, or names and `*`
    /// patterns), with what they depend on; unset, the drivers of common
    /// virtual machines ([`crate::kernel::modules::VM_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<ModuleChoice>,
}

/// `kernel.modules`: `all`, or a list of module names and patterns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ModuleChoice {
    Word(String),
    List(Vec<String>),
}

/// A user or group: a number, or the name of another container whose
/// allocated id it shares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IdRef {
    Number(u32),
    Name(String),
}

/// A device node the container may use (`devices:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub path: Located<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// The file mode, octal: YAML `0666` is read as the text it is written as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Located<String>>,
}

/// A scalar that LinuxKit reads as a string even when YAML types it as a
/// number or a boolean (sysctl values).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Integer(i64),
    Float(f64),
    Boolean(bool),
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Integer(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Boolean(b) => write!(f, "{b}"),
            Scalar::String(s) => f.write_str(s),
        }
    }
}

/// One entry of `uidMappings` / `gidMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdMapping {
    #[serde(rename = "containerID")]
    pub container_id: u32,
    #[serde(rename = "hostID")]
    pub host_id: u32,
    pub size: u32,
}

/// One `onboot`, `onshutdown` or `services` entry, or the
/// `org.mobyproject.config` label of an image (which has no `name`/`image`).
///
/// Every field is optional so that "not set" stays distinguishable from
/// "set to empty": LinuxKit's precedence (YAML over label over image config)
/// depends on it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Located<String>>>,
    #[serde(
        rename = "capabilities.add",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capabilities_add: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambient: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<contract::Mount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binds: Option<Vec<Located<String>>>,
    #[serde(rename = "binds.add", default, skip_serializing_if = "Option::is_none")]
    pub binds_add: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Device>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Located<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Located<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_gids: Option<Vec<Located<IdRef>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_propagation: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// The OCI runtime specification's `linux.resources`, as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Located<oci_spec::runtime::LinuxResources>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<BTreeMap<String, Scalar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimits: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_mappings: Option<Vec<IdMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_mappings: Option<Vec<IdMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<contract::Runtime>,
    /// berth's: `unconfined`, `default`, or a seccomp profile file in
    /// Docker's format, relative to the YAML file (docs/yaml.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Located<String>>,
}

impl Container {
    /// The entry's name; validation guarantees one for YAML entries.
    pub fn name(&self) -> &str {
        self.name.as_ref().map_or("", |n| n.value.as_str())
    }
}

/// One entry of `files:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// A file on the build host, relative to the YAML file; `~` is the home
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `yaml`: the definition itself, as the builder saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Located<String>>,
    /// A missing `source` is skipped instead of failing the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Octal; default 0600 for files and symlinks, 0700 for directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Located<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Located<IdRef>>,
}

/// One entry of `volumes:`: an image made available to containers as a
/// directory or as an OCI layout.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
}

/// `trust:`: which images must be signed by which keys (docs/signing.md).
/// LinuxKit's `image` and `org` lists (which LinuxKit no longer checks)
/// ask for a signature by any of berth's `keys`; `images` are berth's own
/// rules, each naming its keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Vec<Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Vec<Located<String>>>,
    /// berth: named ed25519 public keys, each a path relative to the YAML
    /// file that names it or the SPKI PEM itself. Kept as a list so that
    /// the same name in two merged files stays two entries for the policy
    /// to compare.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "TrustKey::deserialize_map",
        serialize_with = "TrustKey::serialize_map"
    )]
    pub keys: Vec<TrustKey>,
    /// berth: which images must be signed by which of the keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<TrustRule>,
}

/// One entry of `trust.keys`: a name and the key (a path or PEM), which
/// remembers where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustKey {
    pub name: String,
    pub key: Located<String>,
}

impl TrustKey {
    fn deserialize_map<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<TrustKey>, D::Error> {
        let map = BTreeMap::<String, Located<String>>::deserialize(deserializer)?;
        Ok(map
            .into_iter()
            .map(|(name, key)| TrustKey { name, key })
            .collect())
    }

    /// As a map; a name merged in twice is written once.
    fn serialize_map<S: serde::Serializer>(
        keys: &[TrustKey],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = BTreeMap::new();
        for key in keys {
            map.entry(key.name.as_str()).or_insert(&key.key.value);
        }
        map.serialize(serializer)
    }
}

/// One rule of `trust.images`: images whose repository matches `pattern`
/// must be signed by one of `keys`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    pub pattern: Located<String>,
    pub keys: Vec<Located<String>>,
}

impl Definition {
    /// Merges `next` into `self` as LinuxKit does when several files are
    /// given: kernel fields that `next` sets override, lists append.
    /// Duplicate names are left for [`validate`] to report, with both places.
    pub fn merge(&mut self, next: Definition) {
        if let Some(kernel) = next.kernel {
            let mine = self.kernel.get_or_insert_with(Kernel::default);
            let Kernel {
                image,
                cmdline,
                binary,
                tar,
                ucode,
                modules,
            } = kernel;
            // As in LinuxKit, an empty image, cmdline or binary does not
            // replace an earlier one; tar and ucode replace when present.
            let set = |v: &Option<String>| v.as_ref().is_some_and(|v| !v.is_empty());
            if image.as_ref().is_some_and(|i| !i.is_empty()) {
                mine.image = image;
            }
            if set(&cmdline) {
                mine.cmdline = cmdline;
            }
            if set(&binary) {
                mine.binary = binary;
            }
            mine.tar = tar.or(mine.tar.take());
            mine.ucode = ucode.or(mine.ucode.take());
            mine.modules = modules.or(mine.modules.take());
        }
        self.init.extend(next.init);
        self.onboot.extend(next.onboot);
        self.onshutdown.extend(next.onshutdown);
        self.services.extend(next.services);
        self.files.extend(next.files);
        self.volumes.extend(next.volumes);
        if next.boot.is_some() {
            self.boot = next.boot;
        }
        if let Some(trust) = next.trust {
            let mine = self.trust.get_or_insert_with(Trust::default);
            for (list, more) in [(&mut mine.image, trust.image), (&mut mine.org, trust.org)] {
                if let Some(more) = more {
                    list.get_or_insert_with(Vec::new).extend(more);
                }
            }
            // Keys keep the file they were written in (their paths are
            // relative to it); a name given twice is the policy's to judge.
            mine.keys.extend(trust.keys);
            mine.images.extend(trust.images);
        }
    }

    /// Every image reference the definition names, with where it is named.
    /// Every image reference, to rewrite in place (`@pkg:` templates).
    pub fn image_references_mut(&mut self) -> Vec<&mut Located<String>> {
        let kernel = self.kernel.iter_mut().filter_map(|k| k.image.as_mut());
        let entries = self
            .onboot
            .iter_mut()
            .chain(self.onshutdown.iter_mut())
            .chain(self.services.iter_mut())
            .filter_map(|i| i.image.as_mut());
        let volumes = self.volumes.iter_mut().filter_map(|v| v.image.as_mut());
        let boot = self.boot.iter_mut().map(|b| &mut b.image);
        kernel
            .chain(self.init.iter_mut())
            .chain(entries)
            .chain(volumes)
            .chain(boot)
            .collect()
    }

    pub fn image_references(&self) -> Vec<&Located<String>> {
        let kernel = self.kernel.iter().filter_map(|k| k.image.as_ref());
        let entries = self
            .onboot
            .iter()
            .chain(&self.onshutdown)
            .chain(&self.services)
            .filter_map(|i| i.image.as_ref());
        let volumes = self.volumes.iter().filter_map(|v| v.image.as_ref());
        let boot = self.boot.iter().map(|b| &b.image);
        kernel
            .chain(&self.init)
            .chain(entries)
            .chain(volumes)
            .chain(boot)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `boot:` names the image of boot loaders; a later file's replaces an
    /// earlier one's, and it is one of the definition's image references.
    #[test]
    fn the_boot_image_is_read_merged_and_resolved_like_the_others() {
        let first = parse("boot:\n  image: \"@pkg:../images/boot\"\n", &"a.yml".into()).unwrap();
        let second = parse("boot:\n  image: example.org/boot:1\n", &"b.yml".into()).unwrap();
        let mut merged = first.clone();
        merged.merge(Definition::default());
        assert_eq!(merged.boot, first.boot);
        merged.merge(second);
        let boot = merged.boot.as_ref().unwrap();
        assert_eq!(boot.image.value, "example.org/boot:1");
        assert_eq!(boot.image.position(), "b.yml:2:10");
        assert_eq!(merged.image_references(), vec![&boot.image]);
        assert!(parse("boot:\n  image: x\n  loader: grub\n", &"c.yml".into()).is_err());
        let bad = parse("boot:\n  image: UPPER/Bad\n", &"d.yml".into()).unwrap();
        let problems = validate(&bad).unwrap_err().to_string();
        assert!(
            problems.contains("d.yml:2:10: boot.image: invalid image reference \"UPPER/Bad\""),
            "{problems}"
        );
    }
}
