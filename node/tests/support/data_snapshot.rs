//! What "no data changed" means in the hostile-input and authorization tests: the
//! checksum of every table of the app's database on the master, before and after.
//!
//! Included with `#[path]` like `test_app.rs`; not every includer uses every helper.

#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use parley_launcher::DatabaseServers;

/// Every table Parley writes.
const TABLES: &str = "users, refresh_tokens, chats, chat_members, messages";

/// Checksums of every table, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSnapshot(Vec<(String, Option<u64>)>);

impl DataSnapshot {
    /// Reads the master, which every write reaches first.
    pub async fn take(servers: &DatabaseServers, database: &str) -> DataSnapshot {
        let mut connection = parley_launcher::mariadb_admin::connect_url(&servers.master_url(database))
            .await
            .expect("connecting to the master");
        let rows: Vec<(String, Option<u64>)> = connection
            .query(format!("CHECKSUM TABLE {TABLES}"))
            .await
            .expect("checksumming the tables");
        parley_launcher::mariadb_admin::close(connection).await;
        assert!(
            rows.iter().all(|(_, checksum)| checksum.is_some()),
            "every table exists: {rows:?}"
        );
        DataSnapshot(rows)
    }

    /// Panics naming `what` and the tables that changed since `self`.
    pub async fn assert_unchanged(&self, servers: &DatabaseServers, database: &str, what: &str) {
        self.assert_unchanged_except(servers, database, what, &[]).await;
    }

    /// Like [`DataSnapshot::assert_unchanged`], allowing changes in the named tables
    /// (their names end the qualified `database.table`).
    pub async fn assert_unchanged_except(
        &self,
        servers: &DatabaseServers,
        database: &str,
        what: &str,
        allowed: &[&str],
    ) {
        let now = DataSnapshot::take(servers, database).await;
        let changed: Vec<&str> = self
            .0
            .iter()
            .zip(&now.0)
            .filter(|(before, after)| before != after)
            .map(|((table, _), _)| table.as_str())
            .filter(|table| !allowed.iter().any(|allowed| table.ends_with(&format!(".{allowed}"))))
            .collect();
        assert!(changed.is_empty(), "{what}: data changed in {changed:?}");
    }
}

/// The single number `query` answers on the master.
pub async fn count_on_master(servers: &DatabaseServers, database: &str, query: &str, parameters: Vec<String>) -> u64 {
    let mut connection = parley_launcher::mariadb_admin::connect_url(&servers.master_url(database))
        .await
        .expect("connecting to the master");
    let count: Option<u64> = connection
        .exec_first(query, parameters)
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"));
    parley_launcher::mariadb_admin::close(connection).await;
    count.unwrap_or_default()
}

/// Runs one statement on the master as the app's database (for a test's own setup, such
/// as deleting a user the API has no way to delete).
pub async fn execute_on_master(servers: &DatabaseServers, database: &str, statement: &str, parameters: Vec<String>) {
    let mut connection = parley_launcher::mariadb_admin::connect_url(&servers.master_url(database))
        .await
        .expect("connecting to the master");
    connection
        .exec_drop(statement, parameters)
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
    parley_launcher::mariadb_admin::close(connection).await;
}
