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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use contract::{BindNamespaces, Interface, Mount as RuntimeMount, Runtime};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxDevice, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
    LinuxResources, Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
    User,
};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use serde_json::ser::{Formatter, PrettyFormatter};

use crate::spec::{self, Container, Definition, IdMapping, IdRef, Located};

/// The runtime-spec version LinuxKit vendors (`specs.Version`).
const OCI_VERSION: &str = "1.2.1";

/// The first number LinuxKit hands out to an entry (`Build` in build.go).
const FIRST_ID: u32 = 100;

/// name → uid/gid number for entries named by other entries' uid/gid, as
/// LinuxKit allocates them: 100, 101, … over onboot, then onshutdown, then
/// services (a repeated name takes the later number; docs/linuxkit-runtime.md §1.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap(BTreeMap<String, u32>);

impl IdMap {
    pub fn new(definition: &Definition) -> IdMap {
        let entries = definition
            .onboot
            .iter()
            .chain(&definition.onshutdown)
            .chain(&definition.services);
        // Every entry takes a number, named or not; collecting into a map
        // keeps the last number of a repeated name.
        let numbered = entries
            .zip(FIRST_ID..)
            .filter_map(|(image, id)| image.name.as_ref().map(|n| (n.value.clone(), id)));
        IdMap(numbered.collect())
    }

    /// `IdRef::Number(n)` → n; `Name("" | "root")` → 0; other names looked
    /// up; an unknown name is an error naming it and its position.
    pub fn resolve(&self, id: &Located<IdRef>) -> Result<u32, BundleError> {
        match &id.value {
            IdRef::Number(n) => Ok(*n),
            IdRef::Name(name) if name.is_empty() || name == "root" => Ok(0),
            IdRef::Name(name) => self.get(name).ok_or_else(|| BundleError::UnknownId {
                entry: String::new(),
                key: String::new(),
                name: name.clone(),
                position: id.position(),
            }),
        }
    }

    /// The number allocated to the entry called `name`.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.0.get(name).copied()
    }
}

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
            .set_seccomp(None)
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

/// One entry and its image's label, merged field by field: YAML if set, else
/// label if set (docs/linuxkit-runtime.md §0.1).
struct Merge<'a> {
    entry: &'a Container,
    label: &'a Container,
}

