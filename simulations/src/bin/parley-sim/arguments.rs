//! The command line arguments of `parley-sim`'s subcommands (clap derives their help
//! from the doc comments).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use parley_launcher::database_servers::DEFAULT_DATABASE_BASE_PORT;
use parley_launcher::local_cluster::DEFAULT_PUBLIC_PORT;
use parley_launcher::{ClusterSpec, EdgeTlsFiles};
use parley_sim::bench::BenchConfig;
use parley_sim::failover::FaultSpec;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Which benchmarks (http_read, messages, latency, memory, fanout, storm, peer); none:
    /// all but peer, which runs only when named (it starts ejabberd beside the cluster).
    pub(crate) names: Vec<String>,
    /// Seconds each side of each measurement runs.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Idle websockets the memory benchmark opens on node-1 (fewer if the open files
    /// limits do not allow as many).
    #[arg(long, default_value_t = BenchConfig::default().memory_connections)]
    pub(crate) memory_connections: usize,
    /// Users connected to node-1 when the storm benchmark kills it.
    #[arg(long, default_value_t = BenchConfig::default().storm_users)]
    pub(crate) storm_users: usize,
    /// Messages per second of latency's fixed-rate point (0: none), and of peer's
    /// fixed-rate and kill phases.
    #[arg(long, default_value_t = BenchConfig::default().latency_fixed_rate_per_s)]
    pub(crate) latency_fixed_rate: f64,
    /// Sender–recipient pairs of peer's chat load, each split over the two nodes.
    #[arg(long, default_value_t = BenchConfig::default().peer_pairs)]
    pub(crate) peer_pairs: usize,
    /// Idle signed-in connections of peer's memory phase, on each system.
    #[arg(long, default_value_t = BenchConfig::default().peer_idle_connections)]
    pub(crate) peer_connections: usize,
    /// Messages per second peer offers in its max phase (more than either system sustains).
    #[arg(long, default_value_t = BenchConfig::default().peer_max_offered_per_s)]
    pub(crate) peer_max_offered: f64,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Also draw each benchmark that ran as DIR/bench-NAME.png (needs fonts-dejavu-core).
    #[arg(long, value_name = "DIR")]
    pub(crate) plot_dir: Option<PathBuf>,
    /// The cluster this command starts when none runs (extra node arguments come after
    /// the bench's own: cheap scrypt, no per-address sign-in limit, 64 sockets per user).
    #[command(flatten)]
    pub(crate) layout: ClusterLayoutArgs,
    /// Break `latency` down hop by hop: the cluster this command starts exports its
    /// spans to a collector inside parley-sim (exporting costs the nodes some CPU, so
    /// the other figures of such a run are not comparable).
    #[arg(long)]
    pub(crate) trace_hops: bool,
}

#[derive(Args)]
pub(crate) struct FailoverArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Concurrent get-by-email loops, like wrk's connections.
    #[arg(long, default_value_t = 10)]
    pub(crate) http_connections: usize,
    /// Chats, each between a sending and a receiving websocket user.
    #[arg(long, default_value_t = 50)]
    pub(crate) pairs: usize,
    /// Messages per second each pair's sender sends.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) message_rate: f64,
    /// AT:ACTION:NAME, AT in seconds from the start of the load, ACTION one of kill
    /// (SIGKILL), term (SIGTERM), start, stop (SIGSTOP), cont (SIGCONT), partition (a
    /// node cut off from peers, database and nginx), heal; or down=SECONDS (killed, then
    /// started after that long) and partition=SECONDS (healed after that long). Repeatable.
    /// Default: replica-1 and node-1 SIGKILLed at half time.
    #[arg(long = "fault", value_name = "AT:ACTION:NAME")]
    pub(crate) faults: Vec<FaultSpec>,
    /// Concurrent POST /messenger/create-chat loops beside the get-by-email ones (writes
    /// through the master; nginx must not retry them, so a node must not drop them).
    #[arg(long, default_value_t = 0)]
    pub(crate) post_connections: usize,
    /// No faults at all: a baseline run.
    #[arg(long, conflicts_with = "faults")]
    pub(crate) no_faults: bool,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Also draw the timeline (requests/s, failures, p99, messages/s, faults) here, as PNG
    /// if FILE ends in .png, else as SVG (either needs fonts-dejavu-core).
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
    /// Exit with 0 even if requests failed or messages were lost.
    #[arg(long)]
    pub(crate) allow_failures: bool,
    /// Seconds to wait after the load for the last acks and deliveries.
    #[arg(long, default_value_t = 30)]
    pub(crate) settle_timeout: u64,
    /// On an already running cluster, leave the components the faults killed dead
    /// (by default they are started again afterwards).
    #[arg(long)]
    pub(crate) leave_broken: bool,
    /// The cluster this command starts when none runs.
    #[command(flatten)]
    pub(crate) layout: ClusterLayoutArgs,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The directory `parley-sim backup DIR` wrote.
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) cluster: UpArgs,
}

/// The nodes, ports and binary of a cluster a command starts (`up`, `restore`, and
/// `bench` or `failover` when no cluster runs).
#[derive(Args)]
pub(crate) struct ClusterLayoutArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    pub(crate) nodes: usize,
    /// nginx's public port; the nodes take the ports right after it.
    #[arg(long, default_value_t = DEFAULT_PUBLIC_PORT)]
    pub(crate) port: u16,
    /// The parley binary (default: PARLEY_BIN, else next to parley-sim).
    #[arg(long)]
    pub(crate) parley_bin: Option<PathBuf>,
    /// Extra argument for every node (repeatable); {{node_name}}, {{node_index}} and
    /// {{node_port}} are replaced per node.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub(crate) node_args: Vec<String>,
}

impl ClusterLayoutArgs {
    /// A cluster spec in `state_dir` with these nodes, ports, binary and node arguments
    /// (after `own_node_args`).
    pub(crate) fn spec(&self, state_dir: &std::path::Path, own_node_args: Vec<String>) -> ClusterSpec {
        let mut spec = ClusterSpec::with_fixed_ports(state_dir.to_path_buf(), self.nodes, self.port);
        spec.parley_bin = self.parley_bin.clone();
        spec.node_extra_args = own_node_args
            .into_iter()
            .chain(self.node_args.iter().cloned())
            .collect();
        spec
    }
}

#[derive(Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) layout: ClusterLayoutArgs,
    /// The master's port; the replicas take the next two, HAProxy from 10 above it.
    #[arg(long, default_value_t = DEFAULT_DATABASE_BASE_PORT)]
    pub(crate) database_port: u16,
    /// Return once the cluster is ready and leave it running.
    #[arg(long)]
    pub(crate) detach: bool,
    /// TLS between the nodes: a fresh CA and node certificates in <state dir>/cluster-tls,
    /// passed with --cluster-tls-cert/-key/-ca.
    #[arg(long)]
    pub(crate) cluster_tls: bool,
    #[command(flatten)]
    pub(crate) edge_tls: EdgeTlsArgs,
}

/// HTTPS and WSS on nginx's public port instead of plain HTTP.
#[derive(Args)]
pub(crate) struct EdgeTlsArgs {
    /// nginx serves HTTPS and WSS on --port with this certificate (PEM, intermediates
    /// after it); needs --tls-key. Plain HTTP sent to the port is then redirected (GET)
    /// or refused.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

impl EdgeTlsArgs {
    pub(crate) fn files(&self) -> anyhow::Result<Option<EdgeTlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(certificate), Some(key)) => Ok(Some(EdgeTlsFiles::checked(certificate, key)?)),
            (None, None) => Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}
