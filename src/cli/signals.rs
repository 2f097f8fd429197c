//! Interrupts (SIGINT, SIGTERM) of long commands, watched from a thread of their own.

use std::time::Duration;

/// What a second interrupt does once the first has been handled.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Nothing: the thread ends after the first.
    Stay,
    /// The process exits (130) on a second interrupt, or once `grace` has passed when given.
    ExitOnSecond { grace: Option<Duration> },
}

/// Runs `first` on the first SIGINT or SIGTERM, then as `then` says. If the signals cannot be
/// watched, nothing runs (their default action still ends the process).
pub fn on_interrupt(first: impl FnOnce() + Send + 'static, then: Then) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            first();
            let Then::ExitOnSecond { grace } = then else { return };
            let grace = async {
                match grace {
                    Some(grace) => tokio::time::sleep(grace).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {}, _ = grace => {} }
            std::process::exit(130);
        });
    })
}
