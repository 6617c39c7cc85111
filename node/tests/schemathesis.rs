//! schemathesis (from PyPI, installed by `deploy/install.sh`) generates requests from the
//! node's own OpenAPI document, valid and invalid, and checks every answer: no 5xx, only
//! documented status codes and content types, and bodies that match their schemas.

#[path = "support/test_app.rs"]
mod test_app;

use std::process::Command;

use test_app::{shared_servers, Pair, TestApp};

const BINARY: &str = "schemathesis";

/// What is checked; the others judge the document's precision (a request the schema
/// allows but the node refuses with a 400), not the node's behaviour.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_answers_every_generated_request_as_its_openapi_document_says() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let pair = Pair::in_app(app, "fuzzed").await;
    let node = pair.app.app.node_url("node-1");
    let document = format!("{node}/openapi.json");
    let spec: serde_json::Value = reqwest::get(&document).await.unwrap().json().await.unwrap();
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().map_or(0, |methods| methods.len()))
        .sum();
    assert!(operations >= 14, "the document lists only {operations} operations");
    // schemathesis blocks; the node runs in its own process, so a blocking thread is fine.
    let token = pair.bob.clone();
    // schemathesis keeps a cache of what it found in its working directory.
    let scratch = tempfile::tempdir().unwrap();
    let working_dir = scratch.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .current_dir(&working_dir)
            .args([
                "-c",
                "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            ])
            .args(["run", &document, "--checks", CHECKS])
            .args(["--header", &format!("Authorization: {token}")])
            .args(["--max-examples", "25", "--workers", "2", "--request-timeout", "10"])
            // Fixed, so a failure here is the same failure on the next run.
            .args(["--seed", "20261127", "--no-color"])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (deploy/install.sh installs schemathesis)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !report.contains("No module named"),
        "schemathesis is missing: run deploy/install.sh\n{report}"
    );
    assert!(output.status.success(), "schemathesis found failures:\n{report}");
    // It really ran: every operation of the document was exercised.
    assert!(report.contains(&format!("Tested: {operations}")), "{report}");
}
