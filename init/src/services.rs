//! The services: started in dependency order, restarted by policy with
//! backoff, probed for health, stopped and started on request.
//!
//! Everything goes through [`System`], and time is the caller's, so the
//! whole state machine is tested against the fake. The caller reaps: every
//! pid it reaps goes to [`Supervisor::exited`] before anything else starts,
//! and a container's pid is registered as soon as `start` returns it, before
//! the event loop ([`crate::events`]) reaps again, so no exit is lost or
//! misattributed.

use std::time::{Duration, Instant};

use contract::Healthcheck;

use crate::supervise::{Backoff, Exit, Service, State};
use crate::system::{Launch, Started, System};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
/// How long a service asked to stop gets before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Intervals and periods beyond a day are read as a day: no arithmetic on
/// times can overflow, whatever a label says.
const MAX_SECONDS: u64 = 86_400;
/// The first probe comes this soon after a start, so that services that
/// depend on a probed one do not wait a whole interval.
const FIRST_PROBE: Duration = Duration::from_secs(1);

/// What was asked of a service by the control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Stop,
    Restart,
}

#[derive(Debug, Clone, Default)]
struct Health {
    healthy: bool,
    /// Whether a probe ever passed since the start.
    passed: bool,
    started: Option<Instant>,
    failures: u32,
    next: Option<Instant>,
    /// A running exec probe: its pid and when it is given up on.
    probe: Option<(i32, Instant)>,
}

/// One supervised service.
#[derive(Debug)]
pub struct Unit {
    pub service: Service,
    pub launch: Launch,
    pub depends: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    health: Health,
    want: Want,
    /// When SIGKILL follows the SIGTERM sent to stop or restart it.
    kill_at: Option<Instant>,
}

impl Unit {
    pub fn new(
        service: Service,
        launch: Launch,
        depends: Vec<String>,
        healthcheck: Option<Healthcheck>,
    ) -> Unit {
        Unit {
            service,
            launch,
            depends,
            healthcheck,
            health: Health::default(),
            want: Want::Run,
            kill_at: None,
        }
    }

    /// Asks the running process to end: SIGTERM now, SIGKILL after
    /// [`STOP_GRACE`].
    fn terminate(&mut self, system: &mut dyn System, now: Instant) -> Result<(), String> {
        let Some(pid) = self.service.pid() else {
            return Ok(());
        };
        self.kill_at.get_or_insert(now + STOP_GRACE);
        system.kill(pid, SIGTERM)
    }

    /// Running, and healthy if it is probed.
    fn ready(&self) -> bool {
        self.service.pid().is_some() && (self.healthcheck.is_none() || self.health.healthy)
    }
}

/// A row of `berthctl list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub state: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
}

#[derive(Debug, Default)]
pub struct Supervisor {
    pub units: Vec<Unit>,
}

// Indexes are positions in `units`, taken from `units` itself and never
// from the image: the list does not change size after `new`.
#[allow(clippy::indexing_slicing)]
impl Supervisor {
    pub fn new(units: Vec<Unit>) -> Supervisor {
        Supervisor { units }
    }

    /// Starts what is due and whose dependencies are ready, and runs the
    /// probes that are due. Returns what was started, for its output.
    pub fn tick(&mut self, system: &mut dyn System, now: Instant) -> Vec<(String, Started)> {
        let mut started = Vec::new();
        for unit in &mut self.units {
            if let (Some(pid), Some(at)) = (unit.service.pid(), unit.kill_at)
                && now >= at
            {
                system.log(&format!(
                    "{} did not stop within {STOP_GRACE:?}: killing it",
                    unit.service.name
                ));
                let _ = system.kill(pid, SIGKILL);
                unit.kill_at = None;
            }
        }
        for i in 0..self.units.len() {
            let unit = &self.units[i];
            if unit.want == Want::Stop || !unit.service.due(now) || self.blocked(i) {
                continue;
            }
            let unit = &mut self.units[i];
            match system.start(&unit.launch) {
                Ok(s) => {
                    system.log(&format!("started {} (pid {})", unit.service.name, s.pid));
                    unit.service.started(s.pid, now);
                    unit.want = Want::Run;
                    unit.kill_at = None;
                    unit.health = Health {
                        next: Some(now + FIRST_PROBE),
                        started: Some(now),
                        ..Health::default()
                    };
                    started.push((unit.service.name.clone(), s));
                }
                Err(e) => {
                    system.log(&format!("starting {}: {e}", unit.service.name));
                    system.remove(&unit.launch.id);
                    unit.service.started(0, now);
                    self.ended(system, i, Exit::Code(127), now);
                }
            }
        }
        self.probe(system, now);
        started
    }

