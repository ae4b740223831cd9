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
use libcontainer::oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::logs::{DEFAULT_CAP, LOG_DIR, Log};
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
/// cannot be is left out, and why is said on the console and in its log
/// (`/var/log/NAME.log`), so that `berthctl log NAME` tells it too.
/// `mounted` gets the mounts made.
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
                Err(e) => {
                    let line = format!("{} {}: not started: {e}", kind.directory(), found.id);
                    system.log(&line);
                    let logs = under(root, LOG_DIR);
                    let mut log = Log::open(&logs, &found.name, DEFAULT_CAP, false);
                    if let Err(e) = log.write(format!("{line}\n").as_bytes()) {
                        system.log(&format!("{}/{}.log: {e}", logs.display(), found.name));
                    }
                }
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
pub fn runtime_bundle(root: &Path, id: &str) -> PathBuf {
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
///
/// Both come from the image: each is read as its type before anything is
/// done with it, so that a malformed bundle is this bundle's error, never
/// PID 1's panic (issue #15).
pub fn prepare(found: &Found, cgroup_root: &str) -> Result<Prepared, String> {
    let read = |name: &str| -> Result<String, String> {
        let path = found.dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let config = read_config(&read("config.json")?)
        .map_err(|e| format!("{}/config.json: {e}", found.dir.display()))?;
    let runtime: Runtime = match found.dir.join("runtime.json").exists() {
        true => serde_json::from_str(&read("runtime.json")?)
            .map_err(|e| format!("{}/runtime.json: {e}", found.dir.display()))?,
        false => Runtime::default(),
    };
    plan(found, config, runtime, cgroup_root)
}

/// `config.json` as the object init edits, once it has been read as the
/// OCI runtime specification the runtime will read it as: a field of the
/// wrong type is refused here, with its line and column.
fn read_config(text: &str) -> Result<Value, String> {
    let config: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !config.is_object() {
        return Err(format!("not a JSON object but {}", kind_of(&config)));
    }
    serde_json::from_str::<Spec>(text).map_err(|e| e.to_string())?;
    Ok(config)
}

/// What a JSON value is, for errors.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The object at `key` of `object`, made empty if it is missing or null;
/// an error naming `key` if it is anything else.
pub fn object_at<'a>(
    object: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, String> {
    let value = object.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = json!({});
    }
    let kind = kind_of(value);
    value
        .as_object_mut()
        .ok_or_else(|| format!("config.json: {key} is {kind}, not an object"))
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
    let object = config
        .as_object_mut()
        .ok_or_else(|| refuse("config.json is not a JSON object".into()))?;
    object_at(object, "root")
        .map_err(&refuse)?
        .insert("path".into(), json!(rootfs.to_string_lossy()));
    let linux = object_at(object, "linux").map_err(&refuse)?;
    let cgroup = match linux.get("cgroupsPath") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) => Some(path.clone()).filter(|p| !p.is_empty()),
        Some(other) => {
            let kind = kind_of(other);
            return Err(refuse(format!(
                "config.json: linux.cgroupsPath is {kind}, not a string"
            )));
        }
    }
    .unwrap_or_else(|| format!("/{cgroup_root}/{}", found.name));
    // The device program is attached to this cgroup: at the root of the
    // tree, or above it, it would confine every process of the host.
    let own = Path::new(&cgroup).components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::Normal(_)
        )
    }) && Path::new(&cgroup)
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)));
    if !own {
        return Err(refuse(format!(
            "config.json: linux.cgroupsPath {cgroup:?} is not a cgroup of its own under the root of the tree"
        )));
    }
    linux.insert("cgroupsPath".into(), json!(cgroup));
    if !net_devices.is_empty() {
        linux.insert("netDevices".into(), Value::Object(net_devices));
    }
    // There is no console to hand a terminal to; output goes to the log.
    if let Some(process) = object.get_mut("process").and_then(Value::as_object_mut)
        && process.get("terminal") == Some(&json!(true))
    {
        process.insert("terminal".into(), json!(false));
    }
    let host_dev = replace_dev_bind(&mut config);

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
    // (The builder always writes the mount that makes `rootfs`.) A
    // remount sets the flags anew, so it keeps `nodev` too.
    if !(host_dev || crate::devices::granted(&config)) {
        for (_, mount) in mounts.iter_mut() {
            if Path::new(&mount.target) == rootfs {
                mount.flags.push("nodev");
            }
        }
    }
    let bind_namespaces = runtime
        .bind_namespaces
        .entries()
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
        let to_dev = mount
            .get("destination")
            .and_then(Value::as_str)
            .is_some_and(|d| d.trim_end_matches('/') == "/dev");
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

    /// A bundle directory holding `config` (and `runtime`, if given).
    fn bundle_with(config: &str, runtime: Option<&str>) -> (tempfile::TempDir, Found) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        if let Some(runtime) = runtime {
            std::fs::write(dir.path().join("runtime.json"), runtime).unwrap();
        }
        let found = Found {
            kind: BundleKind::Service,
            id: "bad".into(),
            name: "bad".into(),
            dir: dir.path().to_path_buf(),
        };
        (dir, found)
    }

    /// The error [`prepare`] gives, with the bundle's directory written `DIR`.
    fn refusal(config: &str, runtime: Option<&str>) -> String {
        let (dir, found) = bundle_with(config, runtime);
        let err = prepare(&found, "berth").expect_err("a malformed bundle is refused");
        err.replace(&*dir.path().to_string_lossy(), "DIR")
    }

    #[test]
    fn a_malformed_config_json_is_this_bundles_error() {
        for (config, expected) in [
            ("[]", "DIR/config.json: not a JSON object but an array"),
            ("null", "DIR/config.json: not a JSON object but null"),
            ("\"x\"", "DIR/config.json: not a JSON object but a string"),
            (
                "{\"root\": ",
                "DIR/config.json: EOF while parsing a value at line 1 column 9",
            ),
            (
                "{\"root\": 5}",
                "DIR/config.json: invalid type: integer `5`, expected struct Root at line 1 column 10",
            ),
            (
                "{\"root\": {\"path\": []}}",
                "DIR/config.json: invalid type: sequence, expected path string at line 1 column 18",
            ),
            (
                "{\"process\": {\"terminal\": \"yes\", \"cwd\": \"/\"}}",
                "DIR/config.json: invalid type: string \"yes\", expected a boolean at line 1 column 30",
            ),
            (
                "{\"linux\": {\"cgroupsPath\": 7}}",
                "DIR/config.json: invalid type: integer `7`, expected path string at line 1 column 27",
            ),
            (
                "{\"mounts\": {\"destination\": \"/dev\"}}",
                "DIR/config.json: invalid type: map, expected a sequence at line 1 column 11",
            ),
        ] {
            assert_eq!(refusal(config, None), expected, "{config}");
        }
    }

    #[test]
    fn plan_refuses_what_is_not_an_object_without_panicking() {
        let found = found(BundleKind::Service, "s", "s");
        for (config, expected) in [
            (json!([]), "s: config.json is not a JSON object"),
            (
                json!({"root": []}),
                "s: config.json: root is an array, not an object",
            ),
            (
                json!({"linux": "x"}),
                "s: config.json: linux is a string, not an object",
            ),
            (
                json!({"linux": {"cgroupsPath": 7}}),
                "s: config.json: linux.cgroupsPath is a number, not a string",
            ),
        ] {
            let err = plan(&found, config, Runtime::default(), "b").unwrap_err();
            assert_eq!(err, expected);
        }
        for path in ["/", "//", "/berth/../..", "../x"] {
            let config = json!({"linux": {"cgroupsPath": path}});
            let err = plan(&found, config, Runtime::default(), "b").unwrap_err();
            assert_eq!(
                err,
                format!(
                    "s: config.json: linux.cgroupsPath {path:?} is not a cgroup of its own under the root of the tree"
                )
            );
        }
        // Null is as good as missing.
        let p = plan(
            &found,
            json!({"root": null, "linux": null}),
            Runtime::default(),
            "b",
        );
        assert_eq!(p.unwrap().config["linux"]["cgroupsPath"], "/b/s");
    }

    #[test]
    fn a_malformed_runtime_json_is_this_bundles_error() {
        for (runtime, expected) in [
            (
                "",
                "DIR/runtime.json: EOF while parsing a value at line 1 column 0",
            ),
            (
                "[1]",
                "DIR/runtime.json: invalid type: integer `1`, expected a sequence at line 1 column 2",
            ),
            (
                "{\"mkdir\": \"/x\"}",
                "DIR/runtime.json: invalid type: string \"/x\", expected a sequence at line 1 column 14",
            ),
            (
                "{\"bindNS\": {\"net\": 1}}",
                "DIR/runtime.json: invalid type: integer `1`, expected a string at line 1 column 20",
            ),
            (
                "{\"mkdirs\": []}",
                "DIR/runtime.json: unknown field `mkdirs`, expected one of `cgroups`, `mounts`, `mkdir`, `interfaces`, `bindNS`, `namespace`, `restart`, `depends`, `healthcheck` at line 1 column 9",
            ),
        ] {
            assert_eq!(refusal("{}", Some(runtime)), expected, "{runtime}");
        }
    }

    #[test]
    fn a_bad_bundle_is_left_out_named_on_the_console_and_in_its_log() {
        let root = tempfile::tempdir().unwrap();
        let services = root.path().join("containers/services");
        for (name, config) in [("broken", "[]"), ("good", "{}")] {
            std::fs::create_dir_all(services.join(name)).unwrap();
            std::fs::write(services.join(name).join("config.json"), config).unwrap();
        }
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        let mut system = crate::system::Fake::default();
        let bundles = ready_all(&mut system, root.path(), &Index::default(), &mut Vec::new());
        let ready: Vec<&str> = bundles
            .services
            .iter()
            .map(|p| p.found.name.as_str())
            .collect();
        assert_eq!(ready, ["good"]);
        let line = format!(
            "services broken: not started: {}/broken/config.json: not a JSON object but an array",
            services.display()
        );
        assert_eq!(system.calls, [format!("log {line}")]);
        let log = std::fs::read_to_string(root.path().join("var/log/broken.log")).unwrap();
        assert_eq!(log, format!("{line}\n"));
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
