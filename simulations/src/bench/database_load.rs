//! The database's load while something happens: every server's `Questions` (statements
//! clients sent it, Parley's and everyone's) summed over master and replicas and sampled
//! every 100 ms, as statements per second. Measured at the servers, so it needs no
//! cooperation from the nodes and counts the queries of every node alike.

use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::mariadb_admin::connect_url;
use crate::LocalCluster;

const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Statements per second over one sample interval, ending `at_s` after the sampler started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryRateSample {
    pub at_s: f64,
    pub per_second: f64,
}

pub struct DatabaseLoadSampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<Vec<QueryRateSample>>>,
    pub started: Instant,
}

impl DatabaseLoadSampler {
    /// Connects to every server and takes the first reading before returning, so the
    /// first interval starts now.
    pub async fn start(cluster: &LocalCluster) -> anyhow::Result<DatabaseLoadSampler> {
        let urls = ["master", "replica-1", "replica-2"].map(|server| cluster.servers.root_url(server));
        let mut connections = Vec::new();
        for url in &urls {
            connections.push(
                connect_url(url)
                    .await
                    .context("connecting to sample the query counters")?,
            );
        }
        let mut previous = total_questions(&mut connections).await?;
        let started = Instant::now();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut previous_at = started;
            let mut ticks = tokio::time::interval_at(started + SAMPLE_INTERVAL, SAMPLE_INTERVAL);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    _ = ticks.tick() => {}
                }
                let questions = total_questions(&mut connections).await?;
                let now = Instant::now();
                let elapsed = now.duration_since(previous_at).as_secs_f64();
                samples.push(QueryRateSample {
                    at_s: now.duration_since(started).as_secs_f64(),
                    per_second: questions.saturating_sub(previous) as f64 / elapsed,
                });
                (previous, previous_at) = (questions, now);
            }
            for connection in connections {
                crate::mariadb_admin::close(connection).await;
            }
            Ok(samples)
        });
        Ok(DatabaseLoadSampler { stop, task, started })
    }

    pub async fn finish(self) -> anyhow::Result<Vec<QueryRateSample>> {
        let _ = self.stop.send(true);
        self.task.await.context("the database load sampler panicked")?
    }
}

async fn total_questions(connections: &mut [Conn]) -> anyhow::Result<u64> {
    let mut total = 0;
    for connection in connections {
        let row: Option<(String, u64)> = connection
            .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
            .await
            .context("reading Questions")?;
        total += row.context("no Questions status variable")?.1;
    }
    Ok(total)
}
