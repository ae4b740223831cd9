//! Containers, through youki's libcontainer linked into PID 1.
//!
//! Containers run detached: libcontainer's intermediate process exits, so
//! each container's first process is reparented to PID 1 and its end is
//! reaped by the event loop ([`crate::events`]) like any other child. State lives under
//! [`STATE`]; stdout and stderr go to one pipe whose read end init keeps.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use rustix::pipe::PipeFlags;

use crate::seccomp::{self, Confinement};
use crate::system::{Launch, Started};

pub const STATE: &str = "/run/berth/containers";

/// An error with its causes, each once: libcontainer's own message is
/// often only the last step ("failed to prepare rootfs"), and some of its
/// errors also write their source into their own message.
fn chain(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let message = c.to_string();
        if !text.contains(&message) {
            text.push_str(&format!(": {message}"));
        }
        cause = c.source();
    }
    text
}

/// A pipe for a container's output: init reads the first end without
/// blocking; the second goes to the container as stdout and stderr.
fn output() -> Result<(OwnedFd, OwnedFd, OwnedFd), String> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(chain)?;
    rustix::io::ioctl_fionbio(&read, true).map_err(chain)?;
    let err = write.try_clone().map_err(chain)?;
    Ok((read, write, err))
}

/// libcontainer's executor, except that a command given by its absolute
/// path runs without `PATH` in the environment, as with runc: LinuxKit
/// definitions often replace the image's environment (`env:`) with one
/// that has no `PATH`; and that the container's seccomp filter is loaded
/// first ([`crate::seccomp`]: the executor runs in the container's process
/// after libcontainer dropped privileges, right before `execve`).
#[derive(Clone)]
struct Workload {
    confinement: Option<Confinement>,
}

impl Executor for Workload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(confinement) = &self.confinement {
            // stderr is the container's log: the reason lands there.
            seccomp::install(confinement).map_err(|e| {
                eprintln!("berth: {e}");
                ExecutorError::Other(e)
            })?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref();
        let args = process.and_then(|p| p.args().as_ref());
        let has_path = process
            .and_then(|p| p.env().as_ref())
            .is_some_and(|env| env.iter().any(|e| e.starts_with("PATH=")));
        match args.and_then(|a| a.first()) {
            Some(program) if program.starts_with('/') && !has_path => {
                match rustix::fs::access(program.as_str(), rustix::fs::Access::EXEC_OK) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(ExecutorValidationError::ArgValidationError(format!(
                        "{program}: {e}"
                    ))),
                }
            }
            _ => DefaultExecutor {}.validate(spec),
        }
    }
}

