//! Debian's `chromedriver` as a child process of the test, and headless Chromium
//! sessions through it.
//!
//! chromedriver runs in its own process group, tied to the test process (the kernel
//! kills it if the test dies) and killed with every Chromium it started when the guard
//! drops, also when the test fails half-way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::wd::Capabilities;
use fantoccini::ClientBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use parley_launcher::ports::pick_free_ports;
use parley_launcher::process_control::{
    find_program, kill_process_groups_and_wait_blocking, spawn_component_process, LaunchCommand, ProcessIdentity,
    SpawnMode,
};
use parley_launcher::readiness::{poll_until_ready, Probe};
use serde_json::json;

/// Debian's chromium package puts the browser here; chromedriver finds it by this path.
const CHROMIUM_BINARY: &str = "/usr/bin/chromium";
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ChromeDriver {
    process: ProcessIdentity,
    url: String,
    profiles_dir: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port and waits until it accepts sessions.
    /// Its log goes to `<work_dir>/chromedriver.log`.
    pub async fn start(work_dir: &Path) -> anyhow::Result<ChromeDriver> {
        let program = find_program("chromedriver")
            .context("chromedriver is missing: deploy/install.sh installs Debian's chromium-driver")?;
        if !Path::new(CHROMIUM_BINARY).exists() {
            bail!("{CHROMIUM_BINARY} is missing: deploy/install.sh installs Debian's chromium");
        }
        let port = pick_free_ports(1)?[0];
        let log_path = work_dir.join("chromedriver.log");
        let command = LaunchCommand {
            program,
            args: vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            env: Vec::new(),
            working_dir: Some(work_dir.to_path_buf()),
            log_path: log_path.clone(),
            cgroup: None,
        };
        let process = spawn_component_process(&command, SpawnMode::TiedToThisProcess)?;
        // From here the guard owns the process: any failure below kills it.
        let driver = ChromeDriver {
            process,
            url: format!("http://127.0.0.1:{port}"),
            profiles_dir: work_dir.join("chromium-profiles"),
        };
        let status_url = format!("{}/status", driver.url);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        poll_until_ready("chromedriver accepts sessions", DRIVER_START_TIMEOUT, || {
            let (http, status_url) = (http.clone(), status_url.clone());
            async move {
                let answer = match http.get(&status_url).send().await {
                    Ok(response) => response.json::<serde_json::Value>().await,
                    Err(error) => return Ok(Probe::NotYet(error.into())),
                };
                Ok(match answer {
                    Ok(status) if status["value"]["ready"] == true => Probe::Ready(()),
                    Ok(status) => Probe::NotYet(anyhow::anyhow!("not ready: {status}")),
                    Err(error) => Probe::NotYet(error.into()),
                })
            }
        })
        .await
        .with_context(|| format!("see {}", log_path.display()))?;
        Ok(driver)
    }

    /// A new headless Chromium with its own profile (so two sessions share no storage),
    /// allowed to reach only loopback addresses.
    pub async fn new_session(&self, name: &str, public_port: u16) -> anyhow::Result<fantoccini::Client> {
        let profile = self.profiles_dir.join(name);
        std::fs::create_dir_all(&profile).with_context(|| format!("creating {}", profile.display()))?;
        let arguments = [
            "--headless=new".to_owned(),
            // Chromium's sandbox refuses to run as root, which CI is.
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--window-size=1100,760".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            // Free ports may fall on one Chromium blocks as "unsafe" (e.g. 10080).
            format!("--explicitly-allowed-ports={public_port}"),
            // No traffic beyond this machine: no proxy, no name resolution except
            // loopback, none of the browser's own background services.
            "--no-proxy-server".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM_BINARY, "args": arguments },
        });
        let Some(capabilities) = capabilities.as_object().cloned() else {
            bail!("capabilities must be a JSON object");
        };
        let capabilities: Capabilities = capabilities;
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .with_context(|| format!("starting a Chromium session for {name} through {}", self.url))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // chromedriver and every Chromium it started share its process group.
        kill_process_groups_and_wait_blocking(&[self.process], Duration::from_secs(5));
    }
}
