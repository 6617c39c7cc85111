//! The cargo-fuzz targets in `actors/checks/fuzz/` (the websocket frame parser, the HTTP request
//! bodies), each run for a bounded time: the run fails on any crash, panic, timeout or
//! broken invariant the fuzzer finds, and says where the crashing input was written.
//!
//! `cargo fuzz` is installed by `deploy/install.sh`; without it this test fails rather
//! than skips. Only stable Rust is installed here, so the instrumented build runs with
//! `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes nightly-only `-Z` flags to rustc). Seconds per
//! target: `PARLEY_FUZZ_SECONDS` (default 60); both targets run at once, one core each.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const BINARY: &str = "fuzzing";
/// The cargo-fuzz project, inside the crate it fuzzes.
const FUZZ_DIR: &str = "actors/checks/fuzz";
const DEFAULT_SECONDS_PER_TARGET: u64 = 60;
/// libFuzzer counts a single input running longer than this as a crash (a hang).
const SECONDS_PER_INPUT: u64 = 10;
/// Margin over `-max_total_time` before the test stops waiting for a fuzzer: its start,
/// loading the corpus and writing a crash take a few seconds.
const RUN_MARGIN: Duration = Duration::from_secs(60);
/// A cold instrumented build takes about two minutes on two cores; this only catches a
/// build that hangs.
const BUILD_TIME_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How much of the fuzzer's output a failure shows.
const TAIL_LINES: usize = 60;

/// No AddressSanitizer: every fuzzed function is safe Rust (no `unsafe` in `checks` or
/// `protocol`), so ASan would find nothing a panic does not, and it needs a sanitizer
/// runtime that stable toolchains do not promise. Without it the build is plain
/// instrumented release code and runs several times faster per input.
const SANITIZER: &str = "none";

#[test]
fn the_websocket_frame_parser_survives_fuzzing() -> anyhow::Result<()> {
    fuzz_for_bounded_time("websocket_frame")
}

#[test]
fn the_http_request_bodies_survive_fuzzing() -> anyhow::Result<()> {
    fuzz_for_bounded_time("http_bodies")
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ sits in the repository")
        .to_path_buf()
}

/// Apart from the workspace's target directory: the outer `cargo test` holds that one's
/// build lock for as long as this test runs, so an inner build there would wait forever.
fn fuzz_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-target")
}

fn seconds_per_target() -> anyhow::Result<u64> {
    match std::env::var("PARLEY_FUZZ_SECONDS") {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("PARLEY_FUZZ_SECONDS={value:?} is not a number of seconds")),
        Err(_) => Ok(DEFAULT_SECONDS_PER_TARGET),
    }
}

/// `cargo fuzz ...` for the repository's fuzz project, with nightly flags allowed.
fn cargo_fuzz(subcommand: &str) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repository_root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", subcommand]);
    command
}

