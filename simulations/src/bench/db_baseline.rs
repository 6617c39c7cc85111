//! The database's own limit: N connections, each a loop of one statement, straight to
//! the endpoint Parley uses for it, counted for a fixed time. No HTTP, no actors, no
//! JSON: what is left when Parley is taken away.

use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Params, Pool, PoolConstraints, PoolOpts};
use tokio::time::Instant;

/// Statements completed per second by `concurrency` loops of `statement` with
/// `params_of(i)` (the i-th statement of a loop).
pub async fn statements_per_second(
    url: &str,
    concurrency: usize,
    duration: Duration,
    statement: &'static str,
    params_of: impl Fn(usize, u64) -> Params + Send + Sync + Clone + 'static,
) -> anyhow::Result<f64> {
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
            while Instant::now() < ends_at {
                conn.exec_drop(&prepared, params_of(loop_index, done))
                    .await
                    .context("running the baseline statement")?;
                done += 1;
            }
            anyhow::Ok(done)
        }
    });
    let started = Instant::now();
    let counts = futures::future::try_join_all(loops).await?;
    let elapsed = started.elapsed().as_secs_f64();
    pool.disconnect().await.ok();
    Ok(counts.iter().sum::<u64>() as f64 / elapsed)
}
