//! The bundles under `/containers`, and what init does to a bundle before
//! the OCI runtime sees it.
//!
//! The image is read-only, so init does not touch a bundle in place: it
//! makes the host side ready (`runtime.json`: directories, cgroups, the
//! mounts that make `rootfs`) and writes the runtime's copy of
//! `config.json` under `/run/berth/bundles/ID`, with the root made
//! absolute, a cgroup path when the YAML gave none, and `runtime.json`'s
//! interfaces as OCI network devices, and its seccomp profile moved beside
//! it for [`crate::seccomp`] to enforce. What it cannot honour (interfaces
//! to create, a profile it cannot compile) refuses the container, so that
//! nothing is silently left out. [`prepare`] decides, [`ready`] does it
//! through [`System`]; starting the container is the runtime's.
//!
//! LinuxKit's images that need the host's devices bind `/dev:/dev`. runc
//! then leaves `/dev` alone; libcontainer does not (it makes its default
//! nodes, `/dev/fd` and `/dev/ptmx` in it, which fails on the host's
//! `/dev` and would change it). So such a bind becomes the default tmpfs
//! `/dev` holding every device node the host's `/dev` has when the
//! container starts ([`host_devices`]).

use std::path::{Path, PathBuf};

use contract::{BundleKind, CONTAINERS_DIR, Healthcheck, Restart, Runtime};
use serde_json::{Value, json};

use crate::modules::{Index, Loader};
use crate::system::{Launch, Mount, System, under};

/// Where init keeps what it makes at run time.
pub const RUN: &str = "/run/berth";

/// One bundle, found in `/containers/KIND/DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: BundleKind,
    /// The directory name: `003-name` for onboot and onshutdown.
    pub id: String,
    /// The name in the YAML.
    pub name: String,
    pub dir: PathBuf,
}

