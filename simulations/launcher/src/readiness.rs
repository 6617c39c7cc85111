//! Waiting for things to become true: polled with a deadline, never a fixed sleep.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};

/// How often a readiness probe is repeated while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One look at whatever is being waited for.
pub enum Probe<T> {
    /// Ready, with what the probe found.
    Ready(T),
    /// Not yet; the reason is reported if the deadline passes.
    NotYet(anyhow::Error),
}

/// Calls `probe` every [`POLL_INTERVAL`] until it is ready. An `Err` from the probe
/// aborts at once (e.g. the process being waited for has died).
pub async fn poll_until_ready<T, ProbeFn, ProbeFuture>(
    description: &str,
    timeout: Duration,
    mut probe: ProbeFn,
) -> anyhow::Result<T>
where
    ProbeFn: FnMut() -> ProbeFuture,
    ProbeFuture: Future<Output = anyhow::Result<Probe<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last_reason = match probe().await? {
            Probe::Ready(value) => return Ok(value),
            Probe::NotYet(reason) => reason,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{description}: not ready after {timeout:?}: {last_reason:#}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls until `component` accepts TCP connections on `address`, failing at once if its
/// process dies meanwhile.
pub async fn wait_until_component_listens(
    description: &str,
    component: &crate::component::Component,
    address: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    poll_until_ready(description, timeout, || async {
        component.ensure_still_running()?;
        Ok(if tcp_port_accepts(address).await {
            Probe::Ready(())
        } else {
            Probe::NotYet(anyhow!("{address} does not accept connections"))
        })
    })
    .await
}

/// True if something accepts TCP connections on `addr` right now.
pub async fn tcp_port_accepts(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The HTTP status of a GET, with a short timeout. A client per call: nothing here may
/// outlive the caller's runtime. `accept_any_certificate` is for probing our own nginx
/// on loopback with edge TLS: its certificate names the public host and may come from
/// any CA; the probe asks whether nginx serves, clients authenticate it themselves.
pub async fn http_get_status(url: &str, accept_any_certificate: bool) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder()
        // A proxy from the environment must never sit between us and 127.0.0.1.
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .danger_accept_invalid_certs(accept_any_certificate)
        .build()?;
    let response = client.get(url).send().await?;
    Ok(response.status().as_u16())
}

/// The last lines of a component's log, to explain why it did not come up.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    const TAIL_BYTES: u64 = 8 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// MariaDB writes its diagnostics here, beside the process's stdout/stderr `log`.
pub const MARIADB_ERROR_LOG_NAME: &str = "error.log";

/// The error for a component that died while we waited for it, with the end of its
/// log (and of MariaDB's own error log, where the reason usually is).
pub fn died_while_starting(name: &str, log_path: &Path) -> anyhow::Error {
    let mut message = format!(
        "{name} exited while starting; last lines of {}:\n{}",
        log_path.display(),
        log_tail(log_path, 20)
    );
    let error_log = log_path.with_file_name(MARIADB_ERROR_LOG_NAME);
    if error_log.is_file() {
        message.push_str(&format!(
            "\nlast lines of {}:\n{}",
            error_log.display(),
            log_tail(&error_log, 20)
        ));
    }
    anyhow!(message)
}
