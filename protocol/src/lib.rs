//! Parley's wire types, shared by the node, the simulations and any client.
//!
//! Only serde data lives here: HTTP request and response bodies, error bodies,
//! websocket frames and close codes, and the messages nodes send each other. No runtime,
//! no actors, no HTTP framework, so any client can depend on this crate cheaply.

pub mod auth;
pub mod cluster;
pub mod errors;
pub mod messenger;
pub mod websocket;

pub use errors::ErrorBody;
