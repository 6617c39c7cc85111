//! The cluster: membership (the ractor_cluster `NodeServer`, seeds, reconnects) and the
//! `NodeRouter` that carries deliveries, receipts and presence between nodes.
//!
//! ```text
//! RootSupervisor
//!  ├── Membership ── NodeServer (ractor_cluster, cookie-authenticated, transitive mesh,
//!  │                 or TLS with mutual authentication: `tls`)
//!  └── NodeRouter    the node's one remote-capable actor
//! ```

pub mod membership;
pub mod node_router;
pub mod peer_network;
pub mod peers;
pub mod tls;
