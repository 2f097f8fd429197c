//! Probe bookkeeping (liveness, readiness, startup): when a probe is due and what its results
//! mean, with the kubelet's defaults and thresholds. Pure: time and results are passed in; running
//! the actual check (exec, httpGet, tcpSocket) is the caller's job.

use k8s_openapi::api::core::v1::Probe;
use std::time::{Duration, Instant};

/// A probe's timing and thresholds with Kubernetes' defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// Reads the timing fields of `probe` (defaults: period 10 s, timeout 1 s, thresholds 1 and 3).
    pub fn of(probe: &Probe) -> ProbeTiming {
        let secs = |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |v| v.max(0) as u64));
        let count = |v: Option<i32>, default: u32| v.map_or(default, |v| v.max(1) as u32);
        ProbeTiming {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// The verdict after enough consecutive results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// One probe of one container instance; reset when the container restarts.
#[derive(Debug, Clone)]
pub struct ProbeState {
    timing: ProbeTiming,
    started: Instant,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    verdict: Option<Verdict>,
}

impl ProbeState {
    /// A probe for a container that started at `started`.
    pub fn new(timing: ProbeTiming, started: Instant) -> ProbeState {
        ProbeState { timing, started, last_run: None, successes: 0, failures: 0, verdict: None }
    }

    /// When the next check is due.
    pub fn next_due(&self) -> Instant {
        match self.last_run {
            None => self.started + self.timing.initial_delay,
            Some(last) => last + self.timing.period,
        }
    }

    /// Whether a check should run at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due()
    }

    /// Records one check's result (a timeout counts as a failure) and returns the verdict once a
    /// threshold is crossed; the verdict stays until the opposite threshold is crossed.
    pub fn record(&mut self, now: Instant, ok: bool) -> Option<Verdict> {
        self.last_run = Some(now);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.timing.success_threshold {
                self.verdict = Some(Verdict::Success);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.timing.failure_threshold {
                self.verdict = Some(Verdict::Failure);
            }
        }
        self.verdict
    }

    /// The current verdict, if any threshold was crossed yet.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// The timing in force.
    pub fn timing(&self) -> ProbeTiming {
        self.timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kubernetes() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(
            t,
            ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3
            }
        );
    }

    #[test]
    fn failure_after_threshold_then_recovers() {
        let probe = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut s = ProbeState::new(ProbeTiming::of(&probe), t0);
        assert!(!s.due(t0 + Duration::from_secs(4)));
        assert!(s.due(t0 + Duration::from_secs(5)));
        let mut now = t0 + Duration::from_secs(5);
        assert_eq!(s.record(now, false), None);
        assert_eq!(s.next_due(), now + Duration::from_secs(2));
        now += Duration::from_secs(2);
        assert_eq!(s.record(now, false), Some(Verdict::Failure));
        now += Duration::from_secs(2);
        assert_eq!(s.record(now, true), Some(Verdict::Success));
    }
}