    /// Whether a dependency of unit `i` is not ready yet.
    fn blocked(&self, i: usize) -> bool {
        self.units[i].depends.iter().any(|d| {
            self.units
                .iter()
                .find(|u| u.service.name == *d)
                .is_some_and(|u| !u.ready())
        })
    }

    fn probe(&mut self, system: &mut dyn System, now: Instant) {
        for i in 0..self.units.len() {
            let unit = &mut self.units[i];
            let Some(check) = unit.healthcheck.clone() else {
                continue;
            };
            // A probe that hangs past its time is a failure.
            if let Some((pid, deadline)) = unit.health.probe
                && now >= deadline
            {
                unit.health.probe = None;
                let _ = system.kill(pid, SIGKILL);
                system.log(&format!("{}: health check timed out", unit.service.name));
                self.record(system, i, false, now);
                continue;
            }
            let unit = &mut self.units[i];
            let due = unit.health.next.is_some_and(|at| now >= at);
            if unit.service.pid().is_none() || unit.health.probe.is_some() || !due {
                continue;
            }
            let interval = Duration::from_secs(check.interval.clamp(1, MAX_SECONDS));
            unit.health.next = Some(now + interval);
            if let Some(args) = &check.exec {
                match system.exec(&unit.launch.id, args) {
                    Ok(pid) => unit.health.probe = Some((pid, now + interval)),
                    Err(e) => {
                        system.log(&format!("probing {}: {e}", unit.service.name));
                        self.record(system, i, false, now);
                    }
                }
            } else if let Some(address) = &check.tcp {
                let ok = system.connect(address);
                self.record(system, i, ok, now);
            }
        }
    }

    /// A probe's verdict; enough failures in a row restart the service.
    fn record(&mut self, system: &mut dyn System, i: usize, ok: bool, now: Instant) {
        let unit = &mut self.units[i];
        let Some(check) = &unit.healthcheck else {
            return;
        };
        let retries = check.retries.max(1);
        if ok {
            if !unit.health.healthy {
                system.log(&format!("{} is healthy", unit.service.name));
            }
            unit.health.healthy = true;
            unit.health.passed = true;
            unit.health.failures = 0;
            return;
        }
        let period = Duration::from_secs(check.start_period.min(MAX_SECONDS));
        let starting = unit.health.started.is_some_and(|at| now < at + period);
        if starting && !unit.health.passed {
            return;
        }
        unit.health.failures += 1;
        if unit.health.failures >= retries && unit.want == Want::Run {
            unit.health.healthy = false;
            system.log(&format!(
                "{} failed {} health checks in a row: restarting it",
                unit.service.name, unit.health.failures
            ));
            if unit.service.pid().is_some() {
                unit.want = Want::Restart;
                let _ = unit.terminate(system, now);
            }
        }
    }

    /// A reaped pid: returns whether it was a service's or a probe's.
    pub fn exited(&mut self, system: &mut dyn System, pid: i32, exit: Exit, now: Instant) -> bool {
        let probe_of = |u: &Unit| u.health.probe.is_some_and(|(p, _)| p == pid);
        if let Some(i) = self.units.iter().position(probe_of) {
            self.units[i].health.probe = None;
            if !exit.success() {
                let name = &self.units[i].service.name;
                system.log(&format!("{name}: health check failed: {exit}"));
            }
            self.record(system, i, exit.success(), now);
            return true;
        }
        let Some(i) = self.units.iter().position(|u| u.service.pid() == Some(pid)) else {
            return false;
        };
        system.remove(&self.units[i].launch.id);
        self.ended(system, i, exit, now);
        true
    }

    fn ended(&mut self, system: &mut dyn System, i: usize, exit: Exit, now: Instant) {
        let unit = &mut self.units[i];
        let name = unit.service.name.clone();
        unit.health = Health::default();
        unit.kill_at = None;
        match unit.want {
            Want::Stop => {
                unit.service.last_exit = Some(exit);
                unit.service.stop();
                system.log(&format!("{name} stopped: {exit}"));
            }
            Want::Restart => {
                unit.service.last_exit = Some(exit);
                unit.service.restart_now(now);
                unit.want = Want::Run;
                system.log(&format!("{name} ended: {exit}; starting it again"));
            }
            Want::Run => match unit.service.exited(exit, now) {
                Some(at) => system.log(&format!(
                    "{name} ended: {exit}; restarting in {:?}",
                    at.saturating_duration_since(now)
                )),
                None => system.log(&format!("{name} ended: {exit}; not restarted")),
            },
        }
    }

