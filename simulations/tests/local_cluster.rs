//! The whole launcher: database tier, nodes and nginx, a node crash behind nginx, and
//! the state file the CLI works from. Needs the `parley` binary (PARLEY_BIN, or built
//! into the same target dir, as `cargo test --workspace` does); it fails when there is none.

use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use parley_launcher::app_tier::resolve_parley_binary;
use parley_launcher::{pid_is_alive, process_group_has_live_members, ClusterSpec, LocalCluster};

async fn get_status(url: &str) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    Ok(client.get(url).send().await?.status().as_u16())
}

#[tokio::test]
async fn nginx_routes_around_a_dead_node_and_the_node_comes_back() -> anyhow::Result<()> {
    resolve_parley_binary(None).context("build the node first: cargo test --workspace, or set PARLEY_BIN")?;
    let state = tempfile::tempdir()?;
    parley_launcher::test_watchdog::arm(env!("CARGO_CRATE_NAME"));
    let cluster = LocalCluster::start(ClusterSpec::with_free_ports(state.path().to_path_buf(), 2)).await?;
    let public_ready = format!("{}/health/ready", cluster.app.public_url());
    assert_eq!(get_status(&public_ready).await?, 200);

    // Another handle built from cluster.json sees the same components.
    let loaded = LocalCluster::load(cluster.state_dir())?;
    let names: Vec<String> = loaded.status().into_iter().map(|status| status.name).collect();
    assert_eq!(
        names,
        [
            "master",
            "replica-1",
            "replica-2",
            "haproxy",
            "node-1",
            "node-2",
            "nginx"
        ]
    );
    drop(loaded);
    assert!(
        cluster.status().iter().all(|status| status.alive),
        "dropping a loaded handle killed something"
    );

    cluster.kill("node-1", Signal::SIGKILL)?;
    // nginx retries a GET on the next node, so no request may fail.
    for _ in 0..10 {
        assert_eq!(get_status(&public_ready).await.context("get through nginx")?, 200);
    }
    cluster.start_component("node-1").await?;
    assert_eq!(
        get_status(&format!("{}/health/ready", cluster.app.node_url("node-1"))).await?,
        200
    );

    let pids: Vec<u32> = cluster.status().iter().map(|status| status.pid).collect();
    cluster.shutdown().await?;
    for pid in pids {
        assert!(!pid_is_alive(pid), "pid {pid} survived shutdown");
        assert!(!process_group_has_live_members(pid), "group {pid} survived shutdown");
    }
    Ok(())
}
