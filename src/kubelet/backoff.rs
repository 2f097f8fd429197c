//! Restart back-off for crashing containers (CrashLoopBackOff): 10 s, doubling, capped at 5 min,
//! forgotten after a quiet period of twice the cap — the kubelet's defaults. Pure: time is passed
//! in as Unix milliseconds, so the state is persisted with the pod and survives agent restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// The back-off state of one container (wall-clock Unix milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The current delay, once the container has failed.
    pub delay_ms: Option<u64>,
    /// When the last failure was recorded.
    pub last_failure_ms: Option<u64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Backoff {
    /// Records a failure (an exit the restart policy restarts) at `now_ms` and returns how long to
    /// wait before the next start.
    pub fn record_failure(&mut self, policy: BackoffPolicy, now_ms: u64) -> Duration {
        let quiet_long_enough = self
            .last_failure_ms
            .is_some_and(|last| now_ms.saturating_sub(last) > millis(policy.max).saturating_mul(2));
        let next = match self.delay_ms {
            Some(delay) if !quiet_long_enough => delay.saturating_mul(2).min(millis(policy.max)),
            _ => millis(policy.initial),
        };
        self.delay_ms = Some(next);
        self.last_failure_ms = Some(now_ms);
        Duration::from_millis(next)
    }

    /// When (Unix ms) the container may start again, if it is backing off.
    pub fn ready_at(&self) -> Option<u64> {
        Some(self.last_failure_ms?.saturating_add(self.delay_ms?))
    }

    /// Whether the container is still waiting out its back-off at `now_ms`.
    pub fn waiting(&self, now_ms: u64) -> bool {
        self.ready_at().is_some_and(|at| now_ms < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_quiet_period() {
        let policy = BackoffPolicy::default();
        let mut b = Backoff::default();
        let mut now = 1_000_000;
        let mut delays = vec![];
        for _ in 0..7 {
            let d = b.record_failure(policy, now);
            delays.push(d.as_secs());
            now += millis(d) + 1000;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert!(!b.waiting(now));
        assert!(b.waiting(now - 2000));
        now += 601_000;
        assert_eq!(b.record_failure(policy, now), Duration::from_secs(10));
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let mut b = Backoff::default();
        b.record_failure(BackoffPolicy::default(), 5);
        let back: Backoff = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.ready_at(), Some(10_005));
    }
}
