//! parley-launcher: runs a whole Parley cluster on one machine, for `parley-sim` and the
//! tests.
//!
//! The launcher starts real processes (MariaDB master and two GTID replicas, HAProxy,
//! N `parley` nodes, nginx), each in its own process group with its log in
//! `<state_dir>/<name>/log`, so tests and the `parley-sim` CLI can kill and restart
//! any single component exactly as an operator would.
//!
//! * [`DatabaseServers`]: master, replica-1, replica-2 and HAProxy, replicated and caught up.
//! * [`AppTier`]: N `parley` nodes and nginx in front of them, for one database.
//! * [`LocalCluster`]: both, persisted in `<state_dir>/cluster.json` for the CLI.
//! * [`compose_stack`]: the same system as the docker compose deployment (`compose/`),
//!   driven through docker compose for the end-to-end test.
//!
//! Nothing here keeps a tokio runtime object or a connection pool between calls, so one
//! `DatabaseServers` can be shared by `#[tokio::test]`s that each run their own runtime.

//!
//! Errors are `anyhow` with context: every caller is a test or the `parley-sim` command
//! line, which show them to a person.

pub mod app_tier;
pub mod cluster_certificates;
pub mod component;
pub mod compose_stack;
pub mod database_servers;
pub mod deploy_templates;
pub mod ejabberd_peer;
pub mod kept_state_dir;
pub mod local_cluster;
pub mod mariadb_admin;
pub mod network_partition;
pub mod ports;
pub mod process_control;
pub mod readiness;
pub mod test_watchdog;
pub mod trace_collector;

pub use app_tier::{AppTier, AppTierSpec, EdgeTlsFiles};
pub use component::ComponentStatus;
pub use database_servers::{DatabaseServerPorts, DatabaseServers, DatabaseServersSpec};
pub use local_cluster::{ClusterSpec, LocalCluster};
pub use ports::PortChoice;
pub use process_control::{pid_is_alive, process_group_has_live_members};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shareable_across_runtimes<T: Send + Sync + 'static>() {}

    #[test]
    fn launchers_can_live_in_statics_shared_by_tests() {
        assert_shareable_across_runtimes::<DatabaseServers>();
        assert_shareable_across_runtimes::<AppTier>();
        assert_shareable_across_runtimes::<LocalCluster>();
    }
}
