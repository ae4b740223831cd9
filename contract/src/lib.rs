//! The on-image contract shared by the builder and init.
//!
//! This crate owns the layout of `/containers` and the shape of `runtime.json`,
//! LinuxKit's extras beside each OCI bundle's `config.json`, ([`depmod`])
//! the format of the kernel modules index, and ([`squashfs`]) how init finds
//! the squashfs root of a `kernel+squashfs` build.
//! It does no I/O: the builder serialises these types into the image and init
//! reads them back at boot.
//! Changing anything here changes what images built by one version of berth
//! mean to another: do it deliberately.

use serde::{Deserialize, Serialize};

pub mod depmod;
pub mod squashfs;

/// Where the bundles live inside the image, relative to `/`.
pub const CONTAINERS_DIR: &str = "containers";

/// Whether `name` can name an entry: letters, digits, `-`, `_` and `.`,
/// and not `.` or `..`. A name becomes a directory under `/containers`
/// and a file name under `/var/log`, so the builder accepts no other and
/// init's control socket takes no other.
pub fn is_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The three kinds of bundle, in the order init runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BundleKind {
    Onboot,
    Service,
    Onshutdown,
}

impl BundleKind {
    pub fn directory(self) -> &'static str {
        match self {
            BundleKind::Onboot => "onboot",
            BundleKind::Service => "services",
            BundleKind::Onshutdown => "onshutdown",
        }
    }

    /// The bundle directory of the `index`th entry named `name`, relative to `/`.
    ///
    /// Onboot and onshutdown bundles carry a three-digit index so that a
    /// directory listing gives the order of the YAML file, as in LinuxKit.
    pub fn bundle_path(self, index: usize, name: &str) -> String {
        match self {
            BundleKind::Service => format!("{CONTAINERS_DIR}/{}/{name}", self.directory()),
            _ => format!("{CONTAINERS_DIR}/{}/{index:03}-{name}", self.directory()),
        }
    }
}

/// A mount as written in YAML `mounts:` and in `runtime.json`: the OCI runtime
/// specification's mount object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// May be left out in YAML for the kernel filesystems, whose place is
    /// known (`proc` → `/proc`, …); the builder fills it in.
    #[serde(default)]
    pub destination: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// A network interface that init moves into a container's network namespace
/// (LinuxKit's `runtime.interfaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The name the interface has inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Create an interface of this type (`veth`, …) instead of moving one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub add: String,
    /// The peer name, for `veth`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// Create the interface in the root namespace and move it.
    #[serde(rename = "createInRoot", default)]
    pub create_in_root: bool,
}

/// Namespaces to bind-mount to a path after the container starts, so that
/// other containers can join them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindNamespaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
}

impl BindNamespaces {
    pub fn is_empty(&self) -> bool {
        *self == BindNamespaces::default()
    }

    /// Each namespace by its name in `/proc/PID/ns`, with its path.
    pub fn entries(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("cgroup", &self.cgroup),
            ("ipc", &self.ipc),
            ("mnt", &self.mnt),
            ("net", &self.net),
            ("pid", &self.pid),
            ("user", &self.user),
            ("uts", &self.uts),
        ]
    }
}

/// `runtime.json`: what init does around a container that the OCI runtime
/// specification has no field for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// cgroups to create before the container starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<Vec<String>>,
    /// Mounts made on the host before the container starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    /// Directories created on the host before the container starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkdir: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(
        rename = "bindNS",
        default,
        skip_serializing_if = "BindNamespaces::is_empty"
    )]
    pub bind_namespaces: BindNamespaces,
    /// The containerd namespace in LinuxKit; kept so such files still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// berth: when a service is started again after it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// berth: services that must be running (and healthy, when they have
    /// a health check) before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends: Option<Vec<String>>,
    /// berth: how init tells that a running service works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// When a service is started again after it ends (berth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Whatever the exit (the default: system services should be running).
    #[default]
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never: an ended service stays ended.
    Never,
}

impl std::str::FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Restart::Always),
            "on-failure" => Ok(Restart::OnFailure),
            "never" => Ok(Restart::Never),
            _ => Err(format!(
                "unknown restart policy {s:?} (always, on-failure or never)"
            )),
        }
    }
}

/// A health check (berth): a command run inside the container, or a TCP
/// connection from init, every `interval` seconds; `retries` failures in a
/// row make the service unhealthy, and init restarts it. Failures in the
/// first `start_period` seconds, before the first success, do not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// `HOST:PORT`, connected to from init's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(default = "Healthcheck::default_interval")]
    pub interval: u64,
    #[serde(default = "Healthcheck::default_retries")]
    pub retries: u32,
    #[serde(default = "Healthcheck::default_start_period")]
    pub start_period: u64,
}

impl Healthcheck {
    fn default_interval() -> u64 {
        10
    }
    fn default_retries() -> u32 {
        3
    }
    fn default_start_period() -> u64 {
        30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_keep_yaml_order_in_listings() {
        assert_eq!(
            BundleKind::Onboot.bundle_path(3, "sysctl"),
            "containers/onboot/003-sysctl"
        );
        assert_eq!(
            BundleKind::Service.bundle_path(3, "getty"),
            "containers/services/getty"
        );
        assert_eq!(
            BundleKind::Onshutdown.bundle_path(0, "x"),
            "containers/onshutdown/000-x"
        );
    }

    #[test]
    fn runtime_json_round_trips_and_omits_empty_fields() {
        let runtime: Runtime = serde_json::from_str(
            r#"{"mkdir":["/var/lib/x"],"bindNS":{"net":"/run/netns/x"},"interfaces":[{"name":"eth1","add":"veth","peer":"veth1","createInRoot":true}]}"#,
        )
        .unwrap();
        assert_eq!(
            runtime.mkdir.as_deref(),
            Some(&["/var/lib/x".to_string()][..])
        );
        assert_eq!(runtime.bind_namespaces.net.as_deref(), Some("/run/netns/x"));
        let again = serde_json::to_string(&runtime).unwrap();
        assert_eq!(serde_json::from_str::<Runtime>(&again).unwrap(), runtime);
        assert_eq!(serde_json::to_string(&Runtime::default()).unwrap(), "{}");
    }
}
