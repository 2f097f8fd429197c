//! Level-triggered loop driver: a controller re-syncs the whole state whenever any watched kind changes
//! (changes coalesce) or after a resync period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::master::client::{ClusterApi, Object};
use crate::master::metrics::QueueMetrics;

/// Pause after a change so a burst (e.g. many pods scheduled at once) costs one sync, and a controller
/// that keeps changing what it watches cannot spin.
const SETTLE: Duration = Duration::from_millis(10);

/// Whether two values are the same once serialized, treating null, zero, false and empty as absent
/// (the API may round-trip `readyReplicas: 0` as missing). Prevents status write loops.
pub fn semantically_equal<T: serde::Serialize>(a: &T, b: &T) -> bool {
    fn prune(v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => {
                items.iter_mut().for_each(|i| {
                    prune(i);
                });
                !items.is_empty()
            }
            Value::Object(map) => {
                map.retain(|_, child| prune(child));
                !map.is_empty()
            }
        }
    }
    let (Ok(mut a), Ok(mut b)) = (serde_json::to_value(a), serde_json::to_value(b)) else { return false };
    prune(&mut a);
    prune(&mut b);
    a == b
}

/// Wakes a controller when watched kinds change.
pub struct Trigger {
    /// `workqueue_adds_total` and `workqueue_depth` under the loop's name.
    queue: QueueMetrics,
    tx: mpsc::UnboundedSender<()>,
    rx: mpsc::UnboundedReceiver<()>,
    tasks: Vec<JoinHandle<()>>,
    settle: Duration,
    /// When the last change woke the loop.
    woke: Option<tokio::time::Instant>,
}

impl Default for Trigger {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Trigger { queue: QueueMetrics::default(), tx, rx, tasks: Vec::new(), settle: SETTLE, woke: None }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Trigger {
    /// Wake at most once per `settle`: a change after a quiet spell wakes the loop at once (after
    /// the brief [`SETTLE`]), and changes within `settle` of that wake gather until it is over, so a
    /// loop over a kind that changes all the time (Node status, Pods on a busy cluster) runs at most
    /// about once per `settle` without delaying the first change (a Service's new selector).
    pub fn paced(mut self, settle: Duration) -> Self {
        self.settle = settle.max(SETTLE);
        self
    }

    /// Also wake on changes of kind `K` (all namespaces). The first watch is open when this returns, so no
    /// change after it is missed; watches reopen when they end.
    pub async fn watch<K: Object, C: ClusterApi>(mut self, client: &Arc<C>) -> Self {
        let first = client.changes::<K>().await;
        let client = client.clone();
        let tx = self.tx.clone();
        let queue = self.queue.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                let opened = match next.take() {
                    Some(w) => w,
                    None => client.changes::<K>().await,
                };
                match opened {
                    Ok(mut stream) => {
                        while stream.next().await.is_some() {
                            if tx.send(()).is_err() {
                                return;
                            }
                            queue.add();
                        }
                    }
                    Err(e) => tracing::debug!(kind = K::KIND, error = %e, "controller watch failed"),
                }
                if tx.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        self
    }

    /// Wait for a change (or `timeout`), let a burst of changes gather (see [`Self::paced`]), then
    /// swallow the queued ones.
    pub async fn wait(&mut self, timeout: Duration) {
        let mut taken = 0;
        if let Ok(Some(())) = tokio::time::timeout(timeout, self.rx.recv()).await {
            taken += 1;
            let since = self.woke.map_or(self.settle, |w| w.elapsed());
            tokio::time::sleep(self.settle.saturating_sub(since).max(SETTLE)).await;
            self.woke = Some(tokio::time::Instant::now());
        }
        while self.rx.try_recv().is_ok() {
            taken += 1;
        }
        self.queue.take(taken);
    }

    /// Names the queue in the `workqueue_*` metrics.
    pub fn named(&self, name: &str) {
        self.queue.set_name(name);
    }
}

/// Run `sync` now and after every change or `resync`, forever. Errors are logged and retried.
pub async fn run_loop<F, Fut, E>(name: &str, mut trigger: Trigger, resync: Duration, mut sync: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    trigger.named(name);
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = sync().await {
            tracing::warn!(controller = name, error = %e, "sync failed");
        }
        QueueMetrics::observe_work(name, started.elapsed());
        trigger.wait(resync).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn paced_wakes_at_once_after_a_quiet_spell_and_at_most_once_per_period() {
        // Bounds far from the period, so a loaded machine cannot blur "at once" and "a period".
        let period = Duration::from_millis(1000);
        let mut trigger = Trigger::default().paced(period);
        let start = Instant::now();
        trigger.tx.send(()).unwrap();
        trigger.wait(Duration::from_secs(60)).await;
        let first = start.elapsed();
        assert!(first < Duration::from_millis(500), "the first change waits only briefly: {first:?}");
        // A burst right after: gathered until the period since that wake is over, one wake.
        for _ in 0..5 {
            trigger.tx.send(()).unwrap();
        }
        trigger.wait(Duration::from_secs(60)).await;
        assert!(start.elapsed() >= period, "{:?}", start.elapsed());
        assert!(trigger.rx.try_recv().is_err(), "the burst was swallowed");
        // After a quiet spell, at once again.
        tokio::time::sleep(period).await;
        let quiet = Instant::now();
        trigger.tx.send(()).unwrap();
        trigger.wait(Duration::from_secs(60)).await;
        assert!(quiet.elapsed() < Duration::from_millis(500), "{:?}", quiet.elapsed());
    }
}
