//! Parley's actors and the domain logic they run.
//!
//! ```text
//! RootSupervisor
//!  └── DbRouter          probes master and read endpoints, keeps the routing health
//! ```
//!
//! Queries never pass through an actor's mailbox: request tasks run them
//! concurrently on the pools of a [`database::Database`] handle, and the
//! `DbRouter` only keeps the health those handles route by.

pub mod accounts;
pub mod chats;
pub mod cluster;
pub mod database;
pub mod messaging;
pub mod metrics;
pub mod rate_limits;
pub mod supervisor;
pub mod time_format;
pub mod trace_context;
