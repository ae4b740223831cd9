//! OCI runtime bundles: the `config.json` and `runtime.json` of one
//! `onboot`, `onshutdown` or `services` entry, as LinuxKit's `ConfigToOCI`
//! and `ImageBundle` make them (docs/linuxkit-runtime.md §1, §2, §3.3, §4).
//!
//! This module owns the merge of an entry with what its image says (YAML
//! over the `org.mobyproject.config` label over the image config over
//! LinuxKit's defaults), the uid/gid numbers that entry names stand for
//! ([`IdMap`]), and the exact bytes of both files.
//! It does no I/O.
//! It leaves to others what comes before and after: fetching the image config
//! and parsing its label, rewriting volume names in `binds`
//! (docs/linuxkit-runtime.md §1.12), choosing
//! the bundle's directory and which bundle holds an image's files (the caller
//! passes `bundle_dir` and `root_source`), and writing the tree.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use contract::{Interface, Mount as RuntimeMount, Runtime};
use oci_spec::runtime::{
    Capability, Linux, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceType, Mount, Process, Root, Spec,
};
use serde::Serialize;
use serde_json::Value;

use crate::spec::{Container, IdMapping};

mod go_json;
mod ids;
mod merge;
pub mod seccomp;

use go_json::{Ordered, to_json};
pub use ids::IdMap;
use merge::Merge;

/// The runtime-spec version LinuxKit vendors (`specs.Version`).
const OCI_VERSION: &str = "1.2.1";

/// What the image itself says: from its OCI image config (`config` object of
/// the config blob).
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageDefaults<'a> {
    pub entrypoint: &'a [String],
    pub cmd: &'a [String],
    pub env: &'a [String],
    pub working_dir: Option<&'a str>,
    /// The parsed `org.mobyproject.config` label.
    pub label: Option<&'a Container>,
}

impl<'a> ImageDefaults<'a> {
    /// What an image's configuration blob and label contribute; an image
    /// without a `config` object contributes only its label.
    pub fn of(
        image: &'a oci_spec::image::ImageConfiguration,
        label: Option<&'a Container>,
    ) -> Self {
        match image.config() {
            Some(config) => ImageDefaults::from_config(config, label),
            None => ImageDefaults {
                label,
                ..ImageDefaults::default()
            },
        }
    }

    /// The fields LinuxKit reads from an image config; `User`, `Volumes` and
    /// the rest are ignored, as in LinuxKit (docs/linuxkit-runtime.md §0).
    pub fn from_config(config: &'a oci_spec::image::Config, label: Option<&'a Container>) -> Self {
        ImageDefaults {
            entrypoint: config.entrypoint().as_deref().unwrap_or_default(),
            cmd: config.cmd().as_deref().unwrap_or_default(),
            env: config.env().as_deref().unwrap_or_default(),
            working_dir: config.working_dir().as_deref(),
            label,
        }
    }
}

/// The finished bundle metadata for one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub spec: Spec,
    /// Exactly what `runtime.json` holds: the entry's merged `runtime` with
    /// the mounts that make the bundle's `rootfs` first
    /// (docs/linuxkit-runtime.md §3.3).
    pub runtime: Runtime,
    pub readonly: bool,
    /// `process.capabilities.effective` and `.ambient` in the order they were
    /// written; [`Spec`] keeps capabilities as hash sets.
    effective: Vec<&'static str>,
    ambient: Vec<&'static str>,
}

