//! Containers, through youki's libcontainer linked into PID 1.
//!
//! Containers run detached: libcontainer's intermediate process exits, so
//! each container's first process is reparented to PID 1 and its end is
//! reaped by the main loop like any other child. State lives under
//! [`STATE`]; stdout and stderr go to one pipe whose read end init keeps.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use rustix::pipe::PipeFlags;

use crate::system::{Launch, Started};

pub const STATE: &str = "/run/berth/containers";

/// An error with its causes: libcontainer's own message is often only
/// the last step ("failed to prepare rootfs").
fn io(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// A pipe for a container's output: init reads the first end without
/// blocking; the second goes to the container as stdout and stderr.
fn output() -> Result<(OwnedFd, OwnedFd, OwnedFd), String> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io)?;
    rustix::io::ioctl_fionbio(&read, true).map_err(io)?;
    let err = write.try_clone().map_err(io)?;
    Ok((read, write, err))
}

fn builder(id: &str) -> Result<ContainerBuilder, String> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(STATE)
        .map_err(io)
        .map(|b| b.with_executor(DefaultExecutor {}))
}

pub fn start(launch: &Launch) -> Result<Started, String> {
    // A container of this id left from an earlier run is in the way.
    if Path::new(STATE).join(&launch.id).exists() {
        let _ = remove(&launch.id);
    }
    let (read, write, err) = output()?;
    let null = File::open("/dev/null").map_err(io)?;
    let mut container = builder(&launch.id)?
        .with_stdin(null)
        .with_stdout(write)
        .with_stderr(err)
        .as_init(&launch.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(io)?;
    let pid = container
        .pid()
        .ok_or_else(|| "the runtime gave no pid".to_string())?
        .as_raw();
    container.start().map_err(io)?;
    Ok(Started {
        pid,
        output: Some(read),
    })
}

/// Runs `args` in the running container `id` (a health probe); its output
/// is dropped, its errors go to the console.
pub fn exec(id: &str, args: &[String]) -> Result<i32, String> {
    let null = || File::open("/dev/null").map_err(io);
    let console = std::io::stderr().as_fd().try_clone_to_owned().map_err(io)?;
    let pid = builder(id)?
        .with_stdin(null()?)
        .with_stdout(null()?)
        .with_stderr(console)
        .as_tenant()
        .with_container_args(args.to_vec())
        .with_detach(true)
        .build()
        .map_err(io)?;
    Ok(pid.as_raw())
}

pub fn remove(id: &str) -> Result<(), String> {
    let mut container = Container::load(PathBuf::from(STATE).join(id)).map_err(io)?;
    container.delete(true).map_err(io)
}
