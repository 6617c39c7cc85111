//! `parley-sim bench memory storm` as a library call, small, on a fresh cluster: a few
//! hundred idle sockets cost node-1 some memory each, a storm of a couple of hundred
//! users survives node-1's SIGKILL with nothing lost or doubled, node-1 is back
//! afterwards, and `--plot-dir` draws both. (The sizes are for BENCHMARKS.md
//! from a quiet machine, not for assertions here.)

use std::time::Duration;

use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{ClusterSpec, LocalCluster};
use parley_sim::bench::{run_benchmarks, write_plots, BenchConfig, BENCH_NODE_ARGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_measured_and_a_killed_node_s_users_all_resume() -> anyhow::Result<()> {
    resolve_parley_binary(None)?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().to_path_buf(), 2);
    spec.node_extra_args = BENCH_NODE_ARGS.iter().map(|argument| argument.to_string()).collect();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    let config = BenchConfig {
        names: ["memory", "storm"].map(String::from).to_vec(),
        duration: Duration::from_secs(1),
        memory_connections: 300,
        storm_users: 200,
        ..BenchConfig::default()
    };
    let report = run_benchmarks(&cluster, &config).await?;
    println!("{}", report.render_table());

    let memory = report.memory.as_ref().expect("memory ran");
    assert_eq!(
        (memory.connections, memory.connections_requested),
        (300, 300),
        "{memory:?}"
    );
    assert_eq!(memory.users, 15, "20 sockets per user");
    assert!(
        memory.bytes_per_conn > 0.0 && memory.rss_after_bytes > memory.rss_before_bytes,
        "{memory:?}"
    );
    assert!(
        memory.rss_by_connections.len() >= 2 && memory.rss_by_connections.last().unwrap().connections == 300,
        "{:?}",
        memory.rss_by_connections
    );

    let storm = report.storm.as_ref().expect("storm ran");
    assert_eq!(storm.users, 200);
    assert_eq!(storm.resumed_users, 200, "{storm:?}");
    assert_eq!((storm.lost, storm.duplicates), (0, 0), "{storm:?}");
    assert!(
        storm
            .all_resumed_s
            .is_some_and(|all| all > 0.0 && storm.median_resumed_s <= all),
        "{storm:?}"
    );
    assert!(storm.peak_db_queries_per_s > 0.0, "{storm:?}");
    assert!(
        cluster.status().iter().all(|component| component.alive),
        "node-1 is started again after the storm: {:?}",
        cluster.status()
    );

    let json: serde_json::Value = serde_json::from_str(&report.to_json()?)?;
    for pointer in [
        "/memory/bytes_per_conn",
        "/memory/connections",
        "/memory/target_bytes_per_conn",
        "/storm/users",
        "/storm/all_resumed_s",
        "/storm/lost",
        "/storm/duplicates",
        "/storm/peak_db_queries_per_s",
    ] {
        assert!(
            json.pointer(pointer).is_some_and(|value| value.is_number()),
            "{pointer} in {json}"
        );
    }
    assert!(json.get("http_read").is_none(), "only what ran is reported: {json}");

    let plots = tempfile::tempdir()?;
    let written = write_plots(&report, plots.path())?;
    for name in ["bench-memory.png", "bench-storm.png"] {
        let path = plots.path().join(name);
        assert!(written.contains(&path), "{written:?}");
        let image = image::open(&path)?;
        assert!(image.width() > 100 && image.height() > 100, "{name}");
    }
    assert_eq!(written.len(), 2, "one plot per benchmark that ran: {written:?}");
    cluster.shutdown().await
}
