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
/// that has no `PATH`.
#[derive(Clone)]
struct Workload;

impl Executor for Workload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
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

fn builder(id: &str) -> Result<ContainerBuilder, String> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(STATE)
        .map_err(chain)
        .map(|b| b.with_executor(Workload))
}

pub fn start(launch: &Launch) -> Result<Started, String> {
    // A container of this id left from an earlier run is in the way.
    if Path::new(STATE).join(&launch.id).exists() {
        let _ = remove(&launch.id);
    }
    if launch.host_dev {
        with_host_devices(&launch.bundle.join("config.json"))?;
    }
    let (read, write, err) = output()?;
    let null = File::open("/dev/null").map_err(chain)?;
    let mut container = builder(&launch.id)?
        .with_stdin(null)
        .with_stdout(write)
        .with_stderr(err)
        .as_init(&launch.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(chain)?;
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

/// Lists the host's device nodes in a bundle's `config.json`, as they are
/// now: a restart sees a disk that appeared since the last start. They
/// replace the YAML's `devices` nodes, as runc makes none when `/dev` is
/// bound.
fn with_host_devices(path: &Path) -> Result<(), String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| named(e.to_string()))?;
    let object = config
        .as_object_mut()
        .ok_or_else(|| named("not a JSON object".into()))?;
    crate::bundle::object_at(object, "linux")
        .map_err(named)?
        .insert(
            "devices".into(),
            serde_json::Value::Array(crate::bundle::host_devices(Path::new("/dev"))),
        );
    let text = serde_json::to_vec_pretty(&config).map_err(|e| named(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| named(e.to_string()))
}

/// Runs `args` in the running container `id` (a health probe); its output
/// is dropped, its errors go to the console.
pub fn exec(id: &str, args: &[String]) -> Result<i32, String> {
    let null = || File::open("/dev/null").map_err(chain);
    let console = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(chain)?;
    let pid = builder(id)?
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
