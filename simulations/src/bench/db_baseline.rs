//! The database's own limit: N connections, each a loop of one statement, straight to
//! the endpoint Parley uses for it, counted for a fixed time. No HTTP, no actors, no
//! JSON: what is left when Parley is taken away.

use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Params, Pool, PoolConstraints, PoolOpts};
use tokio::time::Instant;

use crate::load::latency_samples::LatencySamples;

/// Statements completed per second by `concurrency` loops of `statement` with
/// `params_of(loop, n)` (the n-th statement of a loop).
pub async fn statements_per_second(
    url: &str,
    concurrency: usize,
    duration: Duration,
    statement: &'static str,
    params_of: impl Fn(usize, u64) -> Params + Send + Sync + Clone + 'static,
) -> anyhow::Result<f64> {
    let (per_second, _) = run_loops(url, concurrency, duration, statement, params_of).await?;
    Ok(per_second)
}

/// Every statement's own latency, from the same loops.
pub async fn statement_latencies(
    url: &str,
    concurrency: usize,
    duration: Duration,
    statement: &'static str,
    params_of: impl Fn(usize, u64) -> Params + Send + Sync + Clone + 'static,
) -> anyhow::Result<LatencySamples> {
    let (_, latencies) = run_loops(url, concurrency, duration, statement, params_of).await?;
    Ok(latencies)
}

async fn run_loops(
    url: &str,
    concurrency: usize,
    duration: Duration,
    statement: &'static str,
    params_of: impl Fn(usize, u64) -> Params + Send + Sync + Clone + 'static,
) -> anyhow::Result<(f64, LatencySamples)> {
    let constraints = PoolConstraints::new(concurrency, concurrency).context("pool size")?;
    let options = mysql_async::OptsBuilder::from_opts(Opts::from_url(url).context("database url")?)
        .pool_opts(PoolOpts::default().with_constraints(constraints));
    let pool = Pool::new(options);
    let ends_at = Instant::now() + duration;
    let loops = (0..concurrency).map(|loop_index| {
        let (pool, params_of) = (pool.clone(), params_of.clone());
        async move {
            let mut conn = pool.get_conn().await.context("connecting for the baseline")?;
            let prepared = conn.prep(statement).await.context("preparing the baseline statement")?;
            let mut done: u64 = 0;
            let mut latencies = LatencySamples::default();
            while Instant::now() < ends_at {
                let started = Instant::now();
                conn.exec_drop(&prepared, params_of(loop_index, done))
                    .await
                    .context("running the baseline statement")?;
                latencies.record(started.elapsed());
                done += 1;
            }
            anyhow::Ok((done, latencies))
        }
    });
    let started = Instant::now();
    let outcomes = futures::future::try_join_all(loops).await?;
    let elapsed = started.elapsed().as_secs_f64();
    pool.disconnect().await.ok();
    let mut all_latencies = LatencySamples::default();
    let mut statements = 0;
    for (done, latencies) in outcomes {
        statements += done;
        all_latencies.merge(latencies);
    }
    Ok((statements as f64 / elapsed, all_latencies))
}