/// One instrumented build of every target, shared by the tests of this binary (they run
/// in parallel; the second waits for the first one's build).
fn build_fuzz_targets_once() -> anyhow::Result<()> {
    static BUILD: OnceLock<Result<(), String>> = OnceLock::new();
    BUILD
        .get_or_init(|| build_fuzz_targets().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_fuzz_targets() -> anyhow::Result<()> {
    parley_launcher::test_watchdog::arm(BINARY);
    let installed = cargo_fuzz("--version")
        .output()
        .context("running cargo to look for cargo-fuzz")?;
    ensure!(
        installed.status.success(),
        "cargo-fuzz is missing: run deploy/install.sh (it installs cargo-fuzz with cargo)\n{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let started = Instant::now();
    let mut build = cargo_fuzz("build");
    build
        .arg("--fuzz-dir")
        .arg(repository_root().join(FUZZ_DIR))
        .arg("--target-dir")
        .arg(fuzz_target_dir())
        .args(["--sanitizer", SANITIZER]);
    let (status, output) = run_bounded(build, BUILD_TIME_LIMIT).context("building the fuzz targets")?;
    ensure!(
        status.success(),
        "cargo fuzz build failed ({status}):\n{}",
        tail(&output, TAIL_LINES)
    );
    eprintln!("fuzz targets built in {:.0?}", started.elapsed());
    Ok(())
}

fn fuzz_for_bounded_time(target: &str) -> anyhow::Result<()> {
    build_fuzz_targets_once()?;
    let seconds = seconds_per_target()?;
    let fuzz_dir = repository_root().join(FUZZ_DIR);
    // New inputs go to a scratch corpus (listed first); the committed seeds are only read.
    let scratch_corpus = tempfile::tempdir().context("creating a scratch corpus directory")?;
    let seed_corpus = fuzz_dir.join("corpus").join(target);
    ensure!(seed_corpus.is_dir(), "no seed corpus at {}", seed_corpus.display());
    let mut run = cargo_fuzz("run");
    run.arg(target)
        .arg("--fuzz-dir")
        .arg(&fuzz_dir)
        .arg("--target-dir")
        .arg(fuzz_target_dir())
        .args(["--sanitizer", SANITIZER])
        .arg(scratch_corpus.path())
        .arg(&seed_corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={SECONDS_PER_INPUT}"))
        .arg("-print_final_stats=1");
    let started = Instant::now();
    let (status, output) =
        run_bounded(run, Duration::from_secs(seconds) + RUN_MARGIN).with_context(|| format!("fuzzing {target}"))?;
    if !status.success() {
        let artifacts: Vec<&str> = output
            .lines()
            .filter_map(|line| line.split_once("Test unit written to ").map(|(_, path)| path.trim()))
            .collect();
        bail!(
            "fuzz target {target} failed ({status}) after {:.0?}\ncrash artifact(s): {}\n\
             reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir {FUZZ_DIR} {target} --sanitizer {SANITIZER} <artifact>\n\
             panic: {}\nlast {TAIL_LINES} lines of the fuzzer's output:\n{}",
            started.elapsed(),
            if artifacts.is_empty() {
                "none written".to_owned()
            } else {
                artifacts.join(", ")
            },
            panic_message(&output).unwrap_or("none (a timeout, an out-of-memory or a signal)"),
            tail(&output, TAIL_LINES)
        );
    }
    let executions = output
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .map(str::trim)
        .unwrap_or("?");
    eprintln!(
        "{target}: no crash in {:.0?}, {executions} inputs run",
        started.elapsed()
    );
    Ok(())
}

/// Runs `command` to completion and returns its exit status with its stderr followed by
/// its stdout (libFuzzer and cargo write to stderr); past `limit` the command and
/// everything it started are killed.
fn run_bounded(mut command: Command, limit: Duration) -> anyhow::Result<(ExitStatus, String)> {
    // Its own process group: cargo starts cargo-fuzz, which starts the fuzzer, and a
    // deadline must stop all three, or the fuzzer would keep the output pipes open.
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("starting {command:?}"))?;
    let stdout_reader = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr_reader = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_with_limit(&mut child, limit)?;
    let output = format!(
        "{}{}",
        stderr_reader.join().expect("the stderr reader does not panic"),
        stdout_reader.join().expect("the stdout reader does not panic")
    );
    match status {
        Some(status) => Ok((status, output)),
        None => bail!(
            "still running after {limit:?}, killed; last {TAIL_LINES} lines:\n{}",
            tail(&output, TAIL_LINES)
        ),
    }
}

fn read_in_background(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut output = Vec::new();
        // A read error ends the output early; what was read so far is still worth showing.
        let _ = stream.read_to_end(&mut output);
        String::from_utf8_lossy(&output).into_owned()
    })
}

/// The child's exit status, or `None` when its process group had to be killed at the
/// deadline.
fn wait_with_limit(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let group = Pid::from_raw(i32::try_from(child.id()).context("a process id fits an i32")?);
            killpg(group, Signal::SIGKILL).context("killing a process group past its deadline")?;
            child.wait().context("reaping a killed child")?;
            return Ok(None);
        }
        // Polling the exit status; nothing else to wait on without an async runtime.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The panic's location and message: with a backtrace they scroll out of the tail.
fn panic_message(output: &str) -> Option<&str> {
    let start = output.find("panicked at ")?;
    let after_location = output[start..].find('\n').map_or(output.len(), |end| start + end + 1);
    let end = output[after_location..]
        .find('\n')
        .map_or(output.len(), |end| after_location + end);
    Some(output[start..end].trim_end())
}

fn tail(output: &str, lines: usize) -> String {
    let all: Vec<&str> = output.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
