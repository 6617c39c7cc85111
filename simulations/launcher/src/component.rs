//! One supervised process of the cluster (a MariaDB server, HAProxy, nginx, a node),
//! and the set of them a launcher owns.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::process_control::{
    kill_process_groups_and_wait_blocking, process_group_is_gone, process_is_alive, signal_process_group,
    spawn_component_process, terminate_process_groups, LaunchCommand, ProcessIdentity, SpawnMode,
};
use crate::readiness::{poll_until_ready, Probe};

/// How long a component gets between SIGTERM and SIGKILL on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `parley-sim status` shows for each component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// The component's name (`master`, `node-1`, `nginx`, ...).
    pub name: String,
    /// Its process id (of the group leader).
    pub pid: u32,
    /// `127.0.0.1:port` (for HAProxy: its read frontend).
    pub addr: String,
    /// Whether that very process (pid and start time) is still running.
    pub alive: bool,
    /// For a database server: `master` while it takes writes (`read_only = 0`),
    /// `replica` while read-only, `unreachable` when it does not answer; none otherwise
    /// (and none until asked for with [`crate::DatabaseServers::with_roles`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A component as persisted in `cluster.json`: enough to signal it and restart it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The component's name.
    pub name: String,
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    /// Which process it is (pid and start time), to signal it later.
    pub process: ProcessIdentity,
    /// How to start it again.
    pub command: LaunchCommand,
}

/// One started process of the cluster (a server, a node, a proxy), restartable with the
/// command it was started with.
#[derive(Debug)]
pub struct Component {
    /// The component's name (`master`, `node-1`, `nginx`, ...).
    pub name: String,
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    /// How it was started, and how a restart starts it again.
    pub command: LaunchCommand,
    // A restart replaces the process behind a shared reference.
    process: Mutex<ProcessIdentity>,
}

impl Component {
    /// Starts `command` in its own process group (see [`SpawnMode`]); fails when it cannot
    /// be started (it does not wait for it to be ready).
    pub fn spawn(name: &str, addr: String, command: LaunchCommand, mode: SpawnMode) -> anyhow::Result<Self> {
        let process = spawn_component_process(&command, mode).with_context(|| format!("starting {name}"))?;
        tracing::info!(component = name, pid = process.pid, "started {name}");
        Ok(Self {
            name: name.to_owned(),
            addr,
            command,
            process: Mutex::new(process),
        })
    }

    /// A component started by another process, read back from `cluster.json`.
    pub fn from_record(record: ComponentRecord) -> Self {
        Self {
            name: record.name,
            addr: record.addr,
            command: record.command,
            process: Mutex::new(record.process),
        }
    }

    /// What `cluster.json` keeps of it.
    pub fn record(&self) -> ComponentRecord {
        ComponentRecord {
            name: self.name.clone(),
            addr: self.addr.clone(),
            process: self.process_identity(),
            command: self.command.clone(),
        }
    }

    /// The current process (a restart replaces it).
    pub fn process_identity(&self) -> ProcessIdentity {
        *self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the current process is still running (a recycled pid does not count).
    pub fn is_alive(&self) -> bool {
        process_is_alive(self.process_identity())
    }

    /// Its line of `parley-sim status`.
    pub fn status(&self) -> ComponentStatus {
        let process = self.process_identity();
        ComponentStatus {
            name: self.name.clone(),
            pid: process.pid,
            addr: self.addr.clone(),
            alive: process_is_alive(process),
            role: None,
        }
    }

    /// Signals the whole process group. After SIGKILL it also waits (briefly, blocking)
    /// until the group is gone, so a caller's next `status` already shows it dead.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let process = self.process_identity();
        let delivered = signal_process_group(process, signal)?;
        if !delivered {
            tracing::info!(component = %self.name, "{} was not running; {signal} not delivered", self.name);
            return Ok(());
        }
        if signal == Signal::SIGKILL {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !process_group_is_gone(process) {
                if std::time::Instant::now() >= deadline {
                    bail!("{} (pid {}) still running 5 s after sigkill", self.name, process.pid);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Starts the same command again unless it is still running (then returns false).
    /// Leftovers of the old process group (an nginx worker outliving its master) are
    /// killed first, or they would keep the port.
    pub async fn respawn_unless_running(&self, mode: SpawnMode) -> anyhow::Result<bool> {
        let old_process = self.process_identity();
        if process_is_alive(old_process) {
            tracing::info!(component = %self.name, pid = old_process.pid, "{} is already running", self.name);
            return Ok(false);
        }
        let _ = signal_process_group(old_process, Signal::SIGKILL);
        poll_until_ready(
            &format!("leftovers of {} to exit", self.name),
            Duration::from_secs(10),
            || async {
                Ok(if process_group_is_gone(old_process) {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(anyhow::anyhow!("process group {} still has members", old_process.pid))
                })
            },
        )
        .await?;
        let new_process =
            spawn_component_process(&self.command, mode).with_context(|| format!("restarting {}", self.name))?;
        tracing::info!(component = %self.name, pid = new_process.pid, "restarted {}", self.name);
        *self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = new_process;
        Ok(true)
    }

    /// An error to abort a readiness wait when the process has already died.
    pub fn ensure_still_running(&self) -> anyhow::Result<()> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(crate::readiness::died_while_starting(
                &self.name,
                &self.command.log_path,
            ))
        }
    }
}

/// The components one launcher struct is responsible for, in start order.
#[derive(Debug, Default)]
pub struct ComponentSet {
    components: Vec<Component>,
}

impl ComponentSet {
    /// Components started by another process, read back from `cluster.json`.
    pub fn from_records(records: Vec<ComponentRecord>) -> Self {
        Self {
            components: records.into_iter().map(Component::from_record).collect(),
        }
    }

    /// Adds a started component.
    pub fn push(&mut self, component: Component) {
        self.components.push(component);
    }

    /// The component called `name`, if any.
    pub fn find(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|component| component.name == name)
    }

    /// The component called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> anyhow::Result<&Component> {
        self.find(name).with_context(|| {
            format!(
                "no component named {name:?} (known: {})",
                self.names().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Every component's name, in start order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.components.iter().map(|component| component.name.as_str())
    }

    /// Every component's status, in start order.
    pub fn statuses(&self) -> Vec<ComponentStatus> {
        self.components.iter().map(Component::status).collect()
    }

    /// What `cluster.json` keeps of every component.
    pub fn records(&self) -> Vec<ComponentRecord> {
        self.components.iter().map(Component::record).collect()
    }

    /// Whether any component's process still runs.
    pub fn any_alive(&self) -> bool {
        self.components.iter().any(Component::is_alive)
    }

    pub(crate) fn identities(&self) -> Vec<ProcessIdentity> {
        self.components.iter().map(Component::process_identity).collect()
    }

    /// SIGKILL everything and wait (blocking) until it is gone.
    pub fn kill_all_blocking(&self) {
        kill_process_groups_and_wait_blocking(&self.identities(), Duration::from_secs(10));
    }

    /// SIGTERM everything, SIGKILL what is left after `grace`.
    pub async fn terminate_all(&self, grace: Duration) {
        terminate_process_groups(&self.identities(), grace).await;
    }
}
