//! Partitions of one node from everything else (peers, database, nginx), and healing
//! them: the app tier knows each node's cgroup and ports, `network_partition` does the
//! cutting.

use anyhow::{bail, Context};

use super::AppTier;
use crate::network_partition::{PartitionTarget, ProcessCgroup};

impl AppTier {
    /// Cuts the node off: nothing it sends leaves, nothing reaches its HTTP and cluster
    /// ports. The process keeps running, unaware, as after a switch failure.
    pub fn partition_node(&self, name: &str) -> anyhow::Result<()> {
        let (cgroup, ports) = self.isolation_of(name)?;
        PartitionTarget {
            cgroup: &cgroup,
            listening_ports: &ports,
        }
        .cut()
        .with_context(|| format!("partitioning {name}"))
    }

    /// Removes the node's partition; false if it had none.
    pub fn heal_node(&self, name: &str) -> anyhow::Result<bool> {
        let (cgroup, ports) = self.isolation_of(name)?;
        PartitionTarget {
            cgroup: &cgroup,
            listening_ports: &ports,
        }
        .heal()
        .with_context(|| format!("healing {name}"))
    }

    /// Heals every node and removes the cgroups of the nodes that are gone: a stopped
    /// cluster leaves no firewall rule behind.
    pub(crate) fn heal_all_and_release_cgroups(&self) {
        for name in self.node_names() {
            let Ok((cgroup, ports)) = self.isolation_of(&name) else {
                continue;
            };
            let target = PartitionTarget {
                cgroup: &cgroup,
                listening_ports: &ports,
            };
            if let Err(error) = target.heal() {
                tracing::warn!(node = %name, "could not heal the node's partition: {error:#}");
            }
            cgroup.remove_if_empty();
        }
    }

    fn isolation_of(&self, name: &str) -> anyhow::Result<(ProcessCgroup, Vec<u16>)> {
        let Some(index) = self.node_names().iter().position(|node| node == name) else {
            bail!(
                "only nodes can be partitioned; {name:?} is not one of {}",
                self.node_names().join(", ")
            );
        };
        let cgroup = ProcessCgroup::of_component(self.components.get(name)?)?;
        let mut ports = vec![self.node_ports[index]];
        ports.extend(self.cluster_ports.get(index).copied());
        Ok((cgroup, ports))
    }
}
