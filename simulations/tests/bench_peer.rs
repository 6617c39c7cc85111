//! `parley-sim bench peer` as a library call, small, on a fresh cluster: ejabberd starts
//! beside Parley as two clustered nodes on the same master, both systems carry the same
//! chat load through nginx (every figure comes from traffic that arrived), a node of each
//! is SIGKILLed under load, Parley loses no acked message, and every JSON key the issue
//! names is there. (The sizes, and the comparison itself, are BENCHMARKS.md's,
//! from a release build.)

use std::time::Duration;

use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{ClusterSpec, LocalCluster};
use parley_sim::bench::{run_benchmarks, BenchConfig, BENCH_NODE_ARGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_and_ejabberd_carry_the_same_load_and_survive_a_node_kill() -> anyhow::Result<()> {
    resolve_parley_binary(None)?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().to_path_buf(), 2);
    spec.node_extra_args = BENCH_NODE_ARGS.iter().map(|argument| argument.to_string()).collect();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    let config = BenchConfig {
        names: vec!["peer".into()],
        duration: Duration::from_secs(4),
        latency_fixed_rate_per_s: 100.0,
        peer_pairs: 4,
        peer_idle_connections: 200,
        peer_max_offered_per_s: 1000.0,
        ..BenchConfig::default()
    };
    let report = run_benchmarks(&cluster, &config).await?;
    println!("{}", report.render_table());

    let peer = report.peer.as_ref().expect("peer ran");
    for (system, side) in [("parley", &peer.parley), ("ejabberd", &peer.ejabberd)] {
        assert!(side.msgs_per_s > 0.0, "{system}: {side:?}");
        assert!(side.p50_ms > 0.0 && side.p50_ms <= side.p99_ms, "{system}: {side:?}");
        assert!(
            side.bytes_per_conn > 0.0 && side.idle_connections == 200,
            "{system}: {side:?}"
        );
        // The kill took users away from both systems, and they came back.
        assert!(
            side.acked_in_kill > 0 && side.reconnects_in_kill > 0 && side.resume_s > 0.0,
            "{system}: {side:?}"
        );
        assert!(side.resume_median_s <= side.resume_s, "{system}: {side:?}");
        assert!(side.lost_in_kill <= side.acked_in_kill, "{system}: {side:?}");
    }
    assert_eq!(
        peer.parley.lost_in_kill, 0,
        "Parley never loses an acked message: {peer:?}"
    );
    assert_eq!(peer.pairs, 4);
    assert!(peer.throughput_ratio > 0.0, "{peer:?}");
    assert!(
        cluster.status().iter().all(|component| component.alive),
        "node-2 is started again after the kill: {:?}",
        cluster.status()
    );
    assert!(!ejabberd_runs(), "ejabberd is stopped when the benchmark ends");

    let json: serde_json::Value = serde_json::from_str(&report.to_json()?)?;
    for system in ["parley", "ejabberd"] {
        for key in [
            "msgs_per_s",
            "p50_ms",
            "p99_ms",
            "bytes_per_conn",
            "lost_in_kill",
            "resume_s",
        ] {
            let pointer = format!("/peer/{system}/{key}");
            assert!(
                json.pointer(&pointer).is_some_and(|value| value.is_number()),
                "{pointer} in {json}"
            );
        }
    }
    assert!(json
        .pointer("/peer/throughput_ratio")
        .is_some_and(|value| value.is_number()));
    assert!(json.get("messages").is_none(), "only what ran is reported: {json}");
    cluster.shutdown().await
}

/// Whether any ejabberd node this test's process started still runs (their Erlang node
/// names carry this process's id).
fn ejabberd_runs() -> bool {
    let marker = format!("parley-peer-ej1-{}", std::process::id());
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
        })
    })
}
