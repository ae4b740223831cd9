//! The one shutdown path: whatever asked for it (power button, Ctrl-Alt-Del,
//! a signal, the control command, a fatal error), PID 1 ends the same way.
//!
//! The onshutdown bundles have run before this (not after a panic, when
//! init knows nothing of what ran); here services get SIGTERM (last started
//! first), a grace period, then SIGKILL; every other process gets SIGTERM,
//! a moment, then SIGKILL; then sync, unmount in reverse order (lazily
//! where busy; first the mounts containers made for the host, from
//! `/proc/self/mountinfo`), sync again, and power off or reboot.

use std::time::Duration;

use crate::system::{Power, System};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// Ends `services` (name, pid; in start order), unmounts `mounts` (init's
/// own, in mount order) and the others the kernel then lists, and powers
/// off or reboots.
pub fn shutdown(
    system: &mut dyn System,
    services: &[(String, i32)],
    grace: Duration,
    mounts: &[String],
    power: Power,
) {
    let mut alive: Vec<(String, i32)> = services.to_vec();
    for (name, pid) in alive.iter().rev() {
        system.log(&format!("stopping {name}"));
        if let Err(e) = system.kill(*pid, SIGTERM) {
            system.log(&format!("stopping {name}: {e}"));
        }
    }
    let deadline = system.now() + grace;
    wait(system, &mut alive, deadline);
    for (name, pid) in &alive {
        system.log(&format!("{name} did not stop within {grace:?}: killing it"));
        let _ = system.kill(*pid, SIGKILL);
    }
    let deadline = system.now() + Duration::from_secs(1);
    wait(system, &mut alive, deadline);
    // What is left (a service's other processes, probes, orphans): TERM,
    // a moment, KILL; then reap what ended.
    if system.kill_all(SIGTERM) > 0 {
        let deadline = system.now() + Duration::from_secs(1);
        drain(system, deadline);
        system.kill_all(SIGKILL);
        let deadline = system.now() + Duration::from_millis(500);
        drain(system, deadline);
    }
    system.sync();
    // Read now, once nothing runs: the mounts containers made for the host
    // (a data disk on /var/lib) go first.
    let mountinfo = system.mountinfo();
    let mounts = crate::boot::with_later_mounts(mounts, &mountinfo);
    for target in mounts.iter().rev() {
        if let Err(e) = system.unmount(target) {
            system.log(&format!("unmounting {target}: {e}"));
        }
    }
    system.sync();
    system.power(power);
}

/// Reaps whatever ends until `deadline`.
fn drain(system: &mut dyn System, deadline: std::time::Instant) {
    loop {
        let now = system.now();
        if now >= deadline {
            return;
        }
        let _ = system.reap(deadline - now);
    }
}

/// Reaps until every process in `alive` has ended or `deadline` passes.
fn wait(system: &mut dyn System, alive: &mut Vec<(String, i32)>, deadline: std::time::Instant) {
    while !alive.is_empty() {
        let now = system.now();
        if now >= deadline {
            return;
        }
        if let Some((pid, exit)) = system.reap(deadline - now)
            && let Some(i) = alive.iter().position(|(_, p)| *p == pid)
        {
            let (name, _) = alive.remove(i);
            system.log(&format!("{name} ended: {exit}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::Exit;
    use crate::system::Fake;

    #[test]
    fn services_get_term_then_kill_then_filesystems_go_then_power() {
        let mut system = Fake::default();
        // sshd ends a second after SIGTERM; stubborn never does, until killed.
        system
            .exits
            .push_back((Duration::from_secs(1), 10, Exit::Code(0)));
        system
            .exits
            .push_back((Duration::from_secs(30), 11, Exit::Signal(9)));
        let services = [("sshd".to_string(), 10), ("stubborn".to_string(), 11)];
        let mounts = ["/proc".to_string(), "/var".to_string()];
        system.busy.push("/var".into());
        system.mount_table = "22 1 0:21 / / ro - tmpfs rootfs rw\n\
                              30 22 0:30 / /var rw,shared:5 - tmpfs tmpfs rw\n\
                              41 30 254:0 / /var/lib rw,shared:5 - ext4 /dev/vda rw\n"
            .into();
        shutdown(
            &mut system,
            &services,
            Duration::from_secs(5),
            &mounts,
            Power::Off,
        );
        assert_eq!(
            system.calls,
            [
                "log stopping stubborn",
                "kill 11 15",
                "log stopping sshd",
                "kill 10 15",
                "log sshd ended: exit status 0",
                "log stubborn did not stop within 5s: killing it",
                "kill 11 9",
                "kill all 15",
                "sync",
                "unmount /var/lib",
                "unmount /var",
                "log unmounting /var: /var: busy",
                "unmount /proc",
                "sync",
                "power Off",
            ]
        );
    }

    #[test]
    fn nothing_running_goes_straight_to_power() {
        let mut system = Fake::default();
        shutdown(
            &mut system,
            &[],
            Duration::from_secs(10),
            &[],
            Power::Reboot,
        );
        assert_eq!(
            system.calls,
            ["kill all 15", "sync", "sync", "power Reboot"]
        );
    }
}
