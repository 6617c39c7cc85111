//! `http_read`: get-by-email through nginx, like the seed's wrk, against the same point
//! query sent straight to HAProxy's read port, at concurrency 10 and 64.

use std::time::Duration;

use mysql_async::Params;
use serde::Serialize;
use tokio::time::Instant;

use super::{concurrency_key, db_baseline, ByConcurrency, Comparison};
use crate::load::http_load::{HttpLoadSettings, RunningHttpLoad};
use crate::load::load_users::{create_http_load_users, fresh_run_tag};
use parley_client::http::ParleyHttp;
use parley_launcher::LocalCluster;

const CONCURRENCIES: [usize; 2] = [10, 64];
/// The target: Parley's HTTP reads at 70 % of the bare query or better.
const TARGET_RATIO: f64 = 0.7;

/// `http_read`: get-by-email through nginx against the same point query on HAProxy's read port.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpReadFigures {
    /// At concurrency 10, the seed's: requests/s through Parley.
    pub parley_rps: f64,
    /// At concurrency 10: queries/s of the bare point query.
    pub baseline_rps: f64,
    /// `parley_rps / baseline_rps` at concurrency 10; the target is 0.7.
    pub ratio: f64,
    /// `c10`, `c64`.
    #[serde(flatten)]
    pub by_concurrency: ByConcurrency,
}

pub async fn measure(cluster: &LocalCluster, duration: Duration) -> anyhow::Result<HttpReadFigures> {
    let public_url = cluster.app.public_url();
    let users = create_http_load_users(&ParleyHttp::new(&public_url), &fresh_run_tag()).await?;
    let read_url = cluster.servers.read_url(cluster.app.database());
    let mut by_concurrency = ByConcurrency::new();
    for concurrency in CONCURRENCIES {
        let started = Instant::now();
        let load = RunningHttpLoad::start(
            &HttpLoadSettings {
                base_url: public_url.clone(),
                connections: concurrency,
                token: users.looker.access_token.clone(),
                looked_up_email: users.looked_up.email.replace('@', "%40"),
                post_connections: 0,
                companion_id: users.looked_up.user_id.clone(),
                request_timeout: Duration::from_secs(10),
            },
            started,
            started + duration,
        )?;
        let outcome = load.finish().await?;
        let answered: u64 = outcome.seconds.iter().map(|second| second.responses).sum();
        let failed: u64 = outcome
            .seconds
            .iter()
            .map(|second| second.non_2xx + second.errors)
            .sum();
        anyhow::ensure!(
            failed == 0,
            "{failed} get-by-email requests failed during the benchmark"
        );
        let parley = answered as f64 / outcome.elapsed.as_secs_f64();

        let email = users.looked_up.email.clone();
        let baseline = db_baseline::statements_per_second(
            &read_url,
            concurrency,
            duration,
            "SELECT id FROM users WHERE email = ?",
            move |_, _| Params::from((email.clone(),)),
        )
        .await?;
        by_concurrency.insert(
            concurrency_key(concurrency),
            Comparison::new(parley, baseline, TARGET_RATIO),
        );
    }
    let seed_point = by_concurrency[&concurrency_key(CONCURRENCIES[0])].clone();
    Ok(HttpReadFigures {
        parley_rps: seed_point.parley,
        baseline_rps: seed_point.baseline,
        ratio: seed_point.ratio,
        by_concurrency,
    })
}
