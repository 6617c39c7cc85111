//! What this node knows of its peers: who is alive, and which users have sessions where.
//! Written by the `NodeRouter`, read by every delivery (a plain lock, no mailbox).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

// tokio's clock, so tests can pause and advance time past the failure timeout.
use tokio::time::Instant;

use protocol::cluster::{ClusterMember, ClusterView};

struct PeerRecord {
    last_heard: Instant,
    alive: bool,
    users: HashSet<String>,
}

/// The node's view of the cluster.
pub struct Peers {
    node_name: String,
    failure_timeout: Duration,
    by_name: RwLock<HashMap<String, PeerRecord>>,
}

/// What hearing from a peer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Known and alive already.
    Known,
    /// New, or back after being declared dead: exchange presence snapshots.
    Revived,
}

impl Peers {
    /// No peers known yet. `node_name` is this node's cluster name (with incarnation); a
    /// peer silent for `failure_timeout` is declared dead.
    pub fn new(node_name: String, failure_timeout: Duration) -> Peers {
        Peers {
            node_name,
            failure_timeout,
            by_name: RwLock::new(HashMap::new()),
        }
    }

    /// This node's cluster name (with its incarnation).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Records that `node` just spoke (any message counts as a heartbeat) and whether it is
    /// new or back from the dead; this node's own name is always `Known`.
    pub fn heard_from(&self, node: &str) -> Heard {
        if node == self.node_name {
            return Heard::Known;
        }
        let mut peers = self.by_name.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = peers.entry(node.to_owned()).or_insert_with(|| PeerRecord {
            last_heard: Instant::now(),
            alive: false,
            users: HashSet::new(),
        });
        record.last_heard = Instant::now();
        if record.alive {
            Heard::Known
        } else {
            record.alive = true;
            Heard::Revived
        }
    }

    /// Replaces everything known about `node`'s users.
    pub fn set_snapshot(&self, node: &str, users: Vec<String>) {
        let mut peers = self.by_name.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(record) = peers.get_mut(node) {
            record.users = users.into_iter().collect();
        }
    }

    /// Records that `user` opened their first or closed their last session on `node`;
    /// ignored for a node not known (its snapshot will tell).
    pub fn set_presence(&self, node: &str, user: &str, online: bool) {
        let mut peers = self.by_name.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(record) = peers.get_mut(node) {
            if online {
                record.users.insert(user.to_owned());
            } else {
                record.users.remove(user);
            }
        }
    }

    /// Declares `node` dead at once (its connection closed); returns its users.
    pub fn mark_dead(&self, node: &str) -> Vec<String> {
        let mut peers = self.by_name.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match peers.get_mut(node) {
            Some(record) if record.alive => {
                record.alive = false;
                record.users.drain().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Declares dead every peer silent for longer than the failure timeout; returns them
    /// with their users.
    pub fn expire_silent(&self) -> Vec<(String, Vec<String>)> {
        let mut peers = self.by_name.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut expired = Vec::new();
        for (name, record) in peers.iter_mut() {
            if record.alive && record.last_heard.elapsed() > self.failure_timeout {
                record.alive = false;
                expired.push((name.clone(), record.users.drain().collect()));
            }
        }
        expired
    }

    /// Live peers hosting any of `users`, each with the users it hosts.
    pub fn nodes_hosting(&self, users: &[String]) -> Vec<(String, Vec<String>)> {
        let peers = self.by_name.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        peers
            .iter()
            .filter(|(_, record)| record.alive)
            .filter_map(|(name, record)| {
                let hosted: Vec<String> = users
                    .iter()
                    .filter(|user| record.users.contains(*user))
                    .cloned()
                    .collect();
                (!hosted.is_empty()).then(|| (name.clone(), hosted))
            })
            .collect()
    }

    /// Whether `user` has a session on any live peer.
    pub fn online_on_a_peer(&self, user: &str) -> bool {
        let peers = self.by_name.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        peers.values().any(|record| record.alive && record.users.contains(user))
    }

    /// Cluster names of the peers currently alive (this node not included), in no order.
    pub fn live_peer_names(&self) -> Vec<String> {
        let peers = self.by_name.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        peers
            .iter()
            .filter(|(_, record)| record.alive)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `GET /cluster`: this node first, then every peer ever heard from.
    pub fn view(&self, local_users: u64) -> ClusterView {
        let peers = self.by_name.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut members = vec![ClusterMember {
            name: self.node_name.clone(),
            alive: true,
            last_heard_ms: 0,
            users: local_users,
        }];
        let mut others: Vec<ClusterMember> = peers
            .iter()
            .map(|(name, record)| ClusterMember {
                name: name.clone(),
                alive: record.alive,
                last_heard_ms: record.last_heard.elapsed().as_millis() as u64,
                users: record.users.len() as u64,
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        members.extend(others);
        ClusterView {
            node: self.node_name.clone(),
            members,
            database: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_revives_once_and_hosts_what_it_reports() {
        let peers = Peers::new("node-1#a".into(), Duration::from_secs(3));
        assert_eq!(peers.heard_from("node-2#b"), Heard::Revived);
        assert_eq!(peers.heard_from("node-2#b"), Heard::Known);
        peers.set_snapshot("node-2#b", vec!["alice".into()]);
        peers.set_presence("node-2#b", "carol", true);
        let hosting = peers.nodes_hosting(&["alice".into(), "bob".into(), "carol".into()]);
        assert_eq!(hosting.len(), 1);
        let (node, mut users) = hosting[0].clone();
        users.sort();
        assert_eq!(
            (node.as_str(), users),
            ("node-2#b", vec!["alice".to_owned(), "carol".to_owned()])
        );
        let mut gone = peers.mark_dead("node-2#b");
        gone.sort();
        assert_eq!(gone, ["alice", "carol"]);
        assert!(peers.nodes_hosting(&["alice".into()]).is_empty());
        assert_eq!(peers.heard_from("node-2#b"), Heard::Revived);
    }

    #[test]
    fn silent_peers_expire() {
        let peers = Peers::new("node-1#a".into(), Duration::ZERO);
        peers.heard_from("node-2#b");
        peers.set_presence("node-2#b", "alice", true);
        let expired = peers.expire_silent();
        assert_eq!(expired, vec![("node-2#b".to_owned(), vec!["alice".to_owned()])]);
        assert!(!peers.online_on_a_peer("alice"));
    }
}
