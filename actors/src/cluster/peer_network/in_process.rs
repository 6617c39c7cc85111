//! Nodes joined in one process by channels, for in-process tests of routing between
//! nodes: each node has a mailbox served by one task (in order, as a router's mailbox
//! is), every message goes through its wire encoding, and a node can be cut off as a
//! partition or a frozen node would be.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use protocol::cluster::PeerMessage;
use tokio::sync::{mpsc, oneshot};

use super::PeerNetwork;
use crate::cluster::node_router::receive_from_peer;
use crate::messaging::MessagingServices;

/// One message on its way, with who waits for it to be handled.
struct Letter {
    bytes: Vec<u8>,
    handled: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct NetworkState {
    mailboxes: HashMap<String, mpsc::UnboundedSender<Letter>>,
    cut_off: HashSet<String>,
}

/// The network all in-process nodes of a test share.
#[derive(Default)]
pub struct InProcessNetwork {
    state: Mutex<NetworkState>,
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Arc<InProcessNetwork> {
        Arc::new(InProcessNetwork::default())
    }

    /// What `node` (its incarnation name) sends through.
    pub fn endpoint(self: &Arc<Self>, node: &str) -> Arc<dyn PeerNetwork> {
        Arc::new(NodeEndpoint {
            network: Arc::clone(self),
            node: node.to_owned(),
        })
    }

    /// Starts handing `services` what its peers send it. Peers learn of the node from its
    /// first message to them, as over the cluster.
    pub fn attach(&self, services: &Arc<MessagingServices>) {
        let (sender, mut letters) = mpsc::unbounded_channel::<Letter>();
        self.lock()
            .mailboxes
            .insert(services.peers.node_name().to_owned(), sender);
        let services = Arc::clone(services);
        tokio::spawn(async move {
            while let Some(letter) = letters.recv().await {
                let message = PeerMessage::from_bytes(&letter.bytes).expect("a peer message decodes");
                receive_from_peer(&services, message);
                if let Some(handled) = letter.handled {
                    let _ = handled.send(());
                }
            }
        });
    }

    /// From now on nothing reaches `node` and nothing it sends arrives, as in a partition.
    pub fn cut_off(&self, node: &str) {
        self.lock().cut_off.insert(node.to_owned());
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Posts to `to` unless either side is cut off; the receipt resolves once handled.
    fn post(&self, from: &str, to: &str, message: &PeerMessage, wants_receipt: bool) -> Option<oneshot::Receiver<()>> {
        let state = self.lock();
        if from == to || state.cut_off.contains(from) || state.cut_off.contains(to) {
            return None;
        }
        let mailbox = state.mailboxes.get(to)?;
        let (handled, receipt) = if wants_receipt {
            let (handled, receipt) = oneshot::channel();
            (Some(handled), Some(receipt))
        } else {
            (None, None)
        };
        mailbox
            .send(Letter {
                bytes: message.to_bytes(),
                handled,
            })
            .ok()?;
        receipt
    }

    fn nodes(&self) -> Vec<String> {
        self.lock().mailboxes.keys().cloned().collect()
    }
}

/// One node's side of the network.
struct NodeEndpoint {
    network: Arc<InProcessNetwork>,
    node: String,
}

impl PeerNetwork for NodeEndpoint {
    fn send_to(&self, node: &str, message: &PeerMessage) {
        self.network.post(&self.node, node, message, false);
    }

    fn tell_every_peer(&self, message: &PeerMessage) {
        for peer in self.network.nodes() {
            self.network.post(&self.node, &peer, message, false);
        }
    }

    fn announce_to_every_peer<'a>(&'a self, message: &'a PeerMessage, timeout: Duration) -> BoxFuture<'a, ()> {
        let receipts: Vec<_> = self
            .network
            .nodes()
            .iter()
            .filter_map(|peer| self.network.post(&self.node, peer, message, true))
            .collect();
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, futures::future::join_all(receipts)).await;
        })
    }
}
