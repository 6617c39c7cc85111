//! Which database server takes writes, sampled while the experiment's load runs: the
//! moments a promotion by the nodes took effect, for the report and the plot.

use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use parley_launcher::LocalCluster;

/// How often every server's `read_only` is read (one short admin session each).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A new server took writes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MasterChange {
    /// From the start of the load, in seconds (within one sample of the promotion).
    pub at_s: f64,
    /// The server that takes writes from then on.
    pub master: String,
}

/// Samples until `until`. The first sample names the master at the start; a change is
/// recorded when exactly one reachable server takes writes and it is another one (two
/// writable at once, a healed old master before its fencing, record nothing).
pub async fn watch_master_changes(
    cluster: &LocalCluster,
    load_started_at: Instant,
    until: Instant,
) -> Vec<MasterChange> {
    let mut samples = tokio::time::interval_at(load_started_at, SAMPLE_EVERY);
    samples.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut master: Option<&'static str> = None;
    let mut changes = Vec::new();
    loop {
        let sampled_at = samples.tick().await;
        if sampled_at >= until {
            return changes;
        }
        let writable = cluster.database_servers().writable_servers().await;
        let [only] = writable.as_slice() else {
            continue;
        };
        if master.is_some_and(|previous| previous != *only) {
            changes.push(MasterChange {
                at_s: round_to_ms(sampled_at.duration_since(load_started_at).as_secs_f64()),
                master: (*only).to_owned(),
            });
        }
        master = Some(only);
    }
}

fn round_to_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
