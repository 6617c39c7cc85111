//! Partitions of one database server from everything else (the nodes, HAProxy, the
//! other servers), healing them, and fencing a partitioned master that was replaced
//! meanwhile.
//!
//! A master cut off with a commit in flight keeps it: with `AFTER_SYNC` the transaction
//! is in its binlog, prepared in InnoDB, and waits for an acknowledgement no replica will
//! send (the semi-sync timeout is a year). Nothing sent over SQL removes it: `SET GLOBAL
//! read_only = 1` waits for it, and turning semi-sync off commits it, an errant GTID the
//! new master never had. Only crash recovery as a replica (`init_rpl_role = SLAVE`)
//! rolls it back and truncates the binlog. So a healed server that is still writable while
//! another server took over is shot (SIGKILL) and restarted with the replica
//! configuration, pointed at the new master: the STONITH a supervisor would carry out.

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::mariadb_launch::{MASTER_NAME, REPLICA_NAMES};
use super::DatabaseServers;
use crate::network_partition::{PartitionTarget, ProcessCgroup};

impl DatabaseServers {
    /// Cuts the server off: nothing it sends leaves, nothing reaches its port. It keeps
    /// running, unaware; the launcher's own sessions over its unix socket still work.
    pub fn partition_server(&self, name: &str) -> anyhow::Result<()> {
        let (cgroup, port) = self.isolation_of(name)?;
        PartitionTarget {
            cgroup: &cgroup,
            listening_ports: &[port],
        }
        .cut()
        .with_context(|| format!("partitioning {name}"))
    }

    /// Removes the server's partition (false if it had none), then fences it if it still
    /// takes writes while another server does too (see the module's docs): it comes back
    /// as a caught-up replica of that server.
    pub async fn heal_server(&self, name: &str) -> anyhow::Result<bool> {
        let (cgroup, port) = self.isolation_of(name)?;
        let had_partition = PartitionTarget {
            cgroup: &cgroup,
            listening_ports: &[port],
        }
        .heal()
        .with_context(|| format!("healing {name}"))?;
        if had_partition {
            self.fence_if_replaced(name).await?;
        }
        Ok(had_partition)
    }

    /// SIGKILL and a restart as a replica when `name` is writable and another server is
    /// too: the nodes promoted that one while `name` was cut off.
    async fn fence_if_replaced(&self, name: &str) -> anyhow::Result<()> {
        let Some(master) = self.writable_server_other_than(name).await else {
            return Ok(());
        };
        if self.read_only_of(name).await != Some(false) {
            // Read-only: a replica all along, or demoted by the nodes with nothing in
            // flight; its replication reconnects by itself.
            return Ok(());
        }
        tracing::warn!(
            server = name,
            master,
            "fencing a replaced master: sigkill, then a restart as a replica"
        );
        self.kill(name, Signal::SIGKILL)?;
        self.start_as_replica_of(name, master)
            .await
            .with_context(|| format!("rejoining the fenced {name} as a replica of {master}"))
    }

    /// Heals every server and removes the cgroups of the servers that are gone: a stopped
    /// cluster leaves no firewall rule behind. Nothing is fenced here.
    pub(crate) fn heal_all_and_release_cgroups(&self) {
        for name in std::iter::once(MASTER_NAME).chain(REPLICA_NAMES) {
            let Ok((cgroup, port)) = self.isolation_of(name) else {
                continue;
            };
            let target = PartitionTarget {
                cgroup: &cgroup,
                listening_ports: &[port],
            };
            if let Err(error) = target.heal() {
                tracing::warn!(server = name, "could not heal the server's partition: {error:#}");
            }
            cgroup.remove_if_empty();
        }
    }

    fn isolation_of(&self, name: &str) -> anyhow::Result<(ProcessCgroup, u16)> {
        let Some(port) = self.ports.of_server(name) else {
            bail!("{name:?} is not a database server (master, replica-1, replica-2)");
        };
        Ok((ProcessCgroup::of_component(self.components.get(name)?)?, port))
    }
}
