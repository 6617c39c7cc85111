//! Schema migrations: applied by the node at start, on the master only, under a named
//! lock so that N nodes starting together apply each migration exactly once.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{Database, DbError};

/// One schema change, from `deploy/migrations/`.
pub struct Migration {
    /// Applied in increasing order; a version recorded as applied is never run again.
    pub version: u32,
    /// Short description, recorded with the version.
    pub name: &'static str,
    /// The script's text (statements separated by `;`), compiled into the binary.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../deploy/migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "client_id_per_chat",
        sql: include_str!("../../../deploy/migrations/0002_client_id_per_chat.sql"),
    },
    Migration {
        version: 3,
        name: "email_binary",
        sql: include_str!("../../../deploy/migrations/0003_email_binary.sql"),
    },
    Migration {
        version: 4,
        name: "revoked_at",
        sql: include_str!("../../../deploy/migrations/0004_revoked_at.sql"),
    },
    Migration {
        version: 5,
        name: "group_chats",
        sql: include_str!("../../../deploy/migrations/0005_group_chats.sql"),
    },
];

/// The migration after whose statements stored emails are rewritten in NFC.
const EMAILS_IN_NFC_FROM: u32 = 3;

/// How long a starting node waits for another node's migration run.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Applies every migration the master does not have yet; returns the versions applied.
pub async fn apply_migrations(database: &Database) -> Result<Vec<u32>, DbError> {
    let master = database.master();
    let fail = |error: mysql_async::Error| DbError::from_driver(&master.name, error);
    let mut conn = master.connection(database.timeouts().write).await?;
    // Pooled connections are not reset (see `Endpoint::open`); this one is, so a run cut
    // short between GET_LOCK and RELEASE_LOCK does not leave the lock with the pool.
    conn.reset_connection(true);
    let schema: Option<Option<String>> = conn.query_first("SELECT DATABASE()").await.map_err(fail)?;
    let schema = schema
        .flatten()
        .ok_or_else(|| DbError::Config("the master URL names no database".to_owned()))?;
    // GET_LOCK is server-wide, so the lock name carries the database name.
    let lock_name = format!("parley.migrations.{schema}");
    let locked: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (&lock_name, LOCK_WAIT.as_secs()))
        .await
        .map_err(fail)?;
    if locked != Some(Some(1)) {
        return Err(DbError::Unavailable {
            endpoint: master.name.clone(),
            reason: format!("could not take the migration lock {lock_name} within {LOCK_WAIT:?}"),
        });
    }
    let applied = apply_pending(&mut conn).await.map_err(fail);
    let released = conn.exec_drop("SELECT RELEASE_LOCK(?)", (&lock_name,)).await;
    let applied = applied?;
    released.map_err(fail)?;
    Ok(applied)
}

async fn apply_pending(conn: &mut Conn) -> Result<Vec<u32>, mysql_async::Error> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           version INT UNSIGNED NOT NULL PRIMARY KEY, \
           name VARCHAR(100) NOT NULL, \
           applied_at DATETIME(6) NOT NULL)",
    )
    .await?;
    let done: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|migration| !done.contains(&migration.version)) {
        for statement in checks::sql_script::statements(migration.sql) {
            conn.query_drop(statement).await?;
        }
        if migration.version == EMAILS_IN_NFC_FROM {
            rewrite_emails_in_nfc(conn).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
            (migration.version, migration.name),
        )
        .await?;
        tracing::info!(version = migration.version, name = migration.name, "migration applied");
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Rewrites the stored emails that are not in their canonical form (only non-ASCII ones
/// can be: all were stored trimmed and lowercase). One whose canonical form another row
/// already has is left alone and logged: merging or dropping an account is no
/// migration's call.
async fn rewrite_emails_in_nfc(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    let stored: Vec<(String, String)> = conn
        .query("SELECT id, email FROM users WHERE email <> CONVERT(email USING ascii)")
        .await?;
    for (id, email) in stored {
        let Ok(canonical) = checks::validation::normalize_email(&email) else {
            continue;
        };
        if canonical == email {
            continue;
        }
        match conn
            .exec_drop("UPDATE users SET email = ? WHERE id = ?", (&canonical, &id))
            .await
        {
            Ok(()) => tracing::info!(user_id = %id, "stored email rewritten in nfc"),
            Err(mysql_async::Error::Server(error)) if error.code == 1062 => {
                tracing::warn!(user_id = %id, "stored email left as it is: its nfc form belongs to another user");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_migration_creates_every_table() {
        let statements = checks::sql_script::statements(MIGRATIONS[0].sql);
        for table in ["users", "refresh_tokens", "chats", "chat_members", "messages"] {
            let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
            assert!(
                statements.iter().any(|statement| statement.starts_with(&create)),
                "{table} missing"
            );
        }
    }
}