impl Bundle {
    /// `entry` is the YAML entry; `bundle_dir` is the bundle's path relative
    /// to `/`, e.g. `containers/onboot/000-dhcpcd`; `root_source` is the
    /// directory (relative to `/`) holding the image's files:
    /// `<bundle_dir>/rootfs` for readonly bundles, `<bundle_dir>/lower` for
    /// writable ones, or another bundle's directory when the same image is
    /// shared (the caller decides, after asking [`Bundle::readonly`]).
    pub fn make(
        entry: &Container,
        defaults: &ImageDefaults,
        ids: &IdMap,
        bundle_dir: &str,
        root_source: &str,
    ) -> Result<Bundle, BundleError> {
        let no_label = Container::default();
        let merge = Merge {
            entry,
            label: defaults.label.unwrap_or(&no_label),
        };
        let readonly = Bundle::readonly(entry, defaults);
        let (effective, ambient) = merge.capabilities()?;

        // oci-spec's defaults are Docker's (`sh`, default capabilities,
        // masked paths, namespaces…), none of which LinuxKit writes: every
        // field below is set, most to nothing.
        let mut capabilities = LinuxCapabilities::default();
        let bounding: BTreeSet<&str> = effective.iter().chain(&ambient).copied().collect();
        let bounding: Vec<&str> = bounding.into_iter().collect();
        capabilities
            .set_bounding(merge.capability_set(&bounding)?)
            .set_effective(merge.capability_set(&effective)?)
            .set_inheritable(merge.capability_set(&bounding)?)
            .set_permitted(merge.capability_set(&bounding)?)
            .set_ambient(merge.capability_set(&ambient)?);

        let mut process = Process::default();
        process
            .set_terminal(None)
            .set_console_size(None)
            .set_user(merge.user(ids)?)
            .set_args(non_empty(merge.args(defaults)))
            .set_command_line(None)
            .set_env(non_empty(merge.env(defaults)))
            .set_cwd(merge.cwd(defaults).into())
            .set_capabilities(Some(capabilities))
            .set_rlimits(non_empty(merge.rlimits()?))
            .set_no_new_privileges(merge.pick(|i| i.no_new_privileges).filter(|n| *n))
            .set_apparmor_profile(None)
            .set_oom_score_adj(merge.pick(|i| i.oom_score_adj))
            .set_selinux_label(None)
            .set_io_priority(None)
            .set_scheduler(None)
            .set_exec_cpu_affinity(None);

        let mut root = Root::default();
        root.set_path("rootfs".into())
            .set_readonly(readonly.then_some(true));

        let (resources, devices) = merge.devices()?;
        let mut linux = Linux::default();
        linux
            .set_net_devices(None)
            .set_uid_mappings(id_mappings(merge.pick_ref(|i| i.uid_mappings.as_ref())))
            .set_gid_mappings(id_mappings(merge.pick_ref(|i| i.gid_mappings.as_ref())))
            .set_sysctl(merge.sysctl())
            .set_resources(Some(resources))
            .set_cgroups_path(
                merge
                    .optional_text(|i| i.cgroups_path.as_deref())
                    .map(PathBuf::from),
            )
            .set_namespaces(Some(merge.namespaces()?))
            .set_devices(non_empty(devices))
            .set_seccomp(seccomp_profile(entry, merge.label, &bounding)?)
            .set_rootfs_propagation(
                merge.optional_text(|i| i.rootfs_propagation.as_ref().map(|p| p.as_str())),
            )
            .set_masked_paths(merge.list(|i| i.masked_paths.as_ref()))
            .set_readonly_paths(merge.list(|i| i.readonly_paths.as_ref()))
            .set_mount_label(None)
            .set_intel_rdt(None)
            .set_memory_policy(None)
            .set_personality(None)
            .set_time_offsets(None);

        let annotations = merge
            .pick_ref(|i| i.annotations.as_ref())
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>()
            });

        let mut spec = Spec::default();
        spec.set_version(OCI_VERSION.into())
            .set_process(Some(process))
            .set_root(Some(root))
            .set_hostname(merge.text(|i| i.hostname.as_deref()).map(String::from))
            .set_domainname(None)
            .set_mounts(Some(merge.mounts(readonly)?))
            .set_hooks(None)
            .set_annotations(annotations)
            .set_linux(Some(linux))
            .set_solaris(None)
            .set_windows(None)
            .set_vm(None)
            .set_zos(None);

        let runtime = merge.runtime(rootfs_mounts(bundle_dir, root_source, readonly));
        Ok(Bundle {
            spec,
            runtime,
            readonly,
            effective,
            ambient,
        })
    }

    /// Whether the bundle's root is readonly: YAML, else label, else false.
    /// It also decides the bundle's layout (docs/linuxkit-runtime.md §3.2).
    pub fn readonly(entry: &Container, defaults: &ImageDefaults) -> bool {
        entry
            .readonly
            .or(defaults.label.and_then(|l| l.readonly))
            .unwrap_or(false)
    }

    /// `config.json` bytes: pretty JSON with 4-space indentation in the
    /// runtime-spec's key order, followed by a newline. Deterministic.
    pub fn config_json(&self) -> Vec<u8> {
        let mut value =
            serde_json::to_value(&self.spec).expect("an OCI runtime spec always serialises");
        if let Some(capabilities) = value
            .pointer_mut("/process/capabilities")
            .and_then(Value::as_object_mut)
        {
            for (set, names) in capabilities.iter_mut() {
                let written = match set.as_str() {
                    "effective" => Some(&self.effective),
                    "ambient" => Some(&self.ambient),
                    _ => None,
                };
                order_capabilities(names, written.map(Vec::as_slice));
            }
        }
        to_json(&Ordered {
            value: &value,
            path: String::new(),
        })
    }

    /// `runtime.json` bytes: same formatting; all six keys always present and
    /// `bindNS` with all seven, as LinuxKit writes them
    /// (docs/linuxkit-runtime.md §2.1).
    pub fn runtime_json(&self) -> Vec<u8> {
        let runtime = &self.runtime;
        let bind = &runtime.bind_namespaces;
        fn text(t: &Option<String>) -> &str {
            t.as_deref().unwrap_or_default()
        }
        to_json(&RuntimeJson {
            cgroups: runtime.cgroups.as_deref().unwrap_or_default(),
            mounts: runtime.mounts.as_deref().unwrap_or_default(),
            mkdir: runtime.mkdir.as_deref().unwrap_or_default(),
            interfaces: runtime.interfaces.as_deref().unwrap_or_default(),
            bind_namespaces: BindNamespacesJson {
                cgroup: text(&bind.cgroup),
                ipc: text(&bind.ipc),
                mnt: text(&bind.mnt),
                net: text(&bind.net),
                pid: text(&bind.pid),
                user: text(&bind.user),
                uts: text(&bind.uts),
            },
            namespace: text(&runtime.namespace),
            restart: runtime.restart,
            depends: runtime.depends.as_deref(),
            healthcheck: runtime.healthcheck.as_ref(),
        })
    }
}

