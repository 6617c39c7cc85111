//! The seed's experiment, asserted: wrk on get-by-email through nginx while a replica
//! and then a node are SIGKILLed. Zero non-2xx responses, zero socket errors.

#[path = "support/test_app.rs"]
mod test_app;

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use parley_client::http::seed_person;
use test_app::{own_servers, TestApp};
use tokio::time::{sleep_until, Instant};

/// What wrk reported.
#[derive(Debug, Default)]
struct WrkSummary {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

fn parse_wrk(output: &str) -> WrkSummary {
    let mut summary = WrkSummary::default();
    for line in output.lines().map(str::trim) {
        if line.contains(" requests in ") {
            summary.requests = line.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            summary.non_2xx = rest.trim().parse().unwrap_or(u64::MAX);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 1, write 0, timeout 0"
            summary.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1))
                .map(|count| count.parse::<u64>().unwrap_or(u64::MAX))
                .sum();
        }
    }
    summary
}

#[test]
fn wrk_output_is_parsed() {
    let output = "  1000 requests in 20.00s, 1.00MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\n";
    let summary = parse_wrk(output);
    assert_eq!((summary.requests, summary.socket_errors, summary.non_2xx), (1000, 6, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_a_replica_and_a_node_are_killed_under_wrk() {
    let servers = own_servers("failover_reads").await;
    let app = TestApp::spawn(&servers, 2).await;
    app.http.sign_up_ok(&seed_person("Bob", "wrk")).await.unwrap();
    let alice_id = app.http.sign_up_ok(&seed_person("Alice", "wrk")).await.unwrap();
    let token = app
        .http
        .sign_in("bob.wrk@email.com", "1234567890")
        .await
        .unwrap()
        .access_token;
    let url = format!(
        "{}/auth/user/get-by-email?email=alice.wrk@email.com",
        app.http.base_url()
    );
    assert_eq!(
        app.http.user_id_by_email(&token, "alice.wrk@email.com").await.unwrap(),
        alice_id
    );

    let started = Instant::now();
    let wrk = tokio::process::Command::new("wrk")
        .args(["-t2", "-c10", "-d20s", "-H", &format!("Authorization: {token}"), &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wrk is installed by deploy/install.sh");

    // The experiment's timeline: a replica at 5 s, a node at 10 s.
    sleep_until(started + Duration::from_secs(5)).await;
    servers.kill("replica-1", Signal::SIGKILL).unwrap();
    sleep_until(started + Duration::from_secs(10)).await;
    app.app.kill("node-1", Signal::SIGKILL).unwrap();

    let output = wrk.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = parse_wrk(&stdout);
    println!("{stdout}");
    assert!(
        summary.requests > 2_000,
        "too few requests to mean anything: {summary:?}"
    );
    assert_eq!(summary.non_2xx, 0, "{stdout}");
    assert_eq!(summary.socket_errors, 0, "{stdout}");

    // The survivors still answer, and the killed replica rejoins and catches up.
    servers.start_component("replica-1").await.unwrap();
    servers.wait_replicas_caught_up(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        app.http.user_id_by_email(&token, "alice.wrk@email.com").await.unwrap(),
        alice_id
    );
}
