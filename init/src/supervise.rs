//! Supervision: when a service that ended is started again.
//!
//! Pure logic, driven by the caller with the current time, so that restart
//! policies and backoff are tested without processes or clocks. Starting
//! processes and reaping them is the caller's business.

use std::time::{Duration, Instant};

pub use contract::Restart;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The backoff: the first restart waits `first`, each quick failure after
/// that doubles the wait up to `longest`; a run of `healthy` or more
/// resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub longest: Duration,
    pub healthy: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            longest: Duration::from_secs(60),
            healthy: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Waiting,
    Running {
        pid: i32,
        since: Instant,
    },
    /// Ended; starts again at `at`.
    Backoff {
        at: Instant,
    },
    /// Ended for good (by policy, or stopped by request).
    Stopped,
}

/// One supervised service.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub restart: Restart,
    pub backoff: Backoff,
    pub state: State,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// The wait before the next restart after a quick failure.
    delay: Duration,
}

impl Service {
    pub fn new(name: impl Into<String>, restart: Restart, backoff: Backoff) -> Service {
        Service {
            name: name.into(),
            restart,
            backoff,
            state: State::Waiting,
            restarts: 0,
            last_exit: None,
            delay: backoff.first,
        }
    }

    pub fn started(&mut self, pid: i32, now: Instant) {
        if matches!(self.state, State::Backoff { .. }) {
            self.restarts += 1;
        }
        self.state = State::Running { pid, since: now };
    }

    /// Records that the service's process ended at `now`; returns when it
    /// is to start again, if ever.
    pub fn exited(&mut self, exit: Exit, now: Instant) -> Option<Instant> {
        let ran = match self.state {
            State::Running { since, .. } => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        self.last_exit = Some(exit);
        let again = match self.restart {
            Restart::Always => true,
            Restart::OnFailure => !exit.success(),
            Restart::Never => false,
        };
        if !again {
            self.state = State::Stopped;
            return None;
        }
        if ran >= self.backoff.healthy {
            self.delay = self.backoff.first;
        }
        let at = now + self.delay;
        self.delay = (self.delay * 2).min(self.backoff.longest);
        self.state = State::Backoff { at };
        Some(at)
    }

    /// Whether the service should be started at `now`.
    pub fn due(&self, now: Instant) -> bool {
        match self.state {
            State::Waiting => true,
            State::Backoff { at } => now >= at,
            _ => false,
        }
    }

    /// Makes the service due at once (a start or restart by request).
    pub fn restart_now(&mut self, now: Instant) {
        self.state = State::Backoff { at: now };
    }

    /// Stops supervising: the process, if any, is the caller's to end.
    pub fn stop(&mut self) {
        self.state = State::Stopped;
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_crash_loop_backs_off_doubling_to_a_minute() {
        let t0 = Instant::now();
        let mut service = Service::new("crash", Restart::Always, Backoff::default());
        let mut now = t0;
        let mut waits = Vec::new();
        for pid in 1..=9 {
            assert!(service.due(now));
            service.started(pid, now);
            now += Duration::from_millis(100);
            let at = service.exited(Exit::Code(1), now).expect("always restarts");
            waits.push(at.duration_since(now).as_secs());
            now = at;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(service.restarts, 8);
    }

    #[test]
    fn a_minute_of_healthy_running_resets_the_backoff() {
        let mut now = Instant::now();
        let mut service = Service::new("s", Restart::Always, Backoff::default());
        for _ in 0..4 {
            service.started(1, now);
            now = service.exited(Exit::Signal(9), now).unwrap();
        }
        service.started(2, now);
        now += secs(61);
        let at = service.exited(Exit::Code(0), now).unwrap();
        assert_eq!(at - now, secs(1));
    }

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut never = Service::new("n", Restart::Never, Backoff::default());
        never.started(1, now);
        assert_eq!(never.exited(Exit::Code(1), now), None);
        assert_eq!(never.state, State::Stopped);
        assert!(!never.due(now + secs(1000)));

        let mut on_failure = Service::new("f", Restart::OnFailure, Backoff::default());
        on_failure.started(1, now);
        assert!(on_failure.exited(Exit::Signal(15), now).is_some());
        on_failure.started(2, now + secs(1));
        assert_eq!(on_failure.exited(Exit::Code(0), now + secs(2)), None);
        assert_eq!(on_failure.last_exit, Some(Exit::Code(0)));
    }

    #[test]
    fn not_due_while_running_or_backing_off() {
        let now = Instant::now();
        let mut service = Service::new("s", Restart::Always, Backoff::default());
        service.started(7, now);
        assert_eq!(service.pid(), Some(7));
        assert!(!service.due(now));
        let at = service.exited(Exit::Code(2), now).unwrap();
        assert!(!service.due(at - Duration::from_millis(1)));
        assert!(service.due(at));
        assert_eq!("on-failure".parse(), Ok(Restart::OnFailure));
        assert!("sometimes".parse::<Restart>().is_err());
    }
}
