//! Which server is the master, and what (if anything) the topology needs: a pure
//! function of one round of readings, so every rule is tested without a server.
//!
//! The rules, after orchestrator's and MaxScale's:
//! - **The master** is the one writable server. Two writable servers happen after a
//!   partition heals or an old master restarts with its old configuration; the one the
//!   replicas acknowledge (semi-synchronous clients) is the master, the other a stray.
//! - **Promote** only when no server has been writable for the failover delay *and*
//!   every reachable replica has lost its master too: a node cut off from a live master
//!   sees replicas still connected to it, and does nothing. (A replica connected to a
//!   server read here as read-only is not connected to a master: that one restarted
//!   read-only, and is a candidate like the others.) The executor then takes a
//!   lock on a majority of all servers, so a node on a minority side never acts.
//! - **The candidate** is the server furthest ahead by what it received (its relay log
//!   included): with semi-synchronous replication every acked commit is there.
//! - **Repoint** a read-only server that replicates from nobody or has lost a server
//!   that is no longer the master; **demote** a stray writable server.

use std::time::Duration;

use super::server_topology::ServerReading;

/// One server as a round saw it.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// The configured name.
    pub name: String,
    /// Where the other servers reach it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// What it said; `None` when it could not be read.
    pub reading: Option<ServerReading>,
}

impl ServerView {
    fn is_writable(&self) -> bool {
        self.reading.as_ref().is_some_and(|reading| !reading.read_only)
    }

    /// Whether `replica` replicates from this server (by address).
    fn is_followed_by(&self, replica: &ServerView) -> bool {
        replica
            .reading
            .as_ref()
            .and_then(|reading| reading.replication.as_ref())
            .is_some_and(|replication| {
                replication.io_connected
                    && replication.master_port == self.port
                    && replication.master_host.eq_ignore_ascii_case(&self.host)
            })
    }
}

/// What the topology needs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyAction {
    /// Make this server the master: let it apply what it received, stop its
    /// replication, turn on the master side of semi-synchronous replication, make it
    /// writable, and point every other reachable server at it.
    Promote {
        /// The server to promote.
        candidate: String,
    },
    /// Point these read-only servers at the master.
    Repoint {
        /// The servers to point at it.
        servers: Vec<String>,
        /// The master's name.
        master: String,
    },
    /// Make this writable server read-only (fencing it) and point it at the master.
    Demote {
        /// The stray writable server.
        server: String,
        /// The master's name.
        master: String,
    },
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Where writes go; `None` while there is no master (or no telling which).
    pub master: Option<String>,
    /// What to change, if anything.
    pub action: Option<TopologyAction>,
}

/// Whether `count` of `total` servers is a majority.
pub fn is_majority(count: usize, total: usize) -> bool {
    count * 2 > total
}

/// Assesses one round. `without_master_for`: how long no round has found a master
/// (zero when the previous one did).
pub fn assess(servers: &[ServerView], without_master_for: Duration, failover_after: Duration) -> Assessment {
    let master = master_of(servers);
    let action = match &master {
        Some(master) => demotion_or_repoint(servers, master),
        None if without_master_for >= failover_after => promotion(servers),
        None => None,
    };
    Assessment { master, action }
}

/// The one writable server, or of several the one replicas acknowledge or follow.
pub fn master_of(servers: &[ServerView]) -> Option<String> {
    let writable: Vec<&ServerView> = servers.iter().filter(|server| server.is_writable()).collect();
    match writable.as_slice() {
        [] => None,
        [only] => Some(only.name.clone()),
        several => {
            let support = |candidate: &ServerView| {
                let acknowledging = candidate
                    .reading
                    .as_ref()
                    .map_or(0, |reading| reading.acknowledging_replicas);
                let followers = servers
                    .iter()
                    .filter(|replica| candidate.is_followed_by(replica))
                    .count() as u64;
                acknowledging.max(followers)
            };
            let best = several.iter().map(|server| support(server)).max().unwrap_or(0);
            let mut leaders = several.iter().filter(|server| support(server) == best);
            match (best, leaders.next(), leaders.next()) {
                (1.., Some(leader), None) => Some(leader.name.clone()),
                // Nobody follows either, or both equally: no telling, so no writes.
                _ => None,
            }
        }
    }
}

fn promotion(servers: &[ServerView]) -> Option<TopologyAction> {
    let reachable: Vec<&ServerView> = servers.iter().filter(|server| server.reading.is_some()).collect();
    if !is_majority(reachable.len(), servers.len()) || reachable.iter().any(|server| server.is_writable()) {
        return None;
    }
    // A replica still connected to a server this node cannot read (or to an address it
    // does not know) means that master may live and only this node lost it. Connected
    // to a server read here as read-only is no master: one restarted read-only.
    let connected_to_a_possible_master = reachable.iter().any(|server| {
        let Some(replication) = server.reading.as_ref().and_then(|reading| reading.replication.as_ref()) else {
            return false;
        };
        replication.io_connected
            && !servers.iter().any(|source| {
                source.port == replication.master_port
                    && source.host.eq_ignore_ascii_case(&replication.master_host)
                    && source.reading.as_ref().is_some_and(|reading| reading.read_only)
            })
    });
    if connected_to_a_possible_master {
        return None;
    }
    let candidate = reachable
        .iter()
        .filter_map(|server| {
            server
                .reading
                .as_ref()
                .map(|reading| (server, reading.furthest_position()))
        })
        // Furthest ahead wins; among equals, the first configured.
        .fold(None::<(&ServerView, u64)>, |best, (server, position)| match best {
            Some((_, best_progress)) if best_progress >= position.progress() => best,
            _ => Some((server, position.progress())),
        })?;
    Some(TopologyAction::Promote {
        candidate: candidate.0.name.clone(),
    })
}

fn demotion_or_repoint(servers: &[ServerView], master_name: &str) -> Option<TopologyAction> {
    let master = servers.iter().find(|server| server.name == master_name)?;
    if let Some(stray) = servers
        .iter()
        .find(|server| server.name != master_name && server.is_writable())
    {
        return Some(TopologyAction::Demote {
            server: stray.name.clone(),
            master: master_name.to_owned(),
        });
    }
    let lost: Vec<String> = servers
        .iter()
        .filter(|server| server.name != master_name)
        .filter(|server| match server.reading.as_ref() {
            None => false,
            Some(reading) => match &reading.replication {
                None => true,
                // Following another address that it cannot reach: the old master.
                // Connected to another address (a proxy in front of the master) is fine.
                Some(replication) => {
                    let follows_master = replication.master_port == master.port
                        && replication.master_host.eq_ignore_ascii_case(&master.host);
                    !(replication.io_connected || follows_master)
                }
            },
        })
        .map(|server| server.name.clone())
        .collect();
    (!lost.is_empty()).then(|| TopologyAction::Repoint {
        servers: lost,
        master: master_name.to_owned(),
    })
}

#[cfg(test)]
#[path = "promotion_decision_tests.rs"]
mod tests;
