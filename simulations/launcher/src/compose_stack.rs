//! Parley's docker compose deployment (`compose/`) driven from Rust, for the end-to-end
//! test: build the images, bring one project up, kill its containers the way an operator
//! would (`docker kill`), take it down, and make sure nothing of it is left behind.
//!
//! ```text
//! ComposeTool::detect()      `docker compose` (v2 plugin) or `docker-compose` (v1)
//! build_images(..)           compose/build-images.sh: base by debootstrap if needed
//! ComposeProject::new(..)    one project name; every command carries -p NAME -f FILE
//!   .up() .down()            Drop: down -v, then removes whatever still has its label
//!   .http_get_inside(..)     a GET from inside a container (what is not published)
//! docker_kill(ids)           SIGKILL containers, as an operator would
//! free_application_subnet_prefix()  a /24 for the application network no network here uses
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

/// The label docker compose (v1 and v2) puts on every container, network and volume.
const PROJECT_LABEL: &str = "com.docker.compose.project";
/// How long containers get to stop on `down` before they are killed.
const DOWN_STOP_TIMEOUT_SECONDS: &str = "5";

/// The repository's `compose/` directory (next to `deploy/`).
pub fn locate_compose_dir() -> anyhow::Result<PathBuf> {
    let deploy_dir = crate::deploy_templates::locate_deploy_dir()?;
    let compose_dir = deploy_dir
        .parent()
        .map(|repository| repository.join("compose"))
        .context("the deploy directory has no parent")?;
    if !compose_dir.join("docker-compose.yml").is_file() {
        bail!("{} has no docker-compose.yml", compose_dir.display());
    }
    Ok(compose_dir)
}

/// How to run docker compose on this machine: the v2 plugin or the v1 program.
#[derive(Debug, Clone)]
pub struct ComposeTool {
    program: String,
    leading_args: Vec<String>,
}

impl ComposeTool {
    /// `docker compose` when the plugin answers, else `docker-compose`; the same order as
    /// docs/compose.md and `compose/build-images.sh` users follow.
    pub fn detect() -> anyhow::Result<ComposeTool> {
        let candidates = [
            ComposeTool {
                program: "docker".into(),
                leading_args: vec!["compose".into()],
            },
            ComposeTool {
                program: "docker-compose".into(),
                leading_args: Vec::new(),
            },
        ];
        for candidate in candidates {
            let answered = std::process::Command::new(&candidate.program)
                .args(&candidate.leading_args)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if answered {
                return Ok(candidate);
            }
        }
        bail!("neither `docker compose` nor `docker-compose` works here; run deploy/install.sh")
    }

    /// The command as it would be typed (`docker compose` or `docker-compose`), for messages.
    pub fn describe(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.leading_args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs `compose/build-images.sh`, its progress lines going to stderr.
pub async fn build_images(compose_dir: &Path, parley_binary: &Path, tag: &str) -> anyhow::Result<()> {
    let script = compose_dir.join("build-images.sh");
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("--parley-binary")
        .arg(parley_binary)
        .args(["--tag", tag])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// What still carries a project's label.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Names of the containers still there.
    pub containers: Vec<String>,
    /// Names of the networks still there.
    pub networks: Vec<String>,
    /// Names of the volumes still there.
    pub volumes: Vec<String>,
}

impl Leftovers {
    /// Nothing of the project is left.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}

/// One compose project of `compose/docker-compose.yml`. Dropping it takes the project
/// down with its volumes and removes anything else labelled with its name, so a failing
/// test leaves no container, network or volume behind.
pub struct ComposeProject {
    tool: ComposeTool,
    name: String,
    compose_file: PathBuf,
    environment: Vec<(String, String)>,
}

impl ComposeProject {
    /// `environment` overrides `compose/.env` (variables of the process win over it).
    pub fn new(tool: ComposeTool, name: &str, compose_dir: &Path, environment: Vec<(String, String)>) -> Self {
        ComposeProject {
            tool,
            name: name.to_owned(),
            compose_file: compose_dir.join("docker-compose.yml"),
            environment,
        }
    }

    /// The compose project name (`-p`), also the label its leftovers are found by.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn compose_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.tool.program);
        command
            .args(&self.tool.leading_args)
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.compose_file)
            .args(args)
            .envs(self.environment.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null());
        command
    }

    /// Runs a compose command to the end; its stdout, or an error with its stderr.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let command = self.compose_command(args);
        run_to_completion(command, &format!("{} {}", self.tool.describe(), args.join(" "))).await
    }

    /// `up -d`: returns once every `depends_on` condition held, i.e. the databases,
    /// HAProxy and the nodes are healthy and nginx has started.
    pub async fn up(&self) -> anyhow::Result<()> {
        self.compose(&["up", "-d", "--no-build"]).await.map(drop)
    }