/// A container's seccomp profile, as [`crate::bundle::ready`] left it
/// beside the runtime's `config.json` in `bundle`.
fn confinement(bundle: &Path) -> Result<Option<Confinement>, String> {
    let path = bundle.join(seccomp::FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let file = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    seccomp::confinement(&file)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn builder(id: &str, bundle: &Path) -> Result<ContainerBuilder, String> {
    let workload = Workload {
        confinement: confinement(bundle)?,
    };
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(STATE)
        .map_err(chain)
        .map(|b| b.with_executor(workload))
}

pub fn start(launch: &Launch) -> Result<Started, String> {
    // A container of this id left from an earlier run is in the way.
    if Path::new(STATE).join(&launch.id).exists() {
        let _ = remove(&launch.id);
    }
    // Loaded before anything runs: rules init cannot enforce refuse the
    // container.
    let (devices, cgroup) = device_program(&launch.bundle.join("config.json"), launch.host_dev)?;
    // Attached to the cgroup before libcontainer moves the container's
    // first process into it, which it does before that process prepares
    // the root: a mount of a device in config.json is confined too.
    // libcontainer takes the directory as it finds it.
    std::fs::create_dir_all(&cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
    let built = crate::sys::attach_device_program(devices.as_fd(), &cgroup).and_then(|()| {
        let (read, write, err) = output()?;
        let null = File::open("/dev/null").map_err(chain)?;
        let container = builder(&launch.id, &launch.bundle)?
            .with_stdin(null)
            .with_stdout(write)
            .with_stderr(err)
            .as_init(&launch.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(chain)?;
        Ok((container, read))
    });
    let (mut container, read) = match built {
        Ok(built) => built,
        Err(e) => {
            // Nothing else is in it: the cgroup goes with its program.
            let _ = std::fs::remove_dir(&cgroup);
            return Err(e);
        }
    };
    let pid = container
        .pid()
        .ok_or_else(|| "the runtime gave no pid".to_string())?
        .as_raw();
    container.start().map_err(chain)?;
    Ok(Started {
        pid,
        output: Some(read),
    })
}

/// The device program of a bundle's `config.json` ([`crate::devices`]),
/// loaded, and the cgroup directory to attach it to. With `host_dev`, the
/// host's device nodes, as they are now, are first written into it (a
/// restart sees a disk that appeared since the last start; they replace
/// the YAML's `devices` nodes, as runc makes none when `/dev` is bound),
/// and the program allows each.
fn device_program(path: &Path, host_dev: bool) -> Result<(OwnedFd, PathBuf), String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| named(e.to_string()))?;
    let mut rules = crate::devices::rules(&config).map_err(named)?;
    if host_dev {
        let nodes = crate::bundle::host_devices(Path::new("/dev"));
        rules.extend(allowing(&nodes));
        let object = config
            .as_object_mut()
            .ok_or_else(|| named("not a JSON object".into()))?;
        crate::bundle::object_at(object, "linux")
            .map_err(named)?
            .insert("devices".into(), serde_json::Value::Array(nodes));
        let text = serde_json::to_vec_pretty(&config).map_err(|e| named(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| named(e.to_string()))?;
    }
    let cgroup = config
        .pointer("/linux/cgroupsPath")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| named("no linux.cgroupsPath".into()))?;
    let cgroup = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    let program = crate::devices::program(&rules).map_err(named)?;
    Ok((crate::sys::load_device_program(&program)?, cgroup))
}

/// A rule allowing each of `nodes` (OCI `linux.devices` entries), after
/// the others: the last rules win.
fn allowing(nodes: &[serde_json::Value]) -> Vec<crate::devices::Rule> {
    use crate::devices::{Kind, Rule};
    let number = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    nodes
        .iter()
        .filter_map(|n| {
            let kind = match n["type"].as_str()? {
                "b" => Kind::Block,
                "c" | "u" => Kind::Char,
                _ => return None,
            };
            Some(Rule {
                allow: true,
                kind,
                major: Some(number(&n["major"])?),
                minor: Some(number(&n["minor"])?),
                access: crate::devices::ALL,
            })
        })
        .collect()
}

/// Runs `args` in the running container `id` (a health probe), under the
/// container's seccomp profile, as runc's `exec` does; its output is
/// dropped, its errors go to the console.
pub fn exec(id: &str, args: &[String]) -> Result<i32, String> {
    let null = || File::open("/dev/null").map_err(chain);
    let console = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(chain)?;
    let bundle = crate::bundle::runtime_bundle(Path::new("/"), id);
    let pid = builder(id, &bundle)?
        .with_stdin(null()?)
        .with_stdout(null()?)
        .with_stderr(console)
        .as_tenant()
        .with_container_args(args.to_vec())
        .with_detach(true)
        .build()
        .map_err(chain)?;
    Ok(pid.as_raw())
}

pub fn remove(id: &str) -> Result<(), String> {
    let mut container = Container::load(PathBuf::from(STATE).join(id)).map_err(chain)?;
    container.delete(true).map_err(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that says `message` and has `source` as its cause.
    #[derive(Debug)]
    struct Failed {
        message: String,
        source: Option<Box<Failed>>,
    }

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as _)
        }
    }

    fn failed(messages: &[&str]) -> Failed {
        let (first, rest) = messages.split_first().unwrap();
        Failed {
            message: first.to_string(),
            source: (!rest.is_empty()).then(|| Box::new(failed(rest))),
        }
    }

    #[test]
    fn the_hosts_nodes_are_allowed() {
        use crate::devices::{Kind, Rule};
        use serde_json::json;
        let nodes = [
            json!({"path": "/dev/vda", "type": "b", "major": 254, "minor": 0}),
            json!({"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64}),
            json!({"path": "/dev/odd", "type": "b", "major": -3, "minor": 0}),
        ];
        let rule = |kind, major, minor| Rule {
            allow: true,
            kind,
            major: Some(major),
            minor: Some(minor),
            access: 7,
        };
        assert_eq!(
            allowing(&nodes),
            [rule(Kind::Block, 254, 0), rule(Kind::Char, 4, 64)]
        );
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        for (messages, expected) in [
            (
                &["failed to prepare rootfs"][..],
                "failed to prepare rootfs",
            ),
            (
                &["failed to prepare rootfs", "mount /x", "ENOENT"][..],
                "failed to prepare rootfs: mount /x: ENOENT",
            ),
            // A message that already carries its source's.
            (
                &["failed to set capabilities: EPERM", "EPERM"][..],
                "failed to set capabilities: EPERM",
            ),
        ] {
            assert_eq!(chain(failed(messages)), expected);
        }
    }
}
