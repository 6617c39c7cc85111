//! Parley's actors and the domain logic they run.
//!
//! Every node runs one supervision tree, drawn in [`supervisor`]: the `RootSupervisor`
//! over the `DbRouter`, the cluster `Membership`, the `NodeRouter` and the
//! `MessagingSupervisor`, which is the parent of every `Session` and `Chat`.
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
