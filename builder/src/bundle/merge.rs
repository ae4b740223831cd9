//! One entry merged with its image's label, field by field: the YAML where
//! it sets a field, else the label (docs/linuxkit-runtime.md §0.1).
//!
//! What the image config adds below both, and turning the merged fields
//! into `config.json`, is the bundle module's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;

use contract::{BindNamespaces, Interface, Mount as RuntimeMount, Runtime};
use oci_spec::runtime::{
    Capabilities, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
    User,
};

use super::{
    BundleError, DEFAULT_MOUNTS, IdMap, ImageDefaults, KERNEL_FILESYSTEMS, namespace, non_empty,
    oci_mount, strings, to_capability,
};
use crate::spec::{self, Container, IdRef, Located};

/// One entry and its image's label, merged field by field: YAML if set, else
/// label if set (docs/linuxkit-runtime.md §0.1).
pub(super) struct Merge<'a> {
    pub(super) entry: &'a Container,
    pub(super) label: &'a Container,
}

impl<'a> Merge<'a> {
    pub(super) fn name(&self) -> &'a str {
        self.entry.name()
    }

    pub(super) fn pick<T>(&self, field: impl Fn(&'a Container) -> Option<T>) -> Option<T> {
        field(self.entry).or_else(|| field(self.label))
    }

    pub(super) fn pick_ref<T: ?Sized>(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a T>,
    ) -> Option<&'a T> {
        self.pick(field)
    }

    /// A list field; an empty result is left out.
    pub(super) fn list<T: Clone + 'a>(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a Vec<T>>,
    ) -> Option<Vec<T>> {
        self.pick_ref(field).cloned().and_then(non_empty)
    }

    /// For the fields LinuxKit keeps as plain strings (`cwd`, `hostname`,
    /// the namespaces): an empty string is the same as unset, so it cannot
    /// clear the label's value.
    pub(super) fn text(&self, field: impl Fn(&'a Container) -> Option<&'a str>) -> Option<&'a str> {
        self.pick(|i| field(i).filter(|t| !t.is_empty()))
    }

    /// For the fields LinuxKit keeps as `*string` (`cgroupsPath`,
    /// `rootfsPropagation`): a set empty string overrides, and an empty
    /// result is left out.
    pub(super) fn optional_text(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a str>,
    ) -> Option<String> {
        self.pick(field).filter(|t| !t.is_empty()).map(String::from)
    }

    pub(super) fn located(
        &self,
        field: impl Fn(&'a Container) -> Option<&'a Located<String>>,
    ) -> Option<&'a Located<String>> {
        self.pick(|i| field(i).filter(|t| !t.is_empty()))
    }

    /// `command` replaces both the image's entrypoint and its cmd
    /// (docs/linuxkit-runtime.md §1.1).
    pub(super) fn args(&self, defaults: &ImageDefaults) -> Vec<String> {
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

    pub(super) fn env(&self, defaults: &ImageDefaults) -> Vec<String> {
        match self.pick_ref(|i| i.env.as_ref()) {
            Some(env) => env.iter().map(|e| e.value.clone()).collect(),
            None => defaults.env.to_vec(),
        }
    }

    pub(super) fn cwd(&self, defaults: &ImageDefaults) -> String {
        let image = defaults.working_dir.filter(|d| !d.is_empty());
        self.text(|i| i.cwd.as_deref())
            .or(image)
            .unwrap_or("/")
            .to_string()
    }

    pub(super) fn user(&self, ids: &IdMap) -> Result<User, BundleError> {
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
    pub(super) fn capabilities(
        &self,
    ) -> Result<(Vec<&'static str>, Vec<&'static str>), BundleError> {
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
    pub(super) fn capability_list(
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
    pub(super) fn capability_set(
        &self,
        names: &[&str],
    ) -> Result<Option<Capabilities>, BundleError> {
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

    pub(super) fn rlimits(&self) -> Result<Vec<PosixRlimit>, BundleError> {
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
    pub(super) fn mounts(&self, readonly: bool) -> Result<Vec<Mount>, BundleError> {
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
    pub(super) fn filled_in(&self, mount: &RuntimeMount) -> Result<Mount, BundleError> {
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
    pub(super) fn namespaces(&self) -> Result<Vec<LinuxNamespace>, BundleError> {
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
    pub(super) fn devices(&self) -> Result<(LinuxResources, Vec<LinuxDevice>), BundleError> {
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

    pub(super) fn sysctl(&self) -> Option<HashMap<String, String>> {
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
    pub(super) fn runtime(&self, rootfs: Vec<RuntimeMount>) -> Runtime {
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
