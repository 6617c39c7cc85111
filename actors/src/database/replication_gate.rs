//! Whether a commit on the master would reach a replica before it returns.
//!
//! The master runs semi-synchronous replication that never falls back to asynchronous
//! (deploy/mariadb/master.cnf): with no replica to acknowledge, a commit waits. Waiting
//! writes would hold chat row locks and pool connections until a replica came back,
//! and their senders would only learn of it at the write timeout. So the `DbRouter`'s
//! probe of the master feeds this gate, and while the master reports no acknowledging
//! replica every write is refused at once as unavailable: the sender resends later and
//! nothing is acked that only the master holds.
//!
//! A master the probe cannot connect to closes the gate too, until a probe reads it
//! again: a restarted master is up a moment before its replicas reconnect, and writes
//! let through in that moment would wait, then flap between accepted and refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use super::db_router::SemiSyncReading;
use super::DbError;
use crate::metrics::Metrics;

/// Refuses writes while no replica would acknowledge them.
pub struct ReplicationGate {
    /// Off only where the operator chose asynchronous replication (`--require-semi-sync
    /// false`): the gate then reports but never refuses.
    required: bool,
    blocked: AtomicBool,
    /// Counts the probes of the master taken in, so a refused write can wait for the
    /// next one.
    probes: watch::Sender<u64>,
    /// The last reading of the master's semi-synchronous replication, for `/cluster`.
    last_reading: Mutex<Option<SemiSyncReading>>,
}

impl ReplicationGate {
    /// An open gate; the first probe of the master decides.
    pub fn new(required: bool) -> ReplicationGate {
        ReplicationGate {
            required,
            blocked: AtomicBool::new(false),
            probes: watch::Sender::new(0),
            last_reading: Mutex::new(None),
        }
    }

    /// Whether writes are let through now.
    pub fn accepts_writes(&self) -> bool {
        !self.blocked.load(Ordering::Relaxed)
    }

