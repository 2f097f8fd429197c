//! Level-triggered loop driver: a controller re-syncs the whole state whenever any watched kind changes
//! (changes coalesce) or after a resync period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::master::client::{ClusterApi, Object};

/// Wakes a controller when watched kinds change.
pub struct Trigger {
    tx: mpsc::UnboundedSender<()>,
    rx: mpsc::UnboundedReceiver<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Trigger {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Trigger { tx, rx, tasks: Vec::new() }
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
    /// Also wake on changes of kind `K` (all namespaces). Watches reopen when they end.
    pub fn watch<K: Object, C: ClusterApi>(mut self, client: &Arc<C>) -> Self {
        let client = client.clone();
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                match client.watch::<K>(None, "").await {
                    Ok(mut stream) => {
                        while let Some(event) = stream.next().await {
                            if event.is_err() || tx.send(()).is_err() {
                                break;
                            }
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

    /// Wait for a change (or `timeout`), then swallow changes that are already queued.
    pub async fn wait(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.rx.recv()).await;
        while self.rx.try_recv().is_ok() {}
    }
}

/// Run `sync` now and after every change or `resync`, forever. Errors are logged and retried.
pub async fn run_loop<F, Fut, E>(name: &str, mut trigger: Trigger, resync: Duration, mut sync: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        if let Err(e) = sync().await {
            tracing::warn!(controller = name, error = %e, "sync failed");
        }
        trigger.wait(resync).await;
    }
}
