//! The client crate stays light: an application that depends on it gets no database
//! driver, no server framework, no actor runtime and none of parley-sim's tooling.

use std::process::Command;

/// Crates of the server and of the tools that must never reach a client's build.
const SERVER_AND_TOOL_CRATES: &[&str] = &[
    "mysql_async",
    "warp",
    "ractor",
    "ractor_cluster",
    "plotters",
    "tonic",
    "rcgen",
    "parley-actors",
    "parley-node",
    "parley-launcher",
];

#[test]
fn the_client_depends_on_none_of_the_server_or_tool_crates() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "parley-client",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"parley-protocol"), "the tree looks wrong: {tree}");
    let unwanted: Vec<&&str> = SERVER_AND_TOOL_CRATES
        .iter()
        .filter(|unwanted| crates.contains(unwanted))
        .collect();
    assert!(unwanted.is_empty(), "parley-client pulls in {unwanted:?}:\n{tree}");
}
