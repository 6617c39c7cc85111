//! One user of the reconnect storm, as lean as a few thousand of them at once need: its
//! first socket on the node that will be killed, reading deliveries and never reporting
//! them `received` (so they stay pending on the server); once that socket dies, a new
//! one on the survivor, again and again until one brings `replay-complete`, noting when
//! each message id first arrived after the kill and every arrival of one again.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::lean_socket::{connect_lean, next_frame, LeanFrame, LeanSocket};

const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed reconnect; doubled up to the maximum, with jitter so the retries of
/// thousands do not arrive together again.
const RETRY_INITIAL_DELAY: Duration = Duration::from_millis(50);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// Counters the coordinator polls.
#[derive(Debug, Default)]
pub struct StormProgress {
    /// Message deliveries on the first sockets, before the kill.
    pub live_deliveries: AtomicU64,
    /// Users whose socket on the survivor brought `replay-complete`.
    pub resumed: AtomicUsize,
}

/// What one user saw after its first socket died.
#[derive(Debug, Default)]
pub struct RecipientOutcome {
    /// The first `replay-complete` on the survivor.
    pub replay_complete_at: Option<Instant>,
    /// When each message id first arrived after the kill.
    pub first_arrival_by_id: HashMap<String, Instant>,
    /// Arrivals of an id that had already arrived after the kill.
    pub duplicates: u64,
    /// Sockets opened on the survivor (1 when nothing went wrong).
    pub sockets_after_kill: u32,
}

pub struct RecipientRun {
    pub first_socket: LeanSocket,
    pub survivor: SocketAddr,
    pub source: Ipv4Addr,
    pub token: String,
    pub progress: Arc<StormProgress>,
    pub stopped: watch::Receiver<bool>,
}

/// Runs until told to stop; an error is a frame that is not Parley's envelope.
pub async fn run_recipient(run: RecipientRun) -> anyhow::Result<RecipientOutcome> {
    let RecipientRun {
        mut first_socket,
        survivor,
        source,
        token,
        progress,
        mut stopped,
    } = run;
    let mut outcome = RecipientOutcome::default();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return Ok(outcome),
            frame = next_frame(&mut first_socket) => match frame? {
                LeanFrame::Delivery(ids) => {
                    progress.live_deliveries.fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
                LeanFrame::Ended => break,
                LeanFrame::ReplayComplete | LeanFrame::Other => {}
            },
        }
    }
    drop(first_socket);
    let mut retry_delay = RETRY_INITIAL_DELAY;
    loop {
        let connected = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return Ok(outcome),
            connected = connect_lean(source, survivor, &token, RECONNECT_TIMEOUT) => connected,
        };
        match connected {
            Ok(mut socket) => {
                outcome.sockets_after_kill += 1;
                retry_delay = RETRY_INITIAL_DELAY;
                if read_after_kill(&mut socket, &mut outcome, &progress, &mut stopped).await? {
                    return Ok(outcome);
                }
            }
            Err(error) => tracing::debug!(error = %format!("{error:#}"), "storm reconnect failed"),
        }
        let jittered = retry_delay.mul_f64(0.5 + rand::random::<f64>());
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return Ok(outcome),
            _ = tokio::time::sleep(jittered) => {}
        }
        retry_delay = (retry_delay * 2).min(RETRY_MAX_DELAY);
    }
}

/// Reads one socket on the survivor; true when told to stop, false when the socket ended.
async fn read_after_kill(
    socket: &mut LeanSocket,
    outcome: &mut RecipientOutcome,
    progress: &StormProgress,
    stopped: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    loop {
        let frame = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return Ok(true),
            frame = next_frame(socket) => frame?,
        };
        match frame {
            LeanFrame::Delivery(ids) => {
                let now = Instant::now();
                for id in ids {
                    match outcome.first_arrival_by_id.entry(id) {
                        Entry::Occupied(_) => outcome.duplicates += 1,
                        Entry::Vacant(first) => {
                            first.insert(now);
                        }
                    }
                }
            }
            LeanFrame::ReplayComplete => {
                if outcome.replay_complete_at.is_none() {
                    outcome.replay_complete_at = Some(Instant::now());
                    progress.resumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            LeanFrame::Other => {}
            LeanFrame::Ended => return Ok(false),
        }
    }
}
