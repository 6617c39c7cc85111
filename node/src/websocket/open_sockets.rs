//! Counting of open websockets, so a stopping node can wait for their close frames.

use std::sync::Arc;

/// Counts open sockets so a stopping node can wait for their close frames to go out:
/// upgraded connections are not part of the HTTP server's graceful drain.
#[derive(Default)]
pub struct OpenSockets {
    count: std::sync::atomic::AtomicUsize,
    all_closed: tokio::sync::Notify,
}

impl OpenSockets {
    pub(super) fn opened(self: &Arc<Self>) -> OpenSocketGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenSocketGuard(Arc::clone(self))
    }

    /// Waits until every socket has finished, or `timeout` passed.
    pub async fn wait_all_closed(&self, timeout: std::time::Duration) {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

pub(super) struct OpenSocketGuard(Arc<OpenSockets>);

impl Drop for OpenSocketGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}