    /// The container of one service (`master`, `node-2`, …).
    pub async fn container_id(&self, service: &str) -> anyhow::Result<String> {
        let output = self.compose(&["ps", "-q", service]).await?;
        let id = output.lines().map(str::trim).find(|line| !line.is_empty());
        id.map(str::to_owned)
            .with_context(|| format!("service {service} of {} has no container", self.name))
    }

    /// The containers of several services, in order.
    pub async fn container_ids(&self, services: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(services.len());
        for service in services {
            ids.push(self.container_id(service).await?);
        }
        Ok(ids)
    }

    /// Whether the service's container is running (false once killed).
    pub async fn is_running(&self, service: &str) -> anyhow::Result<bool> {
        Ok(self.inspect(service, "{{.State.Running}}").await?.trim() == "true")
    }

    /// The service's container health as Docker reports it (`healthy`, `starting`,
    /// `unhealthy`), or its state when it is not running (`exited`, …).
    pub async fn health(&self, service: &str) -> anyhow::Result<String> {
        let format = "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}";
        Ok(self.inspect(service, format).await?.trim().to_owned())
    }

    /// `docker inspect --format FORMAT` of the service's container.
    async fn inspect(&self, service: &str, format: &str) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let mut command = std::process::Command::new("docker");
        command.args(["inspect", "--format", format, &id]).stdin(Stdio::null());
        run_to_completion(command, &format!("docker inspect {service}")).await
    }

    /// Runs a command inside a service's running container (`exec -T`); its stdout.
    pub async fn exec(&self, service: &str, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        self.compose(&args).await
    }

    /// `GET path` sent from inside a service's container to `port` on its loopback, for
    /// what the deployment publishes nowhere (a node's `/metrics` and `/cluster`). The
    /// images have no HTTP client; bash's `/dev/tcp` is enough for HTTP/1.0, where the
    /// server closes the connection after its answer.
    pub async fn http_get_inside(&self, service: &str, port: u16, path: &str) -> anyhow::Result<InsideAnswer> {
        let script = r#"exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3 && cat <&3"#;
        let port = port.to_string();
        let raw = self
            .exec(service, &["bash", "-c", script, "http-get", &port, path])
            .await?;
        InsideAnswer::parse(&raw).with_context(|| format!("GET {path} inside {service}: {raw:?}"))
    }

    /// The container's address on each of its networks (compose names them
    /// `<project>_<network>`).
    pub async fn container_addresses(&self, service: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let listing = self
            .inspect(
                service,
                "{{range $network, $settings := .NetworkSettings.Networks}}{{$network}} {{$settings.IPAddress}}\n{{end}}",
            )
            .await?;
        Ok(listing
            .lines()
            .filter_map(|line| line.trim().split_once(' '))
            .map(|(network, address)| (network.to_owned(), address.to_owned()))
            .collect())
    }

    /// The last lines of every service's log, for a failure report.
    pub async fn logs_tail(&self, lines: usize) -> String {
        let tail = lines.to_string();
        match self.compose(&["logs", "--no-color", "--tail", &tail]).await {
            Ok(logs) => logs,
            Err(error) => format!("(no logs: {error:#})"),
        }
    }

    /// `down -v --remove-orphans`: containers, networks and volumes of the project.
    pub async fn down(&self) -> anyhow::Result<()> {
        self.compose(&["down", "-v", "--remove-orphans", "--timeout", DOWN_STOP_TIMEOUT_SECONDS])
            .await
            .map(drop)
    }

    /// Everything that still carries the project's label.
    pub fn leftovers(&self) -> anyhow::Result<Leftovers> {
        let filter = format!("label={PROJECT_LABEL}={}", self.name);
        let list = |listing: &[&str]| docker_lines(listing, &["--filter", &filter, "--quiet"]);
        Ok(Leftovers {
            containers: list(&["ps", "--all"])?,
            networks: list(&["network", "ls"])?,
            volumes: list(&["volume", "ls"])?,
        })
    }

    /// Removes whatever `down` left (or everything, if `down` never ran).
    fn remove_leftovers(&self) {
        let Ok(leftovers) = self.leftovers() else {
            return;
        };
        let remove = |args: &[&str], ids: &[String]| {
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(args)
                    .args(ids)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        };
        remove(&["rm", "--force", "--volumes"], &leftovers.containers);
        remove(&["network", "rm"], &leftovers.networks);
        remove(&["volume", "rm", "--force"], &leftovers.volumes);
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        // Blocking is fine here: this runs once, at the end of a test or of a failure.
        let _ = self
            .compose_command(&["down", "-v", "--remove-orphans", "--timeout", DOWN_STOP_TIMEOUT_SECONDS])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.remove_leftovers();
    }
}

/// The status line's code and the body of an HTTP answer read raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsideAnswer {
    /// The HTTP status code of the answer's status line.
    pub status: u16,
    /// Everything after the head, as received.
    pub body: String,
}

