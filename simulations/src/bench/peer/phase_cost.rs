//! What a phase of `peer` cost, read around its sending window: the CPU time of the
//! system's node processes and the statements and inserted rows the MariaDB master
//! counted, so a throughput figure comes with where its time went.

use parley_launcher::mariadb_admin;

use crate::bench::process_figures::cpu_seconds;

/// A phase's cost and the messages delivered meanwhile.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PhaseCost {
    pub cpu_s: f64,
    pub statements: u64,
    pub transactions: u64,
    pub rows_written: u64,
    pub delivered: u64,
}

impl PhaseCost {
    /// `total` divided by the messages delivered (0 when none were).
    pub fn per_message(&self, total: f64) -> f64 {
        match self.delivered {
            0 => 0.0,
            delivered => total / delivered as f64,
        }
    }
}

/// The counters at the start of a phase.
pub(super) struct CostMeter {
    pids: Vec<u32>,
    master_root_url: String,
    start: Counters,
}

impl CostMeter {
    /// Reads the counters of `pids` and of the master now.
    pub async fn start(pids: Vec<u32>, master_root_url: String) -> anyhow::Result<CostMeter> {
        let start = read_counters(&pids, &master_root_url).await?;
        Ok(CostMeter {
            pids,
            master_root_url,
            start,
        })
    }

    /// The counters' growth since [`CostMeter::start`], with `delivered` messages. A
    /// process that died meanwhile counts as having used nothing more.
    pub async fn stop(self, delivered: u64) -> anyhow::Result<PhaseCost> {
        let now = read_counters(&self.pids, &self.master_root_url).await?;
        Ok(PhaseCost {
            cpu_s: (now.cpu_s - self.start.cpu_s).max(0.0),
            statements: now.statements.saturating_sub(self.start.statements),
            transactions: now.transactions.saturating_sub(self.start.transactions),
            rows_written: now.rows_written.saturating_sub(self.start.rows_written),
            delivered,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    cpu_s: f64,
    statements: u64,
    transactions: u64,
    rows_written: u64,
}

/// The master's `Questions` (statements from clients), `Binlog_commits` (transactions
/// that wrote something) and `Handler_write` (rows written).
async fn read_counters(pids: &[u32], master_root_url: &str) -> anyhow::Result<Counters> {
    let cpu_s = pids.iter().map(|pid| cpu_seconds(*pid).unwrap_or(0.0)).sum();
    let mut master = mariadb_admin::connect_url(master_root_url).await?;
    let mut read = async |name: &str| -> anyhow::Result<u64> {
        mariadb_admin::global_status_number(&mut master, name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the master has no status {name}"))
    };
    let counters = (
        read("QUESTIONS").await,
        read("BINLOG_COMMITS").await,
        read("HANDLER_WRITE").await,
    );
    mariadb_admin::close(master).await;
    Ok(Counters {
        cpu_s,
        statements: counters.0?,
        transactions: counters.1?,
        rows_written: counters.2?,
    })
}
