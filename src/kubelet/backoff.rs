//! Restart back-off for crashing containers (CrashLoopBackOff): 10 s, doubling, capped at 5 min,
//! forgotten after a quiet period of twice the cap — the kubelet's defaults. Pure: time is passed in.

use std::time::{Duration, Instant};

/// Back-off parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy { initial: Duration::from_secs(10), max: Duration::from_secs(300) }
    }
}

/// The back-off state of one container.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// Records a failure (an exit the restart policy restarts) at `now` and returns how long to wait
    /// before the next start.
    pub fn record_failure(&mut self, policy: BackoffPolicy, now: Instant) -> Duration {
        let quiet_long_enough =
            self.last_failure.is_some_and(|last| now.saturating_duration_since(last) > policy.max * 2);
        let next = match self.delay {
            Some(delay) if !quiet_long_enough => (delay * 2).min(policy.max),
            _ => policy.initial,
        };
        self.delay = Some(next);
        self.last_failure = Some(now);
        next
    }

    /// When the container may start again, if it is backing off.
    pub fn ready_at(&self) -> Option<Instant> {
        Some(self.last_failure? + self.delay?)
    }

    /// Whether the container is still waiting out its back-off at `now`.
    pub fn waiting(&self, now: Instant) -> bool {
        self.ready_at().is_some_and(|at| now < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_quiet_period() {
        let policy = BackoffPolicy::default();
        let mut b = Backoff::default();
        let mut now = Instant::now();
        let mut delays = vec![];
        for _ in 0..7 {
            let d = b.record_failure(policy, now);
            delays.push(d.as_secs());
            now += d + Duration::from_secs(1);
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert!(!b.waiting(now));
        assert!(b.waiting(now - Duration::from_secs(2)));
        now += Duration::from_secs(601);
        assert_eq!(b.record_failure(policy, now), Duration::from_secs(10));
    }
}
