//! `parley-sim bench` as a library call, short, on a fresh cluster: every benchmark
//! measures both sides, reports their ratio and the JSON keys of the issue, and the
//! message benchmark loses and duplicates nothing; with the nodes' spans at hand,
//! `latency` is broken down hop by hop. (The figures themselves are for BENCHMARKS.md
//! from a quiet machine, not for assertions here.)

use std::sync::Arc;
use std::time::Duration;

use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::trace_collector::TraceCollector;
use parley_launcher::{ClusterSpec, LocalCluster};
use parley_sim::bench::{run_benchmarks, BenchConfig, BENCH_NODE_ARGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_benchmark_reports_parley_the_baseline_and_their_ratio() -> anyhow::Result<()> {
    resolve_parley_binary(None)?;
    let state = tempfile::tempdir()?;
    let mut spec = ClusterSpec::with_free_ports(state.path().to_path_buf(), 2);
    let traces = Arc::new(TraceCollector::start().await?);
    spec.node_extra_args = BENCH_NODE_ARGS
        .iter()
        .copied()
        .chain(["--otlp-endpoint", traces.endpoint()])
        .map(String::from)
        .collect();
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(spec).await?;
    // memory and storm hold thousands of sockets; bench_memory_storm.rs runs them small.
    let config = BenchConfig {
        names: ["http_read", "messages", "latency"].map(String::from).to_vec(),
        duration: Duration::from_secs(2),
        // The debug build's point: the release figure (1,000/s) is BENCHMARKS.md's.
        latency_fixed_rate_per_s: 100.0,
        hop_traces: Some(Arc::clone(&traces)),
        ..BenchConfig::default()
    };
    let report = run_benchmarks(&cluster, &config).await?;
    println!("{}", report.render_table());

    let http_read = report.http_read.as_ref().expect("http_read ran");
    for key in ["c10", "c64"] {
        let comparison = &http_read.by_concurrency[key];
        assert!(
            comparison.parley > 0.0 && comparison.baseline > 0.0,
            "{key}: {comparison:?}"
        );
        let ratio = comparison.parley / comparison.baseline;
        assert!((comparison.ratio - ratio).abs() < 0.01, "{key}: {comparison:?}");
    }
    let messages = report.messages.as_ref().expect("messages ran");
    assert!(
        messages.parley_per_s > 0.0 && messages.baseline_per_s > 0.0,
        "{messages:?}"
    );
    assert_eq!((messages.lost, messages.duplicates), (0, 0), "{messages:?}");
    let latency = report.latency.as_ref().expect("latency ran");
    assert!(
        latency.p50_ms > 0.0 && latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms,
        "{latency:?}"
    );
    assert!(
        (latency.offered_per_s - messages.parley_per_s / 2.0).abs() < 1.0,
        "half the measured maximum"
    );
    assert!(latency.baseline_commit_p50_ms > 0.0, "{latency:?}");
    let hops = latency.hops.as_ref().expect("the nodes exported their spans");
    assert!(hops.traced > 0 && hops.traced <= hops.delivered, "{hops:?}");
    let names: Vec<&str> = hops.hops.iter().map(|hop| hop.hop).collect();
    assert_eq!(
        names,
        [
            "inbound",
            "chat queue",
            "transaction",
            "after commit",
            "cluster hop",
            "recipient session",
            "outbound"
        ]
    );
    assert!(
        hops.hops
            .iter()
            .all(|hop| hop.messages == hops.traced && hop.p50_ms <= hop.p99_ms),
        "{hops:?}"
    );
    // The transaction's span times a real commit with fsyncs on the master, and the
    // database layer's spans take it apart.
    let transaction = &hops.hops[2];
    assert!(transaction.p50_ms > 0.0, "{transaction:?}");
    let parts: Vec<&str> = hops.transaction_parts.iter().map(|part| part.hop).collect();
    assert_eq!(parts, ["connection", "statements", "commit", "binlog position"]);
    let commit = &hops.transaction_parts[2];
    assert!(commit.messages > 0 && commit.p50_ms > 0.0, "{commit:?}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json()?)?;
    for pointer in [
        "/http_read/parley_rps",
        "/http_read/baseline_rps",
        "/http_read/ratio",
        "/http_read/c10/ratio",
        "/http_read/c64/ratio",
        "/messages/parley_per_s",
        "/messages/baseline_per_s",
        "/messages/ratio",
        "/latency/p50_ms",
        "/latency/p99_ms",
        "/latency/fixed_rate/rate",
        "/latency/fixed_rate/p50_ms",
        "/latency/fixed_rate/p99_ms",
    ] {
        assert!(
            json.pointer(pointer).is_some_and(|value| value.is_number()),
            "{pointer} in {json}"
        );
    }
    assert!(
        run_benchmarks(
            &cluster,
            &BenchConfig {
                names: vec!["nonsense".into()],
                duration: Duration::from_secs(1),
                ..BenchConfig::default()
            }
        )
        .await
        .is_err(),
        "an unknown benchmark is refused"
    );
    cluster.shutdown().await
}
