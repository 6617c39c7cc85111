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
use tokio::time::{Instant, MissedTickBehavior};

use parley_launcher::mariadb_admin::connect_url;
use parley_launcher::LocalCluster;

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
        let mut previous = read_questions(&mut connections).await?;
        let started = Instant::now();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval_at(started + SAMPLE_INTERVAL, SAMPLE_INTERVAL);
            // A late tick is not made up for: two readings a moment apart would make one
            // server's few statements look like a huge rate.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    _ = ticks.tick() => {}
                }
                let current = read_questions(&mut connections).await?;
                samples.push(QueryRateSample {
                    at_s: Instant::now().duration_since(started).as_secs_f64(),
                    per_second: summed_rate(&previous, &current),
                });
                previous = current;
            }
            for connection in connections {
                parley_launcher::mariadb_admin::close(connection).await;
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

/// One server's `Questions` and when it was read.
type QuestionsReading = (u64, Instant);

/// Each server's counter with the moment it was read: the servers are read one after the
/// other, so each has its own interval.
async fn read_questions(connections: &mut [Conn]) -> anyhow::Result<Vec<QuestionsReading>> {
    let mut readings = Vec::with_capacity(connections.len());
    for connection in connections {
        let row: Option<(String, u64)> = connection
            .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
            .await
            .context("reading Questions")?;
        readings.push((row.context("no Questions status variable")?.1, Instant::now()));
    }
    Ok(readings)
}

/// The servers' statements per second between two readings, each over its own interval.
fn summed_rate(previous: &[QuestionsReading], current: &[QuestionsReading]) -> f64 {
    previous
        .iter()
        .zip(current)
        .map(|((questions_before, read_before), (questions_now, read_now))| {
            let elapsed = read_now.duration_since(*read_before).as_secs_f64();
            match elapsed > 0.0 {
                true => questions_now.saturating_sub(*questions_before) as f64 / elapsed,
                false => 0.0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_counts_over_its_own_interval() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The master was read 100 ms apart, the replica only 10 ms apart (the previous
        // sample read it late): 1,000 statements/s each, not 1,000 over 10 ms.
        let previous = [(1_000, at(0)), (500, at(90))];
        let current = [(1_100, at(100)), (510, at(100))];
        assert_eq!(summed_rate(&previous, &current).round(), 2_000.0);
    }
}