/// The bundles of `kind` under `root` (`/containers`), in directory order,
/// which is the YAML's.
pub fn find(root: &Path, kind: BundleKind) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(root.join(kind.directory())) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            let name = match kind {
                BundleKind::Service => id.clone(),
                _ => id
                    .split_once('-')
                    .map_or(id.clone(), |(_, n)| n.to_string()),
            };
            Some(Found {
                kind,
                id,
                name,
                dir: e.path(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// A bundle made ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub found: Found,
    /// Host directories to make, in order (runtime.json `mkdir`, then the
    /// cgroups, then mount points the mounts need that the image lacks).
    pub mkdir: Vec<String>,
    /// Host mounts, in order, each with the directories to make just
    /// before it (an overlay's upper and work directories, which may lie
    /// on a tmpfs mounted by the mount before).
    pub mounts: Vec<(Vec<String>, Mount)>,
    /// The runtime's `config.json`.
    pub config: Value,
    pub restart: Restart,
    pub depends: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    /// Namespace → path to bind it to once the container runs.
    pub bind_namespaces: Vec<(&'static str, String)>,
    /// The YAML bound the host's `/dev`: the container gets its nodes.
    pub host_dev: bool,
    /// What [`crate::seccomp::take`] took out of `config.json`.
    pub seccomp: Option<Value>,
}

/// Every bundle of the image, made ready, by kind.
#[derive(Debug, Default)]
pub struct Bundles {
    pub onboot: Vec<Prepared>,
    pub services: Vec<Prepared>,
    pub onshutdown: Vec<Prepared>,
}

/// Finds the bundles under `/containers` and makes each ready; one that
/// cannot be is logged and left out. `mounted` gets the mounts made.
pub fn ready_all(
    system: &mut dyn System,
    root: &Path,
    index: &Index,
    mounted: &mut Vec<String>,
) -> Bundles {
    let containers = under(root, &format!("/{CONTAINERS_DIR}"));
    let mut ready_kind = |kind: BundleKind| -> Vec<Prepared> {
        let mut list = Vec::new();
        for found in find(&containers, kind) {
            match ready(system, root, index, &found, mounted) {
                Ok(p) => list.push(p),
                Err(e) => system.log(&format!("{} {}: {e}", kind.directory(), found.id)),
            }
        }
        list
    };
    Bundles {
        onboot: ready_kind(BundleKind::Onboot),
        services: ready_kind(BundleKind::Service),
        onshutdown: ready_kind(BundleKind::Onshutdown),
    }
}

/// Makes a bundle's host side ready (directories, mounts) and writes the
/// runtime's copy of its `config.json`.
pub fn ready(
    system: &mut dyn System,
    root: &Path,
    index: &Index,
    found: &Found,
    mounted: &mut Vec<String>,
) -> Result<Prepared, String> {
    let p = prepare(found, "berth")?;
    for dir in &p.mkdir {
        system
            .mkdir(dir)
            .map_err(|e| format!("making {dir}: {e}"))?;
    }
    for (dirs, mount) in &p.mounts {
        for dir in dirs {
            system
                .mkdir(dir)
                .map_err(|e| format!("making {dir}: {e}"))?;
        }
        if mount.kind == "overlay" {
            // A module on Debian's kernels; the kernel would ask modprobe.
            let _ = Loader::new(index).load(system, "overlay");
        }
        system
            .mount(mount)
            .map_err(|e| format!("mounting {} on {}: {e}", mount.kind, mount.target))?;
        // A remount of the same target is not another mount to undo.
        if !mounted.contains(&mount.target) {
            mounted.push(mount.target.clone());
        }
    }
    let dir = runtime_bundle(root, &found.id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = serde_json::to_vec_pretty(&p.config).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), config)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let seccomp = dir.join(crate::seccomp::FILE);
    match &p.seccomp {
        Some(file) => std::fs::write(&seccomp, file.to_string()),
        None => std::fs::remove_file(&seccomp).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
    }
    .map_err(|e| format!("{}: {e}", seccomp.display()))?;
    Ok(p)
}

/// Where [`ready`] writes the runtime's bundle of container `id`.
fn runtime_bundle(root: &Path, id: &str) -> PathBuf {
    under(root, RUN).join("bundles").join(id)
}

/// What the runtime needs to start a bundle made ready.
pub fn launch(root: &Path, p: &Prepared) -> Launch {
    Launch {
        id: p.found.id.clone(),
        bundle: runtime_bundle(root, &p.found.id),
        host_dev: p.host_dev,
    }
}

/// Reads a bundle's two files and says what to do with them.
pub fn prepare(found: &Found, cgroup_root: &str) -> Result<Prepared, String> {
    let read = |name: &str| -> Result<String, String> {
        let path = found.dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let config: Value = serde_json::from_str(&read("config.json")?)
        .map_err(|e| format!("{}/config.json: {e}", found.dir.display()))?;
    let runtime: Runtime = match found.dir.join("runtime.json").exists() {
        true => serde_json::from_str(&read("runtime.json")?)
            .map_err(|e| format!("{}/runtime.json: {e}", found.dir.display()))?,
        false => Runtime::default(),
    };
    plan(found, config, runtime, cgroup_root)
}

fn plan(
    found: &Found,
    mut config: Value,
    runtime: Runtime,
    cgroup_root: &str,
) -> Result<Prepared, String> {
    let refuse = |what: String| format!("{}: {what}", found.name);
    let seccomp = crate::seccomp::take(&mut config).map_err(refuse)?;
    let mut net_devices = serde_json::Map::new();
    for interface in runtime.interfaces.iter().flatten() {
        if !interface.add.is_empty() || interface.create_in_root {
            return Err(refuse(format!(
                "interface {:?}: creating interfaces (add: {}) is not supported; only moving an existing one",
                interface.name, interface.add
            )));
        }
        net_devices.insert(interface.name.clone(), json!({ "name": interface.name }));
    }

    let rootfs = found.dir.join("rootfs");
    config["root"]["path"] = json!(rootfs.to_string_lossy());
    let linux = config
        .as_object_mut()
        .ok_or_else(|| refuse("config.json is not an object".into()))?
        .entry("linux")
        .or_insert_with(|| json!({}));
    let cgroup = linux
        .get("cgroupsPath")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("/{cgroup_root}/{}", found.name));
    linux["cgroupsPath"] = json!(cgroup);
    if !net_devices.is_empty() {
        linux["netDevices"] = Value::Object(net_devices);
    }
    let host_dev = replace_dev_bind(&mut config);
    // There is no console to hand a terminal to; output goes to the log.
    if config.pointer("/process/terminal") == Some(&json!(true)) {
        config["process"]["terminal"] = json!(false);
    }

    let mut mkdir: Vec<String> = runtime.mkdir.clone().unwrap_or_default();
    for group in runtime.cgroups.iter().flatten() {
        mkdir.push(format!("/sys/fs/cgroup/{}", group.trim_matches('/')));
    }
    let mut mounts = Vec::new();
    for mount in runtime.mounts.iter().flatten() {
        let rootfs_bind = Path::new(&mount.destination) == rootfs
            && mount
                .options
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if rootfs_bind {
            // A read-only image's root: an overlay with a scratch upper
            // layer under /run, so that the runtime can make its mount
            // points on an immutable /; the container still sees its
            // root read-only when config.json says so.
            let scratch = format!("{RUN}/rootfs/{}", found.id);
            let (upper, work) = (format!("{scratch}/upper"), format!("{scratch}/work"));
            let lower = mount.source.clone().unwrap_or_default();
            mounts.push((
                vec![upper.clone(), work.clone()],
                Mount {
                    source: "overlay".into(),
                    target: mount.destination.clone(),
                    kind: "overlay".into(),
                    flags: Vec::new(),
                    data: format!("lowerdir={lower},upperdir={upper},workdir={work}"),
                },
            ));
            continue;
        }
        mounts.push(host_mount(mount).map_err(refuse)?);
    }
    // A root whose device nodes nothing may use is mounted `nodev`, so
    // that a node shipped in an image is no way around the device rules.
    // (The builder always writes the mount that makes `rootfs`.)
    if !(host_dev || crate::devices::granted(&config)) {
        for (_, mount) in mounts.iter_mut() {
            if Path::new(&mount.target) == rootfs && !mount.flags.contains(&"remount") {
                mount.flags.push("nodev");
            }
        }
    }
    let ns = &runtime.bind_namespaces;
    let bind_namespaces = [
        ("cgroup", &ns.cgroup),
        ("ipc", &ns.ipc),
        ("mnt", &ns.mnt),
        ("net", &ns.net),
        ("pid", &ns.pid),
        ("user", &ns.user),
        ("uts", &ns.uts),
    ]
    .into_iter()
    // LinuxKit writes every key; an empty path binds nothing.
    .filter_map(|(kind, path)| Some((kind, path.clone().filter(|p| !p.is_empty())?)))
    .collect();
    Ok(Prepared {
        found: found.clone(),
        mkdir,
        mounts,
        config,
        restart: runtime.restart.unwrap_or_default(),
        depends: runtime.depends.unwrap_or_default(),
        healthcheck: runtime.healthcheck,
        bind_namespaces,
        host_dev,
        seccomp,
    })
}

/// Turns a bind of `/dev` in `config.json` into LinuxKit's default tmpfs
/// `/dev`; says whether there was one.
fn replace_dev_bind(config: &mut Value) -> bool {
    let Some(mounts) = config.get_mut("mounts").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut found = false;
    for mount in mounts.iter_mut() {
        let options = mount.get("options").and_then(Value::as_array);
        let is_bind = mount.get("type").and_then(Value::as_str) == Some("bind")
            || options.is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
        let from_host_dev = mount
            .get("source")
            .and_then(Value::as_str)
            .is_some_and(|s| s.trim_end_matches('/') == "/dev");
        let to_dev = mount.get("destination").and_then(Value::as_str) == Some("/dev");
        if to_dev && is_bind && from_host_dev {
            let read_only = options.is_some_and(|o| o.iter().any(|o| o == "ro"));
            let mut options = vec!["nosuid", "strictatime", "mode=755", "size=65536k"];
            if read_only {
                options.push("ro");
            }
            *mount = json!({
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            });
            found = true;
        }
    }
    found
}

/// The character and block devices under `dev` as OCI `linux.devices`,
/// sorted by path; the directories that are mounts of their own (`pts`,
/// `shm`, `mqueue`) and `ptmx` (which the runtime makes) are left out.
pub fn host_devices(dev: &Path) -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devices = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let relative = path.strip_prefix(dev).unwrap_or(&path);
            let kind = meta.file_type();
            if kind.is_dir() {
                if !["pts", "shm", "mqueue"]
                    .iter()
                    .any(|d| relative == Path::new(d))
                {
                    dirs.push(path);
                }
                continue;
            }
            let typ = match () {
                _ if kind.is_char_device() => "c",
                _ if kind.is_block_device() => "b",
                _ => continue,
            };
            if relative == Path::new("ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            devices.push(json!({
                "path": Path::new("/dev").join(relative).to_string_lossy(),
                "type": typ,
                "major": rustix::fs::major(rdev),
                "minor": rustix::fs::minor(rdev),
                "fileMode": meta.mode() & 0o7777,
                "uid": meta.uid(),
                "gid": meta.gid(),
            }));
        }
    }
    devices.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    devices
}