/// Sorts a capability list byte-wise, as LinuxKit does for the bounding,
/// inheritable and permitted sets, or puts it back in the `written` order
/// when that is the same set.
fn order_capabilities(names: &mut Value, written: Option<&[&'static str]>) {
    let Some(items) = names.as_array_mut() else {
        return;
    };
    let mut sorted: Vec<String> = items
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    sorted.sort();
    let ordered = match written {
        Some(written) => {
            let mut same: Vec<&str> = written.to_vec();
            same.sort_unstable();
            if same == sorted {
                written.iter().map(|n| n.to_string()).collect()
            } else {
                sorted
            }
        }
        None => sorted,
    };
    *items = ordered.into_iter().map(Value::String).collect();
}

fn non_empty<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

/// `uidMappings`/`gidMappings` with `containerID` and `hostID` honoured
/// (LinuxKit's YAML decoder drops both, docs/linuxkit-runtime.md §1.10; berth
/// does not copy that).
fn id_mappings(mappings: Option<&Vec<IdMapping>>) -> Option<Vec<LinuxIdMapping>> {
    let mappings = mappings.into_iter().flatten().map(|m| {
        LinuxIdMappingBuilder::default()
            .container_id(m.container_id)
            .host_id(m.host_id)
            .size(m.size)
            .build()
            .expect("every field of an id mapping is set")
    });
    non_empty(mappings.collect())
}

/// The kernel filesystems whose mount type can be taken from the source and
/// whose destination is known (docs/linuxkit-runtime.md §1.4).
const KERNEL_FILESYSTEMS: &[(&str, &str)] = &[
    ("proc", "/proc"),
    ("devpts", "/dev/pts"),
    ("sysfs", "/sys"),
    ("cgroup", "/sys/fs/cgroup"),
    ("mqueue", "/dev/mqueue"),
];

/// LinuxKit's default mounts: destination, type (also the source), options.
/// `/dev` and `/sys` get `ro` too when the root is readonly.
const DEFAULT_MOUNTS: &[(&str, &str, &[&str])] = &[
    ("/proc", "proc", &["nosuid", "nodev", "noexec", "relatime"]),
    (
        "/dev",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    ),
    ("/sys", "sysfs", &["nosuid", "noexec", "nodev"]),
    (
        "/sys/fs/cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ),
];

fn oci_mount(destination: &str, kind: &str, source: &str, options: Option<Vec<String>>) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(destination.into())
        .set_typ(Some(kind.into()))
        .set_source(Some(source.into()))
        .set_options(options);
    mount
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The runtime.json mounts that make `<bundle_dir>/rootfs`
/// (docs/linuxkit-runtime.md §3.3): an
/// overlay over a private tmpfs for a writable bundle, a bind for a readonly
/// one (a self-bind when the bundle holds the image itself, so that rootfs
/// is a mount point, as runc prefers).
fn rootfs_mounts(bundle_dir: &str, root_source: &str, readonly: bool) -> Vec<RuntimeMount> {
    let bundle = format!("/{}", bundle_dir.trim_matches('/'));
    let source = format!("/{}", root_source.trim_matches('/'));
    let rootfs = format!("{bundle}/rootfs");
    if readonly {
        return vec![RuntimeMount {
            destination: rootfs,
            kind: None,
            source: Some(source),
            options: Some(strings(&["bind"])),
        }];
    }
    let tmp = format!("{bundle}/tmp");
    vec![
        RuntimeMount {
            destination: tmp.clone(),
            kind: Some("tmpfs".into()),
            source: Some("tmpfs".into()),
            options: None,
        },
        RuntimeMount {
            destination: tmp.clone(),
            kind: None,
            source: None,
            options: Some(strings(&["remount", "private"])),
        },
        RuntimeMount {
            destination: rootfs,
            kind: Some("overlay".into()),
            source: Some("overlay".into()),
            options: Some(vec![
                format!("lowerdir={source}"),
                format!("upperdir={tmp}/upper"),
                format!("workdir={tmp}/work"),
            ]),
        },
    ]
}

fn namespace(kind: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut namespace = LinuxNamespace::default();
    namespace.set_typ(kind).set_path(path);
    namespace
}

/// The oci-spec value of a capability named as in [`spec::CAPABILITIES`].
fn to_capability(name: &str) -> Option<Capability> {
    serde_json::from_value(Value::from(name)).ok()
}

/// `runtime.json` as LinuxKit writes it: every key, empty or not
/// (docs/linuxkit-runtime.md §2.1).
#[derive(Serialize)]
struct RuntimeJson<'a> {
    cgroups: &'a [String],
    mounts: &'a [RuntimeMount],
    mkdir: &'a [String],
    interfaces: &'a [Interface],
    #[serde(rename = "bindNS")]
    bind_namespaces: BindNamespacesJson<'a>,
    namespace: &'a str,
    /// berth's own keys, written only when the definition uses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<contract::Restart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<&'a contract::Healthcheck>,
}

#[derive(Serialize)]
struct BindNamespacesJson<'a> {
    cgroup: &'a str,
    ipc: &'a str,
    mnt: &'a str,
    net: &'a str,
    pid: &'a str,
    user: &'a str,
    uts: &'a str,
}

