//! Parley's checks on what clients send, as pure functions: parsing a websocket text
//! frame into a command ([`frames`]) and validating and normalising a sign-up
//! ([`validation`]); and the one splitter of the project's SQL scripts ([`sql_script`]),
//! shared by the migrations and the database servers' set-up.
//!
//! They live apart from `parley-actors` so that anything that only needs the rules
//! (the fuzz targets in `fuzz/`) builds them without the runtime, the database driver
//! and TLS. `parley-actors` re-exports both modules at their old paths
//! (`actors::messaging::frames`, `actors::accounts::validation`).

pub mod frames;
pub mod sql_script;
pub mod validation;