    fn find(&mut self, name: &str) -> Result<&mut Unit, String> {
        self.units
            .iter_mut()
            .find(|u| u.service.name == name)
            .ok_or_else(|| format!("no service {name:?}"))
    }

    pub fn stop(
        &mut self,
        system: &mut dyn System,
        name: &str,
        now: Instant,
    ) -> Result<String, String> {
        let unit = self.find(name)?;
        unit.want = Want::Stop;
        match unit.service.pid() {
            Some(pid) => {
                unit.terminate(system, now)?;
                Ok(format!("stopping {name} (pid {pid})"))
            }
            None => {
                unit.service.stop();
                Ok(format!("{name} stopped"))
            }
        }
    }

    pub fn start(&mut self, name: &str, now: Instant) -> Result<String, String> {
        let unit = self.find(name)?;
        unit.want = Want::Run;
        match unit.service.state {
            State::Running { pid, .. } => Ok(format!("{name} is running (pid {pid})")),
            _ => {
                unit.service.restart_now(now);
                Ok(format!("starting {name}"))
            }
        }
    }

    pub fn restart(
        &mut self,
        system: &mut dyn System,
        name: &str,
        now: Instant,
    ) -> Result<String, String> {
        let unit = self.find(name)?;
        match unit.service.pid() {
            Some(pid) => {
                unit.want = Want::Restart;
                unit.terminate(system, now)?;
                Ok(format!("restarting {name} (pid {pid})"))
            }
            None => self.start(name, now),
        }
    }

    pub fn status(&self) -> Vec<Status> {
        self.units
            .iter()
            .map(|u| {
                let state = match (u.service.state, u.want) {
                    (State::Running { .. }, Want::Stop) => "stopping".to_string(),
                    (State::Running { .. }, _) if u.healthcheck.is_some() => if u.health.healthy {
                        "healthy"
                    } else {
                        "running"
                    }
                    .to_string(),
                    (State::Running { .. }, _) => "running".to_string(),
                    (State::Waiting, _) => "waiting".to_string(),
                    (State::Backoff { .. }, _) => "backoff".to_string(),
                    (State::Stopped, _) => "stopped".to_string(),
                };
                Status {
                    name: u.service.name.clone(),
                    state,
                    pid: u.service.pid(),
                    restarts: u.service.restarts,
                    last_exit: u.service.last_exit,
                }
            })
            .collect()
    }

    /// Running services, in start order, for the shutdown.
    pub fn running(&self) -> Vec<(String, i32)> {
        let mut running: Vec<(Instant, String, i32)> = self
            .units
            .iter()
            .filter_map(|u| match u.service.state {
                State::Running { pid, since } => Some((since, u.service.name.clone(), pid)),
                _ => None,
            })
            .collect();
        running.sort_by_key(|(since, _, _)| *since);
        running.into_iter().map(|(_, n, p)| (n, p)).collect()
    }

    /// How long the event loop may sleep before something is due. A unit
    /// waiting for a dependency is not due: what unblocks it (a start, a
    /// probe's result) wakes the loop itself.
    pub fn next_wake(&self, now: Instant) -> Option<Duration> {
        (0..self.units.len())
            .flat_map(|i| {
                let u = &self.units[i];
                let start = match u.service.state {
                    _ if u.want == Want::Stop || self.blocked(i) => None,
                    State::Backoff { at } => Some(at),
                    State::Waiting => Some(now),
                    _ => None,
                };
                let probe = match u.health.probe {
                    Some((_, deadline)) => Some(deadline),
                    None => u.healthcheck.as_ref().and(u.health.next),
                };
                let probe = u.service.pid().and(probe);
                [start, probe, u.service.pid().and(u.kill_at)]
            })
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }
}