/// Why an entry cannot be made into a bundle. Each message names the entry
/// and, where known, the position (`file:line:column`) and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A `uid`, `gid` or `additionalGids` names no entry of the definition.
    #[error("{}no entry is named {name:?}, so it cannot stand for a user or group id", place(.entry, .position, .key))]
    UnknownId {
        entry: String,
        key: String,
        name: String,
        position: String,
    },
    #[error("{}unknown capability {value:?}", place(.entry, .position, .key))]
    UnknownCapability {
        entry: String,
        key: String,
        value: String,
        position: String,
    },
    /// An `rlimits` entry that does not parse; the message names it.
    #[error("{}{message}", place(.entry, .position, "rlimits"))]
    Rlimit {
        entry: String,
        position: String,
        message: String,
    },
    #[error("{}{message}", place(.entry, .position, "binds"))]
    Bind {
        entry: String,
        position: String,
        message: String,
    },
    #[error("{}{message}", place(.entry, .position, "tmpfs"))]
    Tmpfs {
        entry: String,
        position: String,
        message: String,
    },
    #[error("{}{message}", place(.entry, "", "mounts"))]
    Mount { entry: String, message: String },
    #[error("{}{message}", place(.entry, .position, "devices"))]
    Device {
        entry: String,
        position: String,
        message: String,
    },
    /// `seccomp`: a profile that cannot be read or used; the message names
    /// the file and what is wrong in it.
    #[error("{}{message}", place(.entry, .position, "seccomp"))]
    Seccomp {
        entry: String,
        position: String,
        message: String,
    },
    #[error("{}namespace {value:?} must be host, new or an absolute path{}", place(.entry, .position, .key), if .key == "net" { " (or none)" } else { "" })]
    Namespace {
        entry: String,
        key: String,
        value: String,
        position: String,
    },
}

