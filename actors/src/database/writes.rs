//! The write path of [`Database`]: one master transaction per call, admitted by the
//! replication gate, deadlocks retried, bounded by the write timeout, and the commit's
//! binlog position remembered for the writer's read-your-writes.

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
        self.write_for(writers, work).await
    }

    /// [`Database::write`] for a transaction that carries several writers' changes (a
    /// batch of sends): each of them reads their own writes afterwards.
    pub async fn write_for<T, D, F>(&self, writers: &[&str], work: F) -> Result<Result<T, D>, DbError>
    where
        T: Send,
        D: Send,
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        let master = &self.shared.master;
        let timeout = self.shared.timeouts.write;
        let write_span = tracing::info_span!("db.write", db.endpoint = %master.name);
        if let Err(refused) = self.admit_write(master).await {
            self.shared.metrics.count_query(&master.name, "write", "unavailable");
            return Err(refused);
        }
        let result = tokio::time::timeout(timeout, self.write_with_retries(master, timeout, &work))
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
        match result {
            Ok((value, gtid)) => {
                if let Some(gtid) = gtid {
                    for writer in writers {
                        self.shared.recent_writes.remember(writer, gtid.clone());
                    }
                }
                Ok(value)
            }
            Err(error) => {
                if error.is_unavailable() {
                    self.report_failure(master, &error);
                }
                Err(error)
            }
        }
    }

    async fn write_with_retries<T, D, F>(
        &self,
        master: &Endpoint,
        timeout: Duration,
        work: &F,
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
            match Self::run_transaction(&mut conn, work).await {
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

    async fn run_transaction<T, D, F>(conn: &mut Conn, work: &F) -> Result<Result<T, D>, mysql_async::Error>
    where
        F: for<'t, 'c> Fn(&'t mut Transaction<'c>) -> WriteResult<'t, T, D> + Send + Sync,
    {
        let mut transaction = conn.start_transaction(TxOpts::default()).await?;
        match work(&mut transaction).await? {
            Ok(value) => {
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