impl<'a> Merge<'a> {
    fn name(&self) -> &'a str {
        self.entry.name()
    }

    fn pick<T>(&self, field: impl Fn(&'a Container) -> Option<T>) -> Option<T> {
        field(self.entry).or_else(|| field(self.label))
    }

    fn pick_ref<T: ?Sized>(&self, field: impl Fn(&'a Container) -> Option<&'a T>) -> Option<&'a T> {
        self.pick(field)
    }

    /// A list field; an empty result is left out.
    fn list<T: Clone + 'a>(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a Vec<T>>,
    ) -> Option<Vec<T>> {
        self.pick_ref(field).cloned().and_then(non_empty)
    }

    /// For the fields LinuxKit keeps as plain strings (`cwd`, `hostname`,
    /// the namespaces): an empty string is the same as unset, so it cannot
    /// clear the label's value.
    fn text(&self, field: impl Fn(&'a Container) -> Option<&'a str>) -> Option<&'a str> {
        self.pick(|i| field(i).filter(|t| !t.is_empty()))
    }

    /// For the fields LinuxKit keeps as `*string` (`cgroupsPath`,
    /// `rootfsPropagation`): a set empty string overrides, and an empty
    /// result is left out.
    fn optional_text(&self, field: impl Fn(&'a Container) -> Option<&'a str>) -> Option<String> {
        self.pick(field).filter(|t| !t.is_empty()).map(String::from)
    }

    fn located(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a Located<String>>,
    ) -> Option<&'a Located<String>> {
        self.pick(|i| field(i).filter(|t| !t.is_empty()))
    }

    /// `command` replaces both the image's entrypoint and its cmd
    /// (docs/linuxkit-runtime.md §1.1).
    fn args(&self, defaults: &ImageDefaults) -> Vec<String> {
        match self.pick_ref(|i| i.command.as_ref()) {
            Some(command) => command.clone(),
            None => defaults
                .entrypoint
                .iter()
                .chain(defaults.cmd)
                .cloned()
                .collect(),
        }
    }

    fn env(&self, defaults: &ImageDefaults) -> Vec<String> {
        match self.pick_ref(|i| i.env.as_ref()) {
            Some(env) => env.iter().map(|e| e.value.clone()).collect(),
            None => defaults.env.to_vec(),
        }
    }

    fn cwd(&self, defaults: &ImageDefaults) -> String {
        let image = defaults.working_dir.filter(|d| !d.is_empty());
        self.text(|i| i.cwd.as_deref())
            .or(image)
            .unwrap_or("/")
            .to_string()
    }

    fn user(&self, ids: &IdMap) -> Result<User, BundleError> {
        let resolve = |id: &Located<IdRef>, key: &str| {
            ids.resolve(id).map_err(|e| e.in_entry(self.name(), key))
        };
        let uid = match self.pick_ref(|i| i.uid.as_ref()) {
            Some(id) => resolve(id, "uid")?,
            None => 0,
        };
        let gid = match self.pick_ref(|i| i.gid.as_ref()) {
            Some(id) => resolve(id, "gid")?,
            None => 0,
        };
        let additional = self
            .pick_ref(|i| i.additional_gids.as_ref())
            .into_iter()
            .flatten()
            .map(|id| resolve(id, "additionalGids"))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut user = User::default();
        user.set_uid(uid)
            .set_gid(gid)
            .set_additional_gids(non_empty(additional));
        Ok(user)
    }

    /// `effective` and `ambient`, normalised and in the order written
    /// (docs/linuxkit-runtime.md §1.3).
    /// The entry's `capabilities` replace the label's; otherwise its
    /// `capabilities.add` is appended to them.
    fn capabilities(&self) -> Result<(Vec<&'static str>, Vec<&'static str>), BundleError> {
        let effective: Vec<&Located<String>> = match &self.entry.capabilities {
            Some(capabilities) => capabilities.iter().collect(),
            None => self
                .label
                .capabilities
                .iter()
                .flatten()
                .chain(self.entry.capabilities_add.iter().flatten())
                .collect(),
        };
        let ambient: Vec<&Located<String>> = self
            .pick_ref(|i| i.ambient.as_ref())
            .into_iter()
            .flatten()
            .collect();
        Ok((
            self.capability_list("capabilities", &effective)?,
            self.capability_list("ambient", &ambient)?,
        ))
    }

    /// Normalises names with [`spec::capability`] and drops repeats; `all`
    /// stands for every capability in number order and `none` for nothing.
    /// LinuxKit honours `all`/`none` only as the single element and rejects
    /// them beside others (label `[all]` plus `capabilities.add`); berth reads
    /// them the obvious way instead.
    fn capability_list(
        &self,
        key: &str,
        names: &[&Located<String>],
    ) -> Result<Vec<&'static str>, BundleError> {
        let mut list: Vec<&'static str> = Vec::new();
        for name in names {
            let found: Vec<&'static str> = if name.eq_ignore_ascii_case("all") {
                spec::CAPABILITIES.to_vec()
            } else if name.eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                let known = spec::capability(name).filter(|c| to_capability(c).is_some());
                vec![known.ok_or_else(|| BundleError::UnknownCapability {
                    entry: self.name().into(),
                    key: key.into(),
                    value: name.value.clone(),
                    position: name.position(),
                })?]
            };
            for capability in found {
                if !list.contains(&capability) {
                    list.push(capability);
                }
            }
        }
        Ok(list)
    }

    /// `None` for an empty list, as LinuxKit leaves empty sets out.
    fn capability_set(&self, names: &[&str]) -> Result<Option<Capabilities>, BundleError> {
        let set = names
            .iter()
            .map(|n| {
                to_capability(n).ok_or_else(|| BundleError::UnknownCapability {
                    entry: self.name().into(),
                    key: "capabilities".into(),
                    value: n.to_string(),
                    position: String::new(),
                })
            })
            .collect::<Result<Capabilities, _>>()?;
        Ok((!set.is_empty()).then_some(set))
    }

    fn rlimits(&self) -> Result<Vec<PosixRlimit>, BundleError> {
        let mut rlimits = Vec::new();
        for text in self.pick_ref(|i| i.rlimits.as_ref()).into_iter().flatten() {
            let error = |message: String| BundleError::Rlimit {
                entry: self.name().into(),
                position: text.position(),
                message,
            };
            let parsed = spec::rlimit(text).map_err(error)?;
            let kind = PosixRlimitType::from_str(parsed.name)
                .map_err(|_| error(format!("unknown rlimit {:?}", parsed.name)))?;
            let rlimit = PosixRlimitBuilder::default()
                .typ(kind)
                .hard(parsed.hard)
                .soft(parsed.soft)
                .build()
                .expect("every field of an rlimit is set");
            rlimits.push(rlimit);
        }
        Ok(rlimits)
    }

    /// The five defaults, then `tmpfs`, `binds` and `mounts`, each replacing
    /// an earlier mount at the same destination; sorted by destination
    /// (docs/linuxkit-runtime.md §1.4).
    fn mounts(&self, readonly: bool) -> Result<Vec<Mount>, BundleError> {
        let mut by_destination: BTreeMap<String, Mount> = BTreeMap::new();
        for (destination, kind, options) in DEFAULT_MOUNTS {
            let mut options = strings(options);
            if readonly && (*destination == "/dev" || *destination == "/sys") {
                options.push("ro".into());
            }
            let mount = oci_mount(destination, kind, kind, Some(options));
            by_destination.insert(destination.to_string(), mount);
        }

        for tmpfs in self.pick_ref(|i| i.tmpfs.as_ref()).into_iter().flatten() {
            let error = |message: String| BundleError::Tmpfs {
                entry: self.name().into(),
                position: tmpfs.position(),
                message,
            };
            let parts: Vec<&str> = tmpfs.split(':').collect();
            let (destination, options) = match parts[..] {
                [destination] => (destination, None),
                [destination, options] => (destination, Some(options)),
                _ => {
                    return Err(error(format!(
                        "tmpfs {:?} has more than one ':' (destination[:options])",
                        tmpfs.value
                    )));
                }
            };
            if !destination.starts_with('/') {
                return Err(error(format!(
                    "tmpfs {:?}: destination must be an absolute path",
                    tmpfs.value
                )));
            }
            let options = options
                .map(|o| {
                    o.split(',')
                        .filter(|o| !o.is_empty())
                        .map(String::from)
                        .collect()
                })
                .and_then(non_empty);
            let mount = oci_mount(destination, "tmpfs", "tmpfs", options);
            by_destination.insert(destination.into(), mount);
        }

        let binds: Vec<&Located<String>> = match &self.entry.binds {
            Some(binds) => binds.iter().collect(),
            None => self
                .label
                .binds
                .iter()
                .flatten()
                .chain(self.entry.binds_add.iter().flatten())
                .collect(),
        };
        for text in binds {
            let bind = spec::bind(text).map_err(|message| BundleError::Bind {
                entry: self.name().into(),
                position: text.position(),
                message,
            })?;
            // With options given, LinuxKit appends rbind to them (even when
            // already there); without, a bind is rw,rbind,rshared.
            let options = if text.split(':').count() == 3 {
                bind.options
                    .iter()
                    .map(|o| o.to_string())
                    .chain(["rbind".into()])
                    .collect()
            } else {
                strings(&["rw", "rbind", "rshared"])
            };
            let mount = oci_mount(bind.destination, "bind", bind.source, Some(options));
            by_destination.insert(bind.destination.into(), mount);
        }

        for mount in self.pick_ref(|i| i.mounts.as_ref()).into_iter().flatten() {
            let mount = self.filled_in(mount)?;
            by_destination.insert(mount.destination().to_string_lossy().into_owned(), mount);
        }
        Ok(by_destination.into_values().collect())
    }

    /// A `mounts` entry with LinuxKit's fill-in rules: the type from a kernel
    /// filesystem source or `/dev`, the source from the type, the destination
    /// from the type.
    fn filled_in(&self, mount: &RuntimeMount) -> Result<Mount, BundleError> {
        let error = |message: String| BundleError::Mount {
            entry: self.name().into(),
            message,
        };
        let source = mount.source.as_deref().filter(|s| !s.is_empty());
        let kernel = source.filter(|s| KERNEL_FILESYSTEMS.iter().any(|(fs, _)| fs == s));
        let dev = (mount.destination == "/dev").then_some("tmpfs");
        let Some(kind) = mount
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .or(kernel)
            .or(dev)
        else {
            return Err(error(format!(
                "mount for destination {:?} has no type",
                mount.destination
            )));
        };
        let destination = if mount.destination.is_empty() {
            let known = KERNEL_FILESYSTEMS.iter().find(|(fs, _)| *fs == kind);
            let Some((_, destination)) = known else {
                return Err(error(format!(
                    "mount of type {kind:?} has no destination (only proc, devpts, sysfs, cgroup and mqueue have a default)"
                )));
            };
            destination
        } else {
            mount.destination.as_str()
        };
        let options = mount.options.clone().and_then(non_empty);
        Ok(oci_mount(
            destination,
            kind,
            source.unwrap_or(kind),
            options,
        ))
    }

    /// `linux.namespaces`, in LinuxKit's order, with the mount namespace
    /// always last (docs/linuxkit-runtime.md §1.5).
    fn namespaces(&self) -> Result<Vec<LinuxNamespace>, BundleError> {
        type Field = for<'i> fn(&'i Container) -> Option<&'i Located<String>>;
        let table: [(&str, Field, LinuxNamespaceType); 5] = [
            ("net", |i| i.net.as_ref(), LinuxNamespaceType::Network),
            ("ipc", |i| i.ipc.as_ref(), LinuxNamespaceType::Ipc),
            ("uts", |i| i.uts.as_ref(), LinuxNamespaceType::Uts),
            ("pid", |i| i.pid.as_ref(), LinuxNamespaceType::Pid),
            ("userns", |i| i.userns.as_ref(), LinuxNamespaceType::User),
        ];
        let mut namespaces = Vec::new();
        for (key, field, kind) in table {
            let path = match self.located(field) {
                // Only the pid namespace is new by default.
                None if kind == LinuxNamespaceType::Pid => None,
                None => continue,
                Some(value) => match value.as_str() {
                    "host" | "root" => continue,
                    "new" => None,
                    // A new network namespace has only loopback: no network.
                    "none" if kind == LinuxNamespaceType::Network => None,
                    path if path.starts_with('/') => Some(PathBuf::from(path)),
                    _ => {
                        return Err(BundleError::Namespace {
                            entry: self.name().into(),
                            key: key.into(),
                            value: value.value.clone(),
                            position: value.position(),
                        });
                    }
                },
            };
            namespaces.push(namespace(kind, path));
        }
        namespaces.push(namespace(LinuxNamespaceType::Mount, None));
        Ok(namespaces)
    }

    /// `linux.resources` with a cgroup rule for every device appended, and
    /// the device nodes (docs/linuxkit-runtime.md §1.8).
    fn devices(&self) -> Result<(LinuxResources, Vec<LinuxDevice>), BundleError> {
        let mut resources = self
            .pick_ref(|i| i.resources.as_ref())
            .map(|r| r.value.clone())
            .unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        let mut nodes = Vec::new();
        for device in self.pick_ref(|i| i.devices.as_ref()).into_iter().flatten() {
            let error = |position: String, message: String| BundleError::Device {
                entry: self.name().into(),
                position,
                message,
            };
            let kind = LinuxDeviceType::from_str(&device.kind).map_err(|_| {
                let message = format!(
                    "device {:?}: unknown type {:?} (a, b, c, u or p)",
                    device.path.value, device.kind
                );
                error(String::new(), message)
            })?;
            let mut rule = LinuxDeviceCgroup::default();
            rule.set_allow(true)
                .set_typ(Some(kind))
                .set_access(Some("rwm".into()));
            // `all` allows every device of the type; no node is made.
            if device.path.as_str() == "all" {
                rules.push(rule);
                continue;
            }
            let Some(mode) = &device.mode else {
                let message = format!("device {:?} has no mode", device.path.value);
                return Err(error(String::new(), message));
            };
            let mode = spec::mode(mode).map_err(|message| {
                error(
                    mode.position(),
                    format!("device {:?}: {message}", device.path.value),
                )
            })?;
            let (major, minor) = (device.major.unwrap_or(0), device.minor.unwrap_or(0));
            rule.set_major(Some(major)).set_minor(Some(minor));
            rules.push(rule);
            let mut node = LinuxDevice::default();
            node.set_path(device.path.value.clone().into())
                .set_typ(kind)
                .set_major(major)
                .set_minor(minor)
                .set_file_mode(Some(mode));
            nodes.push(node);
        }
        resources.set_devices(non_empty(rules));
        Ok((resources, nodes))
    }

    fn sysctl(&self) -> Option<HashMap<String, String>> {
        let sysctl = self.pick_ref(|i| i.sysctl.as_ref())?;
        let sysctl: HashMap<String, String> = sysctl
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        (!sysctl.is_empty()).then_some(sysctl)
    }

    /// Each of `runtime`'s keys, and each `bindNS` entry, independently: YAML
    /// if set, else label if set, else empty (docs/linuxkit-runtime.md §2.2);
    /// `rootfs` goes first.
    fn runtime(&self, rootfs: Vec<RuntimeMount>) -> Runtime {
        let (entry, label) = (self.entry.runtime.as_ref(), self.label.runtime.as_ref());
        let pick = |field: &dyn Fn(&'a Runtime) -> Option<&'a Vec<String>>| {
            entry
                .and_then(field)
                .or_else(|| label.and_then(field))
                .cloned()
                .unwrap_or_default()
        };
        let mounts = entry
            .and_then(|r| r.mounts.as_ref())
            .or_else(|| label.and_then(|r| r.mounts.as_ref()))
            .into_iter()
            .flatten()
            .map(|m| RuntimeMount {
                destination: m.destination.clone(),
                kind: m.kind.clone().filter(|k| !k.is_empty()),
                source: m.source.clone().filter(|s| !s.is_empty()),
                options: m.options.clone().and_then(non_empty),
            });
        let interfaces: Vec<Interface> = entry
            .and_then(|r| r.interfaces.as_ref())
            .or_else(|| label.and_then(|r| r.interfaces.as_ref()))
            .cloned()
            .unwrap_or_default();
        let bind = |field: fn(&BindNamespaces) -> &Option<String>| {
            let of = |r: Option<&'a Runtime>| r.and_then(|r| field(&r.bind_namespaces).clone());
            of(entry).or_else(|| of(label))
        };
        Runtime {
            cgroups: Some(pick(&|r| r.cgroups.as_ref())),
            mounts: Some(rootfs.into_iter().chain(mounts).collect()),
            mkdir: Some(pick(&|r| r.mkdir.as_ref())),
            interfaces: Some(interfaces),
            bind_namespaces: BindNamespaces {
                cgroup: bind(|b| &b.cgroup),
                ipc: bind(|b| &b.ipc),
                mnt: bind(|b| &b.mnt),
                net: bind(|b| &b.net),
                pid: bind(|b| &b.pid),
                user: bind(|b| &b.user),
                uts: bind(|b| &b.uts),
            },
            namespace: entry
                .and_then(|r| r.namespace.clone())
                .or_else(|| label.and_then(|r| r.namespace.clone())),
            restart: entry
                .and_then(|r| r.restart)
                .or_else(|| label.and_then(|r| r.restart)),
            depends: entry
                .and_then(|r| r.depends.clone())
                .or_else(|| label.and_then(|r| r.depends.clone())),
            healthcheck: entry
                .and_then(|r| r.healthcheck.clone())
                .or_else(|| label.and_then(|r| r.healthcheck.clone())),
        }
    }
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

/// Pretty JSON as Go's `json.MarshalIndent(v, "", "    ")` writes it, plus a
/// final newline, which LinuxKit does not write
/// (docs/linuxkit-runtime.md §4.1, §4.4).
fn to_json(value: &impl Serialize) -> Vec<u8> {
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
struct Ordered<'a> {
    value: &'a Value,
    /// The dotted key path of `value`; list items share their list's path.
    path: String,
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
        _ => &[],
    }
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
    #[error("{}namespace {value:?} must be host, new or an absolute path{}", place(.entry, .position, .key), if .key == "net" { " (or none)" } else { "" })]
    Namespace {
        entry: String,
        key: String,
        value: String,
        position: String,
    },
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
    use crate::spec::Origin;

    fn definition(yaml: &str) -> Definition {
        spec::parse(yaml, &Origin::from("t.yml")).unwrap()
    }

    #[test]
    fn ids_count_from_100_over_all_sections_and_a_repeat_takes_the_later() {
        let ids = IdMap::new(&definition(
            "onboot:\n  - name: a\n    image: x\n  - name: b\n    image: x\nonshutdown:\n  - name: a\n    image: x\nservices:\n  - name: c\n    image: x\n",
        ));
        assert_eq!(ids.get("a"), Some(102));
        assert_eq!(ids.get("b"), Some(101));
        assert_eq!(ids.get("c"), Some(103));
        let id = |value| Located::synthetic(value);
        assert_eq!(ids.resolve(&id(IdRef::Number(7))).unwrap(), 7);
        assert_eq!(ids.resolve(&id(IdRef::Name("root".into()))).unwrap(), 0);
        assert_eq!(ids.resolve(&id(IdRef::Name(String::new()))).unwrap(), 0);
        assert_eq!(
            ids.resolve(&id(IdRef::Name("zz".into())))
                .unwrap_err()
                .to_string(),
            "<generated>: no entry is named \"zz\", so it cannot stand for a user or group id"
        );
    }

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