/// The entry's seccomp profile (YAML over label), in the OCI form for a
/// process whose bounding set is `bounding` ([`seccomp`]): none for
/// `unconfined` or a process given every capability, Docker's default
/// unless a file is named.
fn seccomp_profile(
    entry: &Container,
    label: &Container,
    bounding: &[&str],
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, BundleError> {
    let bounding: BTreeSet<&str> = bounding.iter().copied().collect();
    let chosen = entry.seccomp.as_ref().or(label.seccomp.as_ref());
    let failed = |message: String| BundleError::Seccomp {
        entry: entry.name().into(),
        position: chosen.map(|c| c.position()).unwrap_or_default(),
        message,
    };
    let privileged = crate::spec::values::CAPABILITIES
        .iter()
        .all(|c| bounding.contains(c));
    let profile = match chosen {
        Some(c) if c.value == "unconfined" => return Ok(None),
        None if privileged => return Ok(None),
        Some(c) if c.value == "default" && privileged => return Ok(None),
        None => seccomp::default_profile(),
        Some(c) if c.value == "default" => seccomp::default_profile(),
        Some(file) => {
            let path = crate::assemble::resolve_source(&file.value, file.origin.as_deref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            seccomp::parse(&text).map_err(|e| failed(format!("{}: {e}", path.display())))?
        }
    };
    let oci = seccomp::to_oci(&profile, &bounding);
    serde_json::from_value(oci)
        .map(Some)
        .map_err(|e| failed(e.to_string()))
}

impl BundleError {
    /// Names the entry and key of an error from [`IdMap::resolve`], which
    /// knows neither.
    fn in_entry(self, name: &str, at: &str) -> Self {
        match self {
            BundleError::UnknownId {
                name: id, position, ..
            } => BundleError::UnknownId {
                entry: name.into(),
                key: at.into(),
                name: id,
                position,
            },
            other => other,
        }
    }
}

/// `entry "NAME": POSITION: KEY: `, leaving out what is not known.
fn place(entry: &str, position: &str, key: &str) -> String {
    let mut place = String::new();
    if !entry.is_empty() {
        place.push_str(&format!("entry {entry:?}: "));
    }
    for part in [position, key] {
        if !part.is_empty() {
            place.push_str(part);
            place.push_str(": ");
        }
    }
    place
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    #[test]
    fn capabilities_keep_written_order_only_for_the_same_set() {
        let mut names = serde_json::json!(["CAP_SYS_ADMIN", "CAP_CHOWN"]);
        order_capabilities(&mut names, Some(&["CAP_SYS_ADMIN", "CAP_CHOWN"]));
        assert_eq!(names, serde_json::json!(["CAP_SYS_ADMIN", "CAP_CHOWN"]));
        order_capabilities(&mut names, Some(&["CAP_KILL"]));
        assert_eq!(names, serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN"]));
        // Byte-wise: CAP_SYSLOG before CAP_SYS_ADMIN.
        let mut names = serde_json::json!(["CAP_SYS_ADMIN", "CAP_SYSLOG"]);
        order_capabilities(&mut names, None);
        assert_eq!(names, serde_json::json!(["CAP_SYSLOG", "CAP_SYS_ADMIN"]));
    }

    #[test]
    fn every_known_capability_has_an_oci_spec_value() {
        for name in spec::CAPABILITIES {
            assert!(to_capability(name).is_some(), "{name}");
        }
    }

    #[test]
    fn rootfs_of_a_shared_writable_image_is_an_overlay_on_the_other_bundle() {
        let mounts = rootfs_mounts(
            "containers/onboot/001-b",
            "/containers/onboot/000-a/lower",
            false,
        );
        assert_eq!(
            mounts[2].options.as_deref().unwrap(),
            [
                "lowerdir=/containers/onboot/000-a/lower",
                "upperdir=/containers/onboot/001-b/tmp/upper",
                "workdir=/containers/onboot/001-b/tmp/work"
            ]
        );
    }

    #[test]
    fn rootfs_of_a_shared_readonly_image_binds_the_other_bundle() {
        let mounts = rootfs_mounts(
            "containers/services/b",
            "containers/services/a/rootfs",
            true,
        );
        assert_eq!(
            mounts,
            [RuntimeMount {
                destination: "/containers/services/b/rootfs".into(),
                kind: None,
                source: Some("/containers/services/a/rootfs".into()),
                options: Some(vec!["bind".into()]),
            }]
        );
    }
}
