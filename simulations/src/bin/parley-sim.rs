//! `parley-sim`: run a whole Parley cluster on this machine, and break it on purpose.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use parley_launcher::local_cluster::{remove_state_dir, STATE_FILE_NAME};
use parley_launcher::trace_collector::TraceCollector;
use parley_launcher::{ComponentStatus, LocalCluster, PortChoice};
use parley_sim::bench::{run_benchmarks, write_plots, BenchConfig, BENCH_NODE_ARGS};
use parley_sim::failover::{
    attach_or_start_cluster, restart_dead_components, run_failover_experiment, write_timeline_plot, ClusterOrigin,
    FailoverConfig, FaultAction, FaultSpec,
};
use tokio::signal::unix::{signal, SignalKind};

#[path = "parley-sim/arguments.rs"]
mod arguments;
use arguments::{BenchArgs, FailoverArgs, RestoreArgs, UpArgs};

#[derive(Parser)]
#[command(
    name = "parley-sim",
    about = "Runs a local Parley cluster (MariaDB master + 2 replicas, HAProxy, N nodes, nginx)"
)]
struct Cli {
    /// Where the cluster keeps its datadirs, configs, logs and cluster.json.
    #[arg(long, global = true, env = "PARLEY_SIM_DIR", default_value = ".parley-sim")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a fresh cluster and print its endpoints.
    Up(UpArgs),
    /// Show every component's pid, address and liveness, and which database server takes
    /// writes now.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a component's process group (master, replica-1, node-2, nginx, …).
    Kill {
        name: String,
        /// KILL, TERM, STOP, CONT, INT or HUP.
        #[arg(long, default_value = "KILL")]
        signal: String,
    },
    /// Start a killed component again and wait until it is back in service.
    Start { name: String },
    /// A planned switchover: make NAME (replica-1, replica-2 or master) the master while
    /// the cluster serves, with no failed write; the old master replicates from it.
    Switchover { name: String },
    /// Cut a node off from its peers, the database and nginx, or a database server off
    /// from the nodes, HAProxy and the other servers (iptables; needs root).
    Partition { name: String },
    /// Undo `partition`. A master the nodes replaced meanwhile is fenced (SIGKILL) and
    /// rejoins as a replica of the new one.
    Heal { name: String },
    /// Stop everything and delete the state dir.
    Down,
    /// Take a consistent physical backup of a replica into DIR (Debian's mariadb-backup)
    /// while the cluster serves: DIR/data, the prepared copy, and DIR/backup.json with
    /// its GTID position.
    Backup {
        /// A new or empty directory.
        dir: PathBuf,
        /// The replica to copy.
        #[arg(long, default_value = "replica-1")]
        from: String,
    },
    /// Start a fresh cluster (as `up` does) whose master and replicas start from the
    /// backup in DIR, replicating from its GTID position.
    Restore(RestoreArgs),
    /// The seed's fault-tolerance experiment: HTTP and websocket load while components
    /// are killed, then a report. Uses the running cluster, or starts one for the run.
    /// Exits with 1 if any request failed or any message was lost or shown twice.
    Failover(FailoverArgs),
    /// Benchmarks, each next to what the database itself does in the same run or to
    /// its target: http_read, messages, latency, memory, fanout, storm (default: all). Uses the
    /// running cluster or starts one.
    Bench(BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // A failover run has a hundred chat clients, each logging its reconnect.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,parley_sim=info,parley_client::chat_client=warn")
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let state_dir = std::env::current_dir()
        .context("reading the current directory")?
        .join(&cli.state_dir);
    match cli.command {
        Command::Up(arguments) => up(&state_dir, arguments, None).await?,
        Command::Restore(arguments) => {
            let backup_dir = std::env::current_dir()
                .context("reading the current directory")?
                .join(&arguments.dir);
            // `restore` starts by clearing its state dir, as `up` does.
            if backup_dir.starts_with(&state_dir) {
                bail!(
                    "the backup {} lies inside the state dir {}, which restore clears first; move it out",
                    backup_dir.display(),
                    state_dir.display()
                );
            }
            up(&state_dir, arguments.cluster, Some(backup_dir)).await?;
        }
        Command::Backup { dir, from } => {
            let backup_dir = std::env::current_dir()
                .context("reading the current directory")?
                .join(dir);
            let manifest = load_cluster(&state_dir)?
                .take_backup(&from, &backup_dir)
                .await
                .with_context(|| format!("backing up {from} into {}", backup_dir.display()))?;
            println!("backup of {from} in {}", backup_dir.display());
            println!("  gtid position  {}", manifest.gtid_position);
            println!("  database       {}", manifest.database);
            println!("  server         {}", manifest.server_version);
            println!(
                "restore it with: parley-sim --state-dir DIR restore {}",
                backup_dir.display()
            );
        }
        Command::Status { json } => status(&state_dir, json).await?,
        Command::Kill { name, signal } => {
            let cluster = load_cluster(&state_dir)?;
            let signal = parse_signal(&signal)?;
            cluster.kill(&name, signal)?;
            println!("sent {signal} to {name}");
        }
        Command::Start { name } => {
            let cluster = load_cluster(&state_dir)?;
            cluster
                .start_component(&name)
                .await
                .with_context(|| format!("starting {name}"))?;
            println!("{name} is ready");
        }
        Command::Switchover { name } => {
            let cluster = load_cluster(&state_dir)?;
            let old_master = cluster
                .database_servers()
                .switchover(&name)
                .await
                .with_context(|| format!("switching over to {name}"))?;
            println!("{name} is the master; {old_master} replicates from it");
        }
        Command::Partition { name } => {
            load_cluster(&state_dir)?.partition(&name)?;
            println!("{name} is cut off; `parley-sim heal {name}` undoes it");
        }
        Command::Heal { name } => {
            if load_cluster(&state_dir)?.heal(&name).await? {
                println!("{name} is reachable again");
            } else {
                println!("{name} was not partitioned");
            }
        }
        Command::Down => down(&state_dir).await?,
        Command::Failover(arguments) => return failover(&state_dir, arguments).await,
        Command::Bench(arguments) => bench(&state_dir, arguments).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn failover(state_dir: &Path, arguments: FailoverArgs) -> anyhow::Result<ExitCode> {
    let duration = Duration::from_secs(arguments.duration);
    let mut config = FailoverConfig::seed_experiment(duration);
    config.http_connections = arguments.http_connections;
    config.pairs = arguments.pairs;
    config.message_rate_per_pair = arguments.message_rate;
    config.settle_timeout = Duration::from_secs(arguments.settle_timeout);
    config.progress_on_stderr = true;
    if arguments.no_faults {
        config.faults.clear();
    } else if !arguments.faults.is_empty() {
        config.faults = arguments
            .faults
            .into_iter()
            .flat_map(|FaultSpec(faults)| faults)
            .collect();
    }
    config.http_post_connections = arguments.post_connections;

    let mut stop_signals = StopSignals::install()?;
    let new_cluster_spec = || arguments.layout.spec(state_dir, Vec::new());
    let (cluster, origin) = tokio::select! {
        attached = attach_or_start_cluster(state_dir, new_cluster_spec) => attached?,
        received = stop_signals.next() => bail!("interrupted by {received} while starting the cluster"),
    };
    if origin == ClusterOrigin::StartedForThisRun {
        eprintln!("started a cluster in {} for this run", state_dir.display());
    }
    refuse_edge_tls(&cluster, "failover")?;
    let outcome = tokio::select! {
        outcome = run_failover_experiment(&cluster, &config) => outcome,
        received = stop_signals.next() => Err(anyhow::anyhow!("interrupted by {received}")),
    };
    // An interrupted run must not leave a process cut off (a finished one healed already).
    for fault in config
        .faults
        .iter()
        .filter(|fault| fault.action == FaultAction::Partition)
    {
        if let Err(error) = cluster.heal(&fault.target).await {
            eprintln!("could not heal {}: {error:#}", fault.target);
        }
    }
    if let Ok(report) = &outcome {
        print!("{}", report.render_table());
        if let Some(path) = &arguments.json {
            std::fs::write(path, report.to_json()?).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        if let Some(path) = &arguments.plot {
            write_timeline_plot(report, path)?;
            eprintln!("timeline plotted in {}", path.display());
        }
    }
    match origin {
        ClusterOrigin::StartedForThisRun => {
            eprintln!(
                "stopping the cluster; its logs stay in {} (parley-sim down removes them)",
                state_dir.display()
            );
            cluster.shutdown().await?;
        }
        ClusterOrigin::AlreadyRunning if !arguments.leave_broken => {
            let restarted = restart_dead_components(&cluster).await?;
            if !restarted.is_empty() {
                eprintln!("started again: {}", restarted.join(", "));
            }
        }
        ClusterOrigin::AlreadyRunning => {}
    }
    let report = outcome?;
    if report.passed() || arguments.allow_failures {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

async fn bench(state_dir: &Path, arguments: BenchArgs) -> anyhow::Result<()> {
    let hop_traces = match arguments.trace_hops {
        true => Some(Arc::new(TraceCollector::start().await?)),
        false => None,
    };
    let trace_export_args: Vec<String> = match &hop_traces {
        Some(collector) => vec!["--otlp-endpoint".into(), collector.endpoint().into()],
        None => Vec::new(),
    };
    let config = BenchConfig {
        names: arguments.names,
        duration: Duration::from_secs(arguments.duration),
        memory_connections: arguments.memory_connections,
        storm_users: arguments.storm_users,
        latency_fixed_rate_per_s: arguments.latency_fixed_rate,
        peer_pairs: arguments.peer_pairs,
        peer_idle_connections: arguments.peer_connections,
        peer_max_offered_per_s: arguments.peer_max_offered,
        hop_traces,
    };
    let new_cluster_spec = || {
        let own_node_args = BENCH_NODE_ARGS
            .iter()
            .map(|argument| argument.to_string())
            .chain(trace_export_args.iter().cloned())
            .collect();
        arguments.layout.spec(state_dir, own_node_args)
    };
    let (cluster, origin) = attach_or_start_cluster(state_dir, new_cluster_spec).await?;
    refuse_edge_tls(&cluster, "bench")?;
    if origin == ClusterOrigin::AlreadyRunning && arguments.trace_hops {
        bail!(
            "--trace-hops needs a cluster this command starts (the running one in {} exports its spans elsewhere, if anywhere)",
            state_dir.display()
        );
    }
    if origin == ClusterOrigin::AlreadyRunning {
        eprintln!(
            "benchmarking the running cluster in {}; memory and storm need its nodes started with {}",
            state_dir.display(),
            BENCH_NODE_ARGS.join(" ")
        );
    }
    let outcome = run_benchmarks(&cluster, &config).await;
    if origin == ClusterOrigin::StartedForThisRun {
        cluster.shutdown().await?;
    }
    let report = outcome?;
    print!("{}", report.render_table());
    if let Some(path) = &arguments.json {
        std::fs::write(path, report.to_json()?).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    if let Some(directory) = &arguments.plot_dir {
        for path in write_plots(&report, directory)? {
            eprintln!("plotted {}", path.display());
        }
    }
    Ok(())
}

/// `up`, or `restore` with `restore_from`.
async fn up(state_dir: &Path, arguments: UpArgs, restore_from: Option<PathBuf>) -> anyhow::Result<()> {
    if state_dir.join(STATE_FILE_NAME).exists() {
        if let Ok(existing) = LocalCluster::load(state_dir) {
            if existing.any_alive() {
                bail!(
                    "a cluster is already running in {}; stop it with parley-sim down",
                    state_dir.display()
                );
            }
            // A launcher killed with SIGKILL leaves nginx workers behind (the kernel only
            // kills its direct children); they would still hold the public port.
            existing.shutdown().await?;
        }
    }
    remove_state_dir(state_dir)?;
    let mut spec = arguments.layout.spec(state_dir, Vec::new());
    spec.detach = arguments.detach;
    spec.cluster_tls = arguments.cluster_tls;
    spec.edge_tls = arguments.edge_tls.files()?;
    spec.database_ports = PortChoice::Fixed {
        base: arguments.database_port,
    };
    spec.restore_from = restore_from;

    // Listen before starting: a ctrl-c during start-up drops the half-started cluster,
    // whose Drop kills what was already running.
    let mut stop_signals = StopSignals::install()?;
    let cluster = tokio::select! {
        started = LocalCluster::start(spec) => started.context("starting the cluster")?,
        received = stop_signals.next() => bail!("interrupted by {received} while starting"),
    };
    print_endpoints(&cluster);
    if arguments.detach {
        println!("\nrunning detached; stop it with: parley-sim down");
        return Ok(());
    }
    println!("\nrunning in the foreground; ctrl-c stops the cluster");
    let received = stop_signals.next().await;
    eprintln!("received {received}, stopping the cluster");
    cluster.shutdown().await
}

struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the sigint handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the sigterm handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the sighup handler")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "sigint",
            _ = self.terminate.recv() => "sigterm",
            _ = self.hangup.recv() => "sighup",
        }
    }
}

fn print_endpoints(cluster: &LocalCluster) {
    let endpoints = cluster.endpoints();
    let label_width = endpoints.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    println!("parley cluster is ready:");
    for (label, address) in endpoints {
        println!("  {label:<label_width$}  {address}");
    }
}

/// The load generators trust only the system's CAs, and a measurement should not
/// include TLS unless it says so: they run against a plain-HTTP cluster.
fn refuse_edge_tls(cluster: &LocalCluster, command: &str) -> anyhow::Result<()> {
    if cluster.app.edge_tls().is_some() {
        bail!(
            "the cluster in {} serves HTTPS (--tls-cert); {command} needs one started without it",
            cluster.state_dir().display()
        );
    }
    Ok(())
}

fn load_cluster(state_dir: &Path) -> anyhow::Result<LocalCluster> {
    if !state_dir.join(STATE_FILE_NAME).exists() {
        bail!("no cluster in {} (start one with parley-sim up)", state_dir.display());
    }
    LocalCluster::load(state_dir)
}

async fn status(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = load_cluster(state_dir)?;
    let statuses = cluster.servers.with_roles(cluster.status()).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&statuses).context("serialising the status")?
        );
    } else {
        print_status_table(&statuses);
    }
    Ok(())
}

fn print_status_table(statuses: &[ComponentStatus]) {
    println!("{:<12} {:>8}  {:<16} {:<6} ROLE", "NAME", "PID", "ADDR", "ALIVE");
    for status in statuses {
        let alive = if status.alive { "yes" } else { "no" };
        let role = status.role.as_deref().unwrap_or("");
        println!(
            "{:<12} {:>8}  {:<16} {alive:<6} {role}",
            status.name, status.pid, status.addr
        );
    }
}

async fn down(state_dir: &Path) -> anyhow::Result<()> {
    if !state_dir.exists() {
        println!("no cluster in {}", state_dir.display());
        return Ok(());
    }
    if state_dir.join(STATE_FILE_NAME).exists() {
        let cluster = LocalCluster::load(state_dir)?;
        // A foreground `up` owns its processes: let it stop them and exit cleanly.
        if let Some(launcher) = cluster.live_launcher() {
            cluster.signal_launcher(Signal::SIGTERM)?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while parley_launcher::pid_is_alive(launcher.pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster.shutdown().await?;
    }
    remove_state_dir(state_dir)?;
    println!("cluster stopped, {} removed", state_dir.display());
    Ok(())
}

fn parse_signal(name: &str) -> anyhow::Result<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full_name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let signal = Signal::from_str(&full_name).with_context(|| format!("unknown signal {name:?}"))?;
    match signal {
        Signal::SIGKILL | Signal::SIGTERM | Signal::SIGSTOP | Signal::SIGCONT | Signal::SIGINT | Signal::SIGHUP => {
            Ok(signal)
        }
        other => bail!("signal {other} is not one of KILL, TERM, STOP, CONT, INT, HUP"),
    }
}
