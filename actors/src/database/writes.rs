//! The write path of [`Database`]: one master transaction per call, admitted by the
//! replication gate, deadlocks retried, bounded by the write timeout, and the commit's
//! binlog position remembered for the writer's read-your-writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Transaction, TxOpts};
use tracing::Instrument;

use super::db_router::DbRouterMessage;
use super::errors::{server_error_code, RETRYABLE_TRANSACTION_CODES};
use super::{Database, DbError, Endpoint, WriteResult};

impl Database {
    /// Runs `work` in one master transaction and commits it when it returns `Ok(Ok(_))`.
    /// Deadlocks are retried; anything else fails within the write timeout, so a dead
    /// master answers quickly instead of hanging the request. When `writer` is given, the
    /// transaction's GTID is remembered so that writer's next reads see it.
    pub async fn write<T, D, F>(&self, writer: Option<&str>, work: F) -> Result<Result<T, D>, DbError>
    where
        T: Send,
        D: Send,
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        let writers: &[&str] = match &writer {
            Some(writer) => std::slice::from_ref(writer),
            None => &[],
        };
        self.write_with(writers, CommitOutcome::MustBeKnown, work).await
    }

    /// [`Database::write`] for a body that may run twice with the effect of once (it
    /// finds what an earlier run stored, e.g. a chat by its unique pair key): when the
    /// master dies during the commit, so the outcome is unknown, it runs again on the
    /// next master instead of failing.
    pub async fn write_idempotent<T, D, F>(&self, writer: &str, work: F) -> Result<Result<T, D>, DbError>
    where
        T: Send,
        D: Send,
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        self.write_with(&[writer], CommitOutcome::MayRunAgain, work).await
    }

    /// [`Database::write`] for a transaction that carries several writers' changes (a
    /// batch of sends): each of them reads their own writes afterwards.
    pub async fn write_for<T, D, F>(&self, writers: &[&str], work: F) -> Result<Result<T, D>, DbError>
    where
        T: Send,
        D: Send,
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        self.write_with(writers, CommitOutcome::MustBeKnown, work).await
    }

    async fn write_with<T, D, F>(
        &self,
        writers: &[&str],
        after_a_lost_commit: CommitOutcome,
        work: F,
    ) -> Result<Result<T, D>, DbError>
    where
        T: Send,
        D: Send,
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        let deadline = tokio::time::Instant::now() + self.shared.failover.write_wait;
        loop {
            let master = self.admit_write_waiting_for_a_master(deadline).await?;
            let timeout = self.shared.timeouts.write;
            let write_span = tracing::info_span!("db.write", db.endpoint = %master.name);
            let commit_sent = AtomicBool::new(false);
            let result = tokio::time::timeout(timeout, self.write_with_retries(&master, timeout, &work, &commit_sent))
                .instrument(write_span)
                .await
                .unwrap_or_else(|_| {
                    Err(DbError::Timeout {
                        endpoint: master.name.clone(),
                        timeout,
                    })
                });
            let label = match &result {
                Ok(_) => "ok",
                Err(error) if error.is_unavailable() => "unavailable",
                Err(_) => "error",
            };
            self.shared.metrics.count_query(&master.name, "write", label);
            let error = match result {
                Ok((value, gtid)) => {
                    if let Some(gtid) = gtid {
                        for writer in writers {
                            self.shared.recent_writes.remember(writer, gtid.clone());
                        }
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            if !error.is_unavailable() {
                return Err(error);
            }
            self.report_failure(&master, &error);
            // The master failed before the commit was sent: nothing of this write can
            // have been stored, so it may go to the next master (a promotion under way).
            // A failure during the commit is the caller's to resolve (a resend by id),
            // unless the body may simply run again.
            let outcome_unknown =
                commit_sent.load(Ordering::Relaxed) && after_a_lost_commit == CommitOutcome::MustBeKnown;
            if outcome_unknown || !self.may_wait_for_a_master(deadline) {
                return Err(error);
            }
            tracing::info!(endpoint = %master.name, %error, "write failed before its commit; waiting for a master");
            let mut probes = self.shared.replication_gate.probes();
            probes.borrow_and_update();
            let _ = tokio::time::timeout_at(deadline, probes.changed()).await;
        }
    }

    async fn write_with_retries<T, D, F>(
        &self,
        master: &Endpoint,
        timeout: Duration,
        work: &F,
        commit_sent: &AtomicBool,
    ) -> Result<(Result<T, D>, Option<String>), DbError>
    where
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        const ATTEMPTS: usize = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The parts of a write as spans of their own: waiting for a pooled
            // connection, the commit (the fsyncs), and reading the position after it.
            let mut conn = master
                .connection(timeout)
                .instrument(tracing::info_span!("db.acquire", db.endpoint = %master.name))
                .await?;
            match Self::run_transaction(&mut conn, work, commit_sent).await {
                Ok(Ok(value)) => {
                    let gtid = binlog_position_after_commit(&mut conn, &master.name)
                        .instrument(tracing::info_span!("db.commit_position"))
                        .await;
                    return Ok((Ok(value), gtid));
                }
                Ok(Err(domain_error)) => return Ok((Err(domain_error), None)),
                Err(error) => {
                    let retryable =
                        server_error_code(&error).is_some_and(|code| RETRYABLE_TRANSACTION_CODES.contains(&code));
                    if retryable && attempt < ATTEMPTS {
                        tracing::debug!(attempt, %error, "transaction retried after a deadlock");
                        continue;
                    }
                    return Err(DbError::from_driver(&master.name, error));
                }
            }
        }
    }

    async fn run_transaction<T, D, F>(
        conn: &mut Conn,
        work: &F,
        commit_sent: &AtomicBool,
    ) -> Result<Result<T, D>, mysql_async::Error>
    where
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        let mut transaction = conn.start_transaction(TxOpts::default()).await?;
        match work(&mut transaction).await? {
            Ok(value) => {
                commit_sent.store(true, Ordering::Relaxed);
                transaction
                    .commit()
                    .instrument(tracing::info_span!("db.commit"))
                    .await?;
                Ok(Ok(value))
            }
            Err(domain_error) => {
                transaction.rollback().await?;
                Ok(Err(domain_error))
            }
        }
    }

    /// The master a write may go to now. With automatic failover, a write that finds no
    /// master (it died, a replica is being promoted) waits for one, up to
    /// `failover_write_wait` (below the proxy's timeout): the sender sees a slow answer
    /// instead of a refusal. Without failover it is refused at once: nothing would change.
    async fn admit_write_waiting_for_a_master(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<std::sync::Arc<Endpoint>, DbError> {
        let mut probes = self.shared.replication_gate.probes();
        loop {
            let master = self.master();
            let refused = match self.admit_write(&master).await {
                // Admitted for the master of the moment: not one replaced meanwhile.
                Ok(()) if self.master().name == master.name => return Ok(master),
                Ok(()) => continue,
                Err(refused) => refused,
            };
            if !self.may_wait_for_a_master(deadline) {
                self.shared.metrics.count_query(&master.name, "write", "unavailable");
                return Err(refused);
            }
            // The next reading of the master (the old one back, or a promoted one).
            probes.borrow_and_update();
            let _ = tokio::time::timeout_at(deadline, probes.changed()).await;
        }
    }

    /// Whether a write may still wait for a master: only with automatic failover (else
    /// nothing would change) and before its deadline.
    fn may_wait_for_a_master(&self, deadline: tokio::time::Instant) -> bool {
        !self.shared.failover.servers.is_empty() && tokio::time::Instant::now() < deadline
    }

    /// Passes the replication gate (see [`ReplicationGate::admit`]).
    async fn admit_write(&self, master: &Endpoint) -> Result<(), DbError> {
        let probe_master_now = || {
            if let Some(router) = self.shared.router.load_full() {
                // Starts a probe unless one is running; either way the next is awaited.
                let _ = router.cast(DbRouterMessage::FailureReported {
                    endpoint_name: master.name.clone(),
                    reason: "writes refused; reading the master again".to_owned(),
                });
            }
        };
        let next_probe_within = self.shared.timeouts.probe_timeout + Duration::from_millis(100);
        self.shared
            .replication_gate
            .admit(&master.name, probe_master_now, next_probe_within)
            .await
    }
}

/// What a write does when the master fails while committing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitOutcome {
    /// Fail: only the caller can tell whether the commit took (by reading, or by resending
    /// with the same id).
    MustBeKnown,
    /// Run the body again on the next master: running it twice stores what once would.
    MayRunAgain,
}

/// What a replica must have applied for the writer to read its own write: the master's
/// whole binlog position just after the commit, not `@@last_gtid`. A transaction that
/// changed nothing (the loser of a race for a unique row, which then reads the winner's
/// row) writes no GTID and leaves the pooled connection's `@@last_gtid` at some older
/// transaction, yet its caller has seen the winner's commit and must keep seeing it.
/// The data is committed either way, so a failure here only costs read-your-writes.
async fn binlog_position_after_commit(conn: &mut Conn, endpoint: &str) -> Option<String> {
    match conn.query_first::<String, _>("SELECT @@gtid_binlog_pos").await {
        Ok(gtid) => gtid.filter(|gtid| !gtid.is_empty()),
        Err(error) => {
            tracing::warn!(endpoint, %error, "could not read the commit's gtid");
            None
        }
    }
}