/// The OCI mount options init knows as flags; the others go to the
/// filesystem as data.
const FLAGS: &[&str] = &[
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "bind",
    "rbind",
    "remount",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "noatime",
    "relatime",
    "nodiratime",
];

/// A runtime.json mount as init makes it, with the directories it needs
/// (an overlay's upper and work directories).
fn host_mount(mount: &contract::Mount) -> Result<(Vec<String>, Mount), String> {
    let options = mount.options.clone().unwrap_or_default();
    let mut flags = Vec::new();
    let mut data = Vec::new();
    let mut dirs = Vec::new();
    for option in &options {
        match FLAGS.iter().find(|f| **f == option) {
            Some(flag) => flags.push(*flag),
            None if option == "rw" || option == "defaults" => {}
            None => {
                if let Some(dir) = ["upperdir=", "workdir="]
                    .iter()
                    .find_map(|key| option.strip_prefix(key))
                {
                    dirs.push(dir.to_string());
                }
                data.push(option.clone());
            }
        }
    }
    if mount.destination.is_empty() {
        return Err(format!("runtime.json mount {mount:?} has no destination"));
    }
    let kind = mount.kind.clone().unwrap_or_else(|| {
        if flags.iter().any(|f| *f == "bind" || *f == "rbind") {
            "bind".into()
        } else {
            "none".into()
        }
    });
    Ok((
        dirs,
        Mount {
            source: mount.source.clone().unwrap_or_else(|| "none".into()),
            target: mount.destination.clone(),
            kind,
            flags,
            data: data.join(","),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: BundleKind, id: &str, name: &str) -> Found {
        Found {
            kind,
            id: id.into(),
            name: name.into(),
            dir: PathBuf::from(format!("/containers/{}/{id}", kind.directory())),
        }
    }

    #[test]
    fn bundles_are_found_in_yaml_order_with_their_names() {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "onboot/001-b",
            "onboot/000-a-b",
            "onboot/010-c",
            "services/sshd",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("onboot/junk"), "").unwrap();
        let onboot = find(root.path(), BundleKind::Onboot);
        let names: Vec<_> = onboot.iter().map(|f| (&f.id[..], &f.name[..])).collect();
        assert_eq!(names, [("000-a-b", "a-b"), ("001-b", "b"), ("010-c", "c")]);
        assert_eq!(find(root.path(), BundleKind::Service)[0].name, "sshd");
        assert!(find(root.path(), BundleKind::Onshutdown).is_empty());
    }

    #[test]
    fn a_writable_bundle_gets_its_overlay_and_the_runtime_its_config() {
        let runtime: Runtime = serde_json::from_value(json!({
            "mkdir": ["/var/lib/x"],
            "cgroups": ["podruntime/x"],
            "mounts": [
                {"destination": "/containers/services/x/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/containers/services/x/tmp", "options": ["remount", "private"]},
                {"destination": "/containers/services/x/rootfs", "type": "overlay", "source": "overlay",
                 "options": ["lowerdir=/containers/services/x/lower", "upperdir=/containers/services/x/tmp/upper", "workdir=/containers/services/x/tmp/work"]}
            ],
            "bindNS": {"net": "/run/netns/x"},
            "interfaces": [{"name": "eth1"}],
            "restart": "on-failure",
            "depends": ["dhcp"],
            "healthcheck": {"tcp": "127.0.0.1:22"}
        }))
        .unwrap();
        let config =
            json!({"root": {"path": "rootfs", "readonly": false}, "process": {"terminal": true}});
        let p = plan(
            &found(BundleKind::Service, "x", "x"),
            config,
            runtime,
            "berth",
        )
        .unwrap();
        assert_eq!(p.mkdir, ["/var/lib/x", "/sys/fs/cgroup/podruntime/x"]);
        assert_eq!(
            p.mounts[2].0,
            [
                "/containers/services/x/tmp/upper",
                "/containers/services/x/tmp/work"
            ]
        );
        let summary: Vec<String> = p
            .mounts
            .iter()
            .map(|(_, m)| format!("{} {} {:?} {}", m.kind, m.target, m.flags, m.data))
            .collect();
        assert_eq!(
            summary,
            [
                "tmpfs /containers/services/x/tmp [] ",
                "none /containers/services/x/tmp [\"remount\", \"private\"] ",
                "overlay /containers/services/x/rootfs [\"nodev\"] lowerdir=/containers/services/x/lower,upperdir=/containers/services/x/tmp/upper,workdir=/containers/services/x/tmp/work",
            ]
        );
        assert_eq!(p.config["root"]["path"], "/containers/services/x/rootfs");
        assert_eq!(p.config["linux"]["cgroupsPath"], "/berth/x");
        assert_eq!(
            p.config["linux"]["netDevices"],
            json!({"eth1": {"name": "eth1"}})
        );
        assert_eq!(p.config["process"]["terminal"], false);
        assert_eq!(p.bind_namespaces, [("net", "/run/netns/x".to_string())]);
        assert_eq!(
            (p.restart, &p.depends[..]),
            (Restart::OnFailure, &["dhcp".to_string()][..])
        );
        assert_eq!(p.healthcheck.unwrap().interval, 10);
    }

    #[test]
    fn a_read_only_image_gets_a_scratch_overlay_for_mount_points() {
        let runtime: Runtime = serde_json::from_value(json!({
            "mounts": [{"destination": "/containers/onboot/001-a/rootfs", "source": "/containers/onboot/000-b/lower", "options": ["bind"]}]
        }))
        .unwrap();
        let p = plan(
            &found(BundleKind::Onboot, "001-a", "a"),
            json!({}),
            runtime,
            "berth",
        )
        .unwrap();
        assert!(p.mkdir.is_empty());
        assert_eq!(p.mounts.len(), 1);
        assert_eq!(p.mounts[0].1.flags, ["nodev"]);
        assert_eq!(
            p.mounts[0].0,
            [
                "/run/berth/rootfs/001-a/upper",
                "/run/berth/rootfs/001-a/work"
            ]
        );
        assert_eq!(
            (p.mounts[0].1.kind.as_str(), p.mounts[0].1.data.as_str()),
            (
                "overlay",
                "lowerdir=/containers/onboot/000-b/lower,upperdir=/run/berth/rootfs/001-a/upper,workdir=/run/berth/rootfs/001-a/work"
            )
        );
    }

    #[test]
    fn a_root_is_nodev_unless_the_bundle_is_granted_devices() {
        let runtime = || -> Runtime {
            serde_json::from_value(json!({
                "mounts": [{"destination": "/containers/services/d/rootfs", "source": "/containers/services/d/lower", "options": ["bind"]}]
            }))
            .unwrap()
        };
        let flags = |config: Value| {
            let p = plan(
                &found(BundleKind::Service, "d", "d"),
                config,
                runtime(),
                "b",
            )
            .unwrap();
            p.mounts[0].1.flags.clone()
        };
        let rules = |rules: Value| json!({"linux": {"resources": {"devices": rules}}});
        assert_eq!(flags(json!({})), ["nodev"]);
        // Making nodes is not using them.
        assert_eq!(
            flags(rules(json!([{"allow": true, "type": "b", "access": "m"}]))),
            ["nodev"]
        );
        assert!(
            flags(rules(
                json!([{"allow": true, "type": "b", "major": 254, "minor": 0, "access": "rwm"}])
            ))
            .is_empty()
        );
        let dev_bind = json!({"mounts": [{"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}]});
        assert!(flags(dev_bind).is_empty());
    }

    #[test]
    fn a_given_cgroup_path_is_kept_and_defaults_apply() {
        let config = json!({"root": {"path": "rootfs"}, "linux": {"cgroupsPath": "/custom/one"}});
        let p = plan(
            &found(BundleKind::Onboot, "000-a", "a"),
            config,
            Runtime::default(),
            "berth",
        )
        .unwrap();
        assert_eq!(p.config["linux"]["cgroupsPath"], "/custom/one");
        assert_eq!(p.restart, Restart::Always);
        assert!(p.mounts.is_empty() && p.mkdir.is_empty() && p.healthcheck.is_none());
    }

    #[test]
    fn a_bind_of_the_hosts_dev_becomes_a_tmpfs_given_its_devices() {
        let config = json!({
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rw", "rbind", "rshared"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
                {"destination": "/etc/x", "type": "bind", "source": "/etc", "options": ["rbind"]}
            ]
        });
        let p = plan(
            &found(BundleKind::Service, "getty", "getty"),
            config,
            Runtime::default(),
            "berth",
        )
        .unwrap();
        assert!(p.host_dev);
        let mounts = p.config["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["type"], "tmpfs");
        assert_eq!(mounts[0]["destination"], "/dev");
        assert_eq!(mounts[1]["type"], "devpts");
        assert_eq!(mounts[2]["source"], "/etc");

        let plain = json!({"root": {"path": "rootfs"}, "mounts": [
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
        ]});
        // A bind of some other directory on /dev is left as it is.
        let other = json!({"root": {"path": "rootfs"}, "mounts": [
            {"destination": "/dev", "type": "bind", "source": "/var/dev", "options": ["rbind"]}
        ]});
        let p = plan(
            &found(BundleKind::Service, "x", "x"),
            other,
            Runtime::default(),
            "berth",
        )
        .unwrap();
        assert!(!p.host_dev);
        assert_eq!(p.config["mounts"][0]["source"], "/var/dev");
        let p = plan(
            &found(BundleKind::Service, "x", "x"),
            plain,
            Runtime::default(),
            "berth",
        )
        .unwrap();
        assert!(!p.host_dev);
    }

    #[test]
    fn the_hosts_device_nodes_are_listed_with_their_numbers() {
        let devices = host_devices(Path::new("/dev"));
        let null = devices
            .iter()
            .find(|d| d["path"] == "/dev/null")
            .expect("/dev/null is listed");
        assert_eq!(null["type"], "c");
        assert_eq!(
            (null["major"].as_u64(), null["minor"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(null["fileMode"], 0o666);
        assert!(devices.iter().all(|d| d["path"] != "/dev/ptmx"));
        assert!(
            devices
                .iter()
                .all(|d| !d["path"].as_str().unwrap().starts_with("/dev/pts/"))
        );
        // Regular files and symlinks are no devices.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        assert!(host_devices(dir.path()).is_empty());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let seccomp = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}}});
        let err = plan(
            &found(BundleKind::Service, "s", "s"),
            seccomp,
            Runtime::default(),
            "b",
        )
        .unwrap_err();
        assert!(err.starts_with("s: linux.seccomp: defaultAction"), "{err}");
        let runtime: Runtime = serde_json::from_value(
            json!({"interfaces": [{"name": "veth0", "add": "veth", "peer": "v1"}]}),
        )
        .unwrap();
        let err = plan(
            &found(BundleKind::Service, "s", "s"),
            json!({}),
            runtime,
            "b",
        )
        .unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        let runtime: Runtime =
            serde_json::from_value(json!({"mounts": [{"type": "tmpfs", "source": "tmpfs"}]}))
                .unwrap();
        let err = plan(
            &found(BundleKind::Service, "s", "s"),
            json!({}),
            runtime,
            "b",
        )
        .unwrap_err();
        assert!(err.contains("no destination"), "{err}");
    }
}