/// The default backoff of every service.
pub fn backoff() -> Backoff {
    Backoff::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::Restart;
    use crate::system::Fake;
    use std::path::PathBuf;

    fn unit(name: &str, restart: Restart, depends: &[&str]) -> Unit {
        Unit::new(
            Service::new(name, restart, backoff()),
            Launch {
                id: name.into(),
                bundle: PathBuf::from(format!("/run/berth/bundles/{name}")),
                host_dev: false,
            },
            depends.iter().map(|d| d.to_string()).collect(),
            None,
        )
    }

    fn started(list: Vec<(String, Started)>) -> Vec<(String, i32)> {
        list.into_iter().map(|(n, s)| (n, s.pid)).collect()
    }

    #[test]
    fn a_crash_loop_backs_off_while_the_others_run_and_never_stays_down() {
        let mut system = Fake::default();
        let mut s = Supervisor::new(vec![
            unit("crash", Restart::Always, &[]),
            unit("steady", Restart::Always, &[]),
            unit("once", Restart::Never, &[]),
        ]);
        let t0 = Instant::now();
        let first = started(s.tick(&mut system, t0));
        assert_eq!(
            first,
            [
                ("crash".into(), 100),
                ("steady".into(), 101),
                ("once".into(), 102)
            ]
        );
        let mut now = t0;
        let mut pid = 100;
        let mut starts = Vec::new();
        for _ in 0..5 {
            now += Duration::from_millis(10);
            assert!(s.exited(&mut system, pid, Exit::Code(1), now));
            let wait = s.next_wake(now).unwrap();
            assert!(started(s.tick(&mut system, now + wait / 2)).is_empty());
            now += wait;
            let again = started(s.tick(&mut system, now));
            assert_eq!(again.len(), 1);
            pid = again[0].1;
            starts.push(wait.as_secs());
        }
        assert_eq!(starts, [1, 2, 4, 8, 16]);
        assert!(s.exited(&mut system, 102, Exit::Code(0), now));
        assert!(
            !s.exited(&mut system, 4242, Exit::Code(0), now),
            "an orphan is no service's"
        );
        let status = s.status();
        assert_eq!(
            (
                status[0].restarts,
                &status[0].state[..],
                status[0].last_exit
            ),
            (5, "running", Some(Exit::Code(1)))
        );
        assert_eq!(
            (&status[1].state[..], status[1].pid),
            ("running", Some(101))
        );
        assert_eq!((&status[2].state[..], status[2].pid), ("stopped", None));
        assert!(
            started(s.tick(&mut system, now + Duration::from_secs(3600)))
                .iter()
                .all(|(n, _)| n != "once")
        );
        assert!(system.calls.contains(&"remove crash".to_string()));
        assert!(
            system
                .calls
                .contains(&"log once ended: exit status 0; not restarted".to_string())
        );
    }

    #[test]
    fn dependencies_start_first_and_a_failed_start_backs_off() {
        let mut system = Fake::default();
        system.broken.push("db".into());
        let mut s = Supervisor::new(vec![
            unit("web", Restart::Always, &["db"]),
            unit("db", Restart::Always, &[]),
        ]);
        let t0 = Instant::now();
        assert!(started(s.tick(&mut system, t0)).is_empty());
        assert!(
            system
                .calls
                .contains(&"log starting db: db: broken".to_string())
        );
        system.broken.clear();
        assert!(started(s.tick(&mut system, t0 + Duration::from_millis(500))).is_empty());
        let at = t0 + Duration::from_secs(1);
        assert_eq!(started(s.tick(&mut system, at)), [("db".into(), 100)]);
        assert_eq!(started(s.tick(&mut system, at)), [("web".into(), 101)]);
    }

    #[test]
    fn health_gates_dependents_and_failing_probes_restart() {
        let mut system = Fake::default();
        let mut db = unit("db", Restart::Always, &[]);
        db.healthcheck = Some(Healthcheck {
            exec: Some(vec!["check".into()]),
            tcp: None,
            interval: 5,
            retries: 2,
            start_period: 3,
        });
        let mut s = Supervisor::new(vec![db, unit("web", Restart::Always, &["db"])]);
        let t0 = Instant::now();
        assert_eq!(started(s.tick(&mut system, t0)), [("db".into(), 100)]);
        assert_eq!(s.status()[0].state, "running");
        // Failing while it starts counts for nothing.
        let t1 = t0 + FIRST_PROBE;
        assert!(started(s.tick(&mut system, t1)).is_empty());
        assert!(system.calls.contains(&"exec db check".to_string()));
        assert!(s.exited(&mut system, 101, Exit::Code(1), t1));
        let t1 = t1 + Duration::from_secs(5);
        s.tick(&mut system, t1);
        assert!(s.exited(&mut system, 102, Exit::Code(0), t1));
        assert!(!system.calls.iter().any(|c| c.starts_with("kill")));
        assert_eq!(s.status()[0].state, "healthy");
        assert_eq!(started(s.tick(&mut system, t1)), [("web".into(), 103)]);
        // Two failed probes in a row: SIGTERM, then an immediate start.
        for (n, pid) in [(1, 104), (2, 105)] {
            let t = t1 + Duration::from_secs(5 * n);
            s.tick(&mut system, t);
            assert!(s.exited(&mut system, pid, Exit::Code(1), t));
        }
        assert!(system.calls.contains(&"kill 100 15".to_string()));
        let t = t1 + Duration::from_secs(10);
        assert!(s.exited(&mut system, 100, Exit::Signal(15), t));
        assert_eq!(started(s.tick(&mut system, t)), [("db".into(), 106)]);
    }

    #[test]
    fn a_blocked_dependent_does_not_spin_the_loop_and_stubborn_ones_get_killed() {
        let mut system = Fake::default();
        let mut db = unit("db", Restart::Never, &[]);
        db.healthcheck = Some(Healthcheck {
            exec: None,
            tcp: Some("127.0.0.1:5432".into()),
            interval: 5,
            retries: 3,
            start_period: 30,
        });
        let mut s = Supervisor::new(vec![db, unit("web", Restart::Always, &["db"])]);
        let t0 = Instant::now();
        assert_eq!(started(s.tick(&mut system, t0)), [("db".into(), 100)]);
        // web waits for db's probe: the loop sleeps until then, not zero.
        assert_eq!(s.next_wake(t0), Some(FIRST_PROBE));
        system.listening.push("127.0.0.1:5432".into());
        let t1 = t0 + FIRST_PROBE;
        assert!(started(s.tick(&mut system, t1)).is_empty());
        assert_eq!(started(s.tick(&mut system, t1)), [("web".into(), 101)]);
        assert!(s.exited(&mut system, 100, Exit::Code(0), t1));
        assert_eq!(s.next_wake(t1), None, "db ended for good; web runs");
        // web ignores SIGTERM: SIGKILL follows after the grace.
        s.stop(&mut system, "web", t1).unwrap();
        assert_eq!(s.next_wake(t1), Some(STOP_GRACE));
        s.tick(&mut system, t1 + STOP_GRACE);
        assert!(system.calls.ends_with(&[
            "log web did not stop within 10s: killing it".to_string(),
            "kill 101 9".to_string()
        ]));
    }

    #[test]
    fn a_hung_probe_times_out_as_a_failure() {
        let mut system = Fake::default();
        let mut db = unit("db", Restart::Always, &[]);
        db.healthcheck = Some(Healthcheck {
            exec: Some(vec!["check".into()]),
            tcp: None,
            interval: 2,
            retries: 1,
            start_period: 0,
        });
        let mut s = Supervisor::new(vec![db]);
        let t0 = Instant::now();
        s.tick(&mut system, t0);
        let t1 = t0 + FIRST_PROBE;
        s.tick(&mut system, t1);
        assert_eq!(s.next_wake(t1), Some(Duration::from_secs(2)));
        s.tick(&mut system, t1 + Duration::from_secs(2));
        assert!(
            system.calls.contains(&"kill 101 9".to_string()),
            "{:?}",
            system.calls
        );
        assert!(
            system
                .calls
                .contains(&"log db: health check timed out".to_string())
        );
        assert!(
            system.calls.contains(&"kill 100 15".to_string()),
            "restarted"
        );
    }

    #[test]
    fn stop_start_and_restart_on_request() {
        let mut system = Fake::default();
        let mut s = Supervisor::new(vec![unit("a", Restart::Always, &[])]);
        let t0 = Instant::now();
        s.tick(&mut system, t0);
        assert_eq!(
            s.stop(&mut system, "a", t0),
            Ok("stopping a (pid 100)".into())
        );
        assert_eq!(s.status()[0].state, "stopping");
        s.exited(&mut system, 100, Exit::Signal(15), t0);
        assert_eq!(s.status()[0].state, "stopped");
        assert!(started(s.tick(&mut system, t0 + Duration::from_secs(600))).is_empty());
        assert_eq!(s.start("a", t0), Ok("starting a".into()));
        assert_eq!(started(s.tick(&mut system, t0)), [("a".into(), 101)]);
        assert_eq!(
            s.restart(&mut system, "a", t0),
            Ok("restarting a (pid 101)".into())
        );
        s.exited(&mut system, 101, Exit::Signal(15), t0);
        assert_eq!(started(s.tick(&mut system, t0)), [("a".into(), 102)]);
        assert_eq!(s.status()[0].restarts, 2);
        assert_eq!(s.running(), [("a".to_string(), 102)]);
        assert_eq!(s.stop(&mut system, "b", t0), Err("no service \"b\"".into()));
    }
}
