//! Errors of the database layer, and which driver errors mean "try another endpoint".

use std::time::Duration;

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The endpoint refused, dropped or never opened the connection, or is read-only
    /// where a write was needed.
    #[error("database endpoint {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// The endpoint's configured name.
        endpoint: String,
        /// What the driver or the router said.
        reason: String,
    },
    /// The endpoint did not answer in time; for a write the outcome is unknown.
    #[error("database endpoint {endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// The endpoint's configured name.
        endpoint: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// Every read endpoint and the master failed the read.
    #[error("no database endpoint could serve the read (last error: {last_error})")]
    NoReadEndpoint {
        /// The error of the last endpoint tried.
        last_error: String,
    },
    /// A unique key refused the row.
    #[error("duplicate entry for key {key}")]
    Duplicate {
        /// Name of the unique key that refused the row, without a table prefix (e.g.
        /// `users_email`, `PRIMARY`).
        key: String,
    },
    /// The query itself failed: a bug or a schema mismatch, not an outage.
    #[error("query failed on {endpoint}: {source}")]
    Query {
        /// The endpoint's configured name.
        endpoint: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The configuration names an endpoint that cannot be used.
    #[error("invalid database configuration: {0}")]
    Config(String),
}

impl DbError {
    /// True when the failure is an outage (the caller should answer 503), not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable { .. } | DbError::Timeout { .. } | DbError::NoReadEndpoint { .. }
        )
    }

    /// Wraps a driver error that happened on `endpoint`, keeping outages, duplicates and
    /// bugs apart.
    pub fn from_driver(endpoint: &str, error: mysql_async::Error) -> DbError {
        if let Some(key) = duplicate_key_name(&error) {
            return DbError::Duplicate { key };
        }
        if is_endpoint_failure(&error) {
            return DbError::Unavailable {
                endpoint: endpoint.to_owned(),
                reason: error.to_string(),
            };
        }
        DbError::Query {
            endpoint: endpoint.to_owned(),
            source: error,
        }
    }
}

/// MariaDB/MySQL server error codes that mean the endpoint cannot serve us right now.
const ENDPOINT_FAILURE_CODES: &[u16] = &[
    1040, // too many connections
    1049, // unknown database: a replica that has not replicated its creation yet
    1146, // no such table: a replica that has not replicated the migrations yet
    1053, // server shutdown in progress
    1290, // read-only (a replica, or a demoted master)
    1836, // read-only mode
    1927, // connection was killed
    2006, // server has gone away
    2013, // lost connection during query
];

/// Deadlock and lock wait timeout: the transaction may simply be run again.
pub(crate) const RETRYABLE_TRANSACTION_CODES: &[u16] = &[1205, 1213];

/// Whether a driver error means the endpoint (not the query) failed, so the same
/// read may be retried elsewhere.
pub fn is_endpoint_failure(error: &mysql_async::Error) -> bool {
    match error {
        mysql_async::Error::Server(server) => ENDPOINT_FAILURE_CODES.contains(&server.code),
        other => other.is_fatal(),
    }
}

pub(crate) fn server_error_code(error: &mysql_async::Error) -> Option<u16> {
    match error {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// The key name of an `ER_DUP_ENTRY` (1062), e.g. `users_email`.
fn duplicate_key_name(error: &mysql_async::Error) -> Option<String> {
    let mysql_async::Error::Server(server) = error else {
        return None;
    };
    if server.code != 1062 {
        return None;
    }
    // "Duplicate entry 'x' for key 'users_email'" (MySQL 8 prefixes the table name).
    let key = server
        .message
        .rsplit("for key '")
        .next()
        .map(|rest| rest.trim_end_matches('\''))
        .unwrap_or_default();
    Some(key.rsplit('.').next().unwrap_or(key).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;

    fn server_error(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(ServerError {
            code,
            message: message.to_owned(),
            state: "HY000".to_owned(),
        })
    }

    #[test]
    fn duplicate_entries_name_their_key() {
        let mariadb = server_error(1062, "Duplicate entry 'a@b.c' for key 'users_email'");
        let mysql = server_error(1062, "Duplicate entry 'a@b.c' for key 'users.users_email'");
        for error in [mariadb, mysql] {
            match DbError::from_driver("master", error) {
                DbError::Duplicate { key } => assert_eq!(key, "users_email"),
                other => panic!("expected a duplicate, got {other:?}"),
            }
        }
    }

    #[test]
    fn read_only_and_shutdown_are_outages_but_syntax_errors_are_not() {
        assert!(DbError::from_driver("replica", server_error(1290, "read-only")).is_unavailable());
        assert!(DbError::from_driver("replica", server_error(1053, "shutdown")).is_unavailable());
        assert!(!DbError::from_driver("master", server_error(1064, "syntax")).is_unavailable());
    }
}