impl InsideAnswer {
    fn parse(raw: &str) -> anyhow::Result<InsideAnswer> {
        let (head, body) = raw.split_once("\r\n\r\n").context("no end of the head")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("no status code")?;
        Ok(InsideAnswer {
            status,
            body: body.to_owned(),
        })
    }
}

/// The first three numbers of a /24 for the application network (compose's
/// `PARLEY_APPLICATION_SUBNET_PREFIX`) that overlaps no network of this engine: the
/// network has a fixed subnet (nginx has a fixed address in it), and Docker refuses a
/// second network on a subnet in use, by another project or the default one of `.env`.
/// Chosen at random among 172.16.0.0/16's, outside Docker's own default pools.
pub fn free_application_subnet_prefix() -> anyhow::Result<String> {
    let mut taken: Vec<(u32, u32)> = Vec::new();
    for network in docker_lines(&["network", "ls"], &["--quiet"])? {
        let subnets = docker_lines(
            &["network", "inspect"],
            &["--format", "{{range .IPAM.Config}}{{println .Subnet}}{{end}}", &network],
        )?;
        taken.extend(subnets.iter().filter_map(|subnet| ipv4_range(subnet)));
    }
    let first = rand::random::<u8>();
    (0..=255u8)
        .map(|offset| first.wrapping_add(offset))
        .map(|third| (third, u32::from(Ipv4Addr::new(172, 16, third, 0))))
        .find(|(_, start)| {
            let end = start + 255;
            taken
                .iter()
                .all(|(taken_start, taken_end)| end < *taken_start || *start > *taken_end)
        })
        .map(|(third, _)| format!("172.16.{third}"))
        .context("every /24 of 172.16.0.0/16 overlaps a Docker network here")
}

/// The first and last address of an IPv4 CIDR (`172.17.0.0/16`); None for IPv6.
fn ipv4_range(cidr: &str) -> Option<(u32, u32)> {
    let (address, prefix_length) = cidr.trim().split_once('/')?;
    let start = u32::from(address.parse::<Ipv4Addr>().ok()?);
    let prefix_length: u32 = prefix_length.parse().ok().filter(|length| *length <= 32)?;
    let host_mask = u32::MAX.checked_shr(prefix_length).unwrap_or(0);
    Some((start & !host_mask, start | host_mask))
}

/// Names of every compose project that still has a container, network or volume here.
pub fn projects_present() -> anyhow::Result<Vec<String>> {
    let label_format = format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}");
    let filter = format!("label={PROJECT_LABEL}");
    let mut names = Vec::new();
    for listing in [&["ps", "--all"][..], &["network", "ls"][..], &["volume", "ls"][..]] {
        names.extend(docker_lines(
            listing,
            &["--filter", &filter, "--format", &label_format],
        )?);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The non-empty lines `docker LISTING OPTIONS` prints (blocking: used at the start and
/// the end of a test, and from Drop).
fn docker_lines(listing: &[&str], options: &[&str]) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new("docker")
        .args(listing)
        .args(options)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", listing.join(" ")))?;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            listing.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// SIGKILLs containers together with `docker kill`, as an operator would. Takes ids
/// looked up beforehand (`container_ids`): docker-compose v1 needs about a second per
/// lookup, which would delay the fault.
pub async fn docker_kill(container_ids: &[String]) -> anyhow::Result<()> {
    let mut command = std::process::Command::new("docker");
    command.arg("kill").args(container_ids).stdin(Stdio::null());
    run_to_completion(command, &format!("docker kill {}", container_ids.join(" "))).await?;
    Ok(())
}

/// Runs a command (without blocking the runtime), bounded so a wedged engine fails the
/// caller instead of hanging it.
async fn run_to_completion(command: std::process::Command, description: &str) -> anyhow::Result<String> {
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{description}: no answer within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("running {description}"))?;
    if !output.status.success() {
        bail!(
            "{description} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_answer_gives_its_status_and_body() {
        let answer =
            InsideAnswer::parse("HTTP/1.0 404 Not Found\r\ncontent-type: application/json\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, "{\"a\":1}");
        assert!(InsideAnswer::parse("HTTP/1.0 200 OK\r\n").is_err());
    }

    #[test]
    fn ipv4_subnets_become_address_ranges() {
        let range =
            |start: [u8; 4], end: [u8; 4]| Some((u32::from(Ipv4Addr::from(start)), u32::from(Ipv4Addr::from(end))));
        assert_eq!(ipv4_range("172.17.0.0/16"), range([172, 17, 0, 0], [172, 17, 255, 255]));
        assert_eq!(
            ipv4_range("172.16.200.0/24"),
            range([172, 16, 200, 0], [172, 16, 200, 255])
        );
        assert_eq!(ipv4_range("10.0.0.1/32"), range([10, 0, 0, 1], [10, 0, 0, 1]));
        assert_eq!(ipv4_range("0.0.0.0/0"), range([0, 0, 0, 0], [255, 255, 255, 255]));
        assert_eq!(ipv4_range("fd00::/8"), None);
    }
}