    /// The last reading of the master's semi-synchronous replication, if any.
    pub fn last_reading(&self) -> Option<SemiSyncReading> {
        *self
            .last_reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes at every probe of the master taken in.
    pub fn probes(&self) -> watch::Receiver<u64> {
        self.probes.subscribe()
    }

    /// A probe of the master that decided nothing (slow, or a query error).
    pub fn note_inconclusive(&self) {
        self.probes.send_modify(|count| *count += 1);
    }

    /// Takes in what a probe of the master saw.
    pub fn note(&self, reading: &SemiSyncReading, master: &str, metrics: &Metrics) {
        let blocked = self.required && !reading.commits_are_acknowledged();
        *self
            .last_reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(*reading);
        metrics
            .database_semi_sync_replicas
            .set(i64::try_from(reading.acknowledging_replicas).unwrap_or(i64::MAX));
        metrics
            .database_semi_sync_unacknowledged_commits
            .set(i64::try_from(reading.unacknowledged_commits).unwrap_or(i64::MAX));
        metrics.database_writes_blocked.set(i64::from(blocked));
        if self.blocked.swap(blocked, Ordering::Relaxed) != blocked {
            if blocked {
                tracing::warn!(
                    endpoint = %master,
                    semi_sync_enabled = reading.enabled,
                    acknowledging_replicas = reading.acknowledging_replicas,
                    "writes refused: no replica acknowledges commits"
                );
            } else {
                tracing::info!(
                    endpoint = %master,
                    acknowledging_replicas = reading.acknowledging_replicas,
                    "writes accepted again: a replica acknowledges commits"
                );
            }
        }
        self.probes.send_modify(|count| *count += 1);
    }

    /// The probe could not connect to the master: refuse writes until it reads it again.
    pub fn note_unreachable(&self, master: &str, metrics: &Metrics) {
        if self.required && !self.blocked.swap(true, Ordering::Relaxed) {
            metrics.database_writes_blocked.set(1);
            tracing::warn!(endpoint = %master, "writes refused: the master is unreachable");
        }
        self.probes.send_modify(|count| *count += 1);
    }

    /// Lets a write through, or refuses it after one more look: a closed gate is checked
    /// against the next probe of the master (asked for with `probe_master_now`, awaited
    /// for at most `next_probe_within`) before the write is refused. Each node probes on
    /// its own clock, so after a recovery one node may still hold a reading another has
    /// already replaced, and a client whose writes alternate between them would see
    /// them flap.
    pub async fn admit(
        &self,
        master: &str,
        probe_master_now: impl FnOnce(),
        next_probe_within: std::time::Duration,
    ) -> Result<(), DbError> {
        if self.check(master).is_ok() {
            return Ok(());
        }
        let mut probes = self.probes();
        probes.borrow_and_update();
        probe_master_now();
        let _ = tokio::time::timeout(next_probe_within, probes.changed()).await;
        self.check(master)
    }

    /// `Unavailable` while writes are refused.
    pub fn check(&self, master: &str) -> Result<(), DbError> {
        if self.blocked.load(Ordering::Relaxed) {
            return Err(DbError::Unavailable {
                endpoint: master.to_owned(),
                reason: "the master is unreachable or no replica acknowledges commits".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(enabled: bool, replicas: u64) -> SemiSyncReading {
        SemiSyncReading {
            enabled,
            active: enabled && replicas > 0,
            acknowledging_replicas: replicas,
            unacknowledged_commits: 0,
        }
    }

    #[test]
    fn writes_are_refused_while_no_replica_acknowledges_and_accepted_when_one_does() {
        let metrics = Metrics::new();
        let gate = ReplicationGate::new(true);
        assert!(gate.check("master").is_ok(), "open until the first probe");
        gate.note(&reading(true, 0), "master", &metrics);
        assert!(matches!(gate.check("master"), Err(DbError::Unavailable { .. })));
        assert_eq!(metrics.database_writes_blocked.get(), 1);
        gate.note(&reading(true, 1), "master", &metrics);
        assert!(gate.check("master").is_ok());
        assert_eq!(
            (
                metrics.database_writes_blocked.get(),
                metrics.database_semi_sync_replicas.get()
            ),
            (0, 1)
        );
        // Replicas connected but the master not waiting for them is no promise either.
        gate.note(&reading(false, 2), "master", &metrics);
        assert!(gate.check("master").is_err());
    }

    #[test]
    fn an_unreachable_master_stays_refused_until_a_probe_reads_it_with_a_replica() {
        let metrics = Metrics::new();
        let gate = ReplicationGate::new(true);
        gate.note(&reading(true, 2), "master", &metrics);
        gate.note_unreachable("master", &metrics);
        assert!(gate.check("master").is_err());
        // Restarted, its replicas not yet back.
        gate.note(&reading(true, 0), "master", &metrics);
        assert!(gate.check("master").is_err());
        gate.note(&reading(true, 1), "master", &metrics);
        assert!(gate.check("master").is_ok());
    }

    /// Asks `gate` to admit a write while the probe it triggers reads `replicas`.
    async fn admit_with_next_probe_seeing(gate: &std::sync::Arc<ReplicationGate>, replicas: u64) -> bool {
        let probed = std::sync::Arc::clone(gate);
        let probe_master_now = move || {
            tokio::spawn(async move { probed.note(&reading(true, replicas), "master", &Metrics::new()) });
        };
        gate.admit("master", probe_master_now, std::time::Duration::from_secs(5))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_closed_gate_reads_the_master_once_more_before_it_refuses() {
        let metrics = Metrics::new();
        let gate = std::sync::Arc::new(ReplicationGate::new(true));
        gate.note(&reading(true, 0), "master", &metrics);
        // The replicas are back; this node's next probe sees them.
        assert!(admit_with_next_probe_seeing(&gate, 2).await);
        // Still no replica at the next probe: refused, after that probe.
        gate.note(&reading(true, 0), "master", &metrics);
        assert!(!admit_with_next_probe_seeing(&gate, 0).await);
    }

    #[test]
    fn an_operator_who_chose_asynchronous_replication_is_never_refused() {
        let metrics = Metrics::new();
        let gate = ReplicationGate::new(false);
        gate.note(&reading(false, 0), "master", &metrics);
        gate.note_unreachable("master", &metrics);
        assert!(gate.check("master").is_ok());
        assert_eq!(metrics.database_writes_blocked.get(), 0);
    }
}
