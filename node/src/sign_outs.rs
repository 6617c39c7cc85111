//! Sign-outs this node did not hear about from its peers.
//!
//! A sign-out reaches every live peer at once through the NodeRouters. A node that was
//! down, starting or cut off at that moment would go on accepting the sign-in's access
//! tokens, so every node also reads the sign-outs from the database: on start, those of
//! the last access-token lifetime, and then every [`CATCH_UP_INTERVAL`] those since the
//! newest it has seen. `/health/ready` waits for the first read.

use std::sync::Arc;
use std::time::Duration;

use actors::accounts::Accounts;
use actors::messaging::MessagingServices;
use chrono::{NaiveDateTime, Utc};

use crate::app_state::Readiness;

/// How often the database is read for sign-outs: the bound on how long a node that
/// missed a peer's word keeps accepting a signed-out token once it reaches the database.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_secs(2);

/// Sign-outs read at once; a longer list is read in several goes without waiting.
const READ_LIMIT: u32 = 1_000;

/// Reads sign-outs from the database forever (run after the migrations are applied).
/// `access_ttl` is how long an access token lives, leeway included: a family revoked
/// longer ago than that has no live token left to refuse.
pub async fn follow_sign_outs(
    accounts: Accounts,
    messaging: Arc<MessagingServices>,
    access_ttl: Duration,
    readiness: Readiness,
) {
    let lifetime = chrono::Duration::from_std(access_ttl).unwrap_or(chrono::Duration::hours(1));
    let mut newest_seen: NaiveDateTime = Utc::now().naive_utc() - lifetime;
    let mut reads = tokio::time::interval(CATCH_UP_INTERVAL);
    reads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        reads.tick().await;
        loop {
            let families = match accounts.revoked_families_since(newest_seen, READ_LIMIT).await {
                Ok(families) => families,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?CATCH_UP_INTERVAL, "reading sign-outs failed");
                    break;
                }
            };
            let complete = families.len() < READ_LIMIT as usize;
            for family in families {
                let until = family.revoked_at + lifetime;
                let until_ms = u64::try_from(until.and_utc().timestamp_millis()).unwrap_or(0);
                messaging.sign_out_device(&family.user_id, &family.family_id, until_ms, false);
                newest_seen = newest_seen.max(family.revoked_at);
            }
            if complete {
                readiness.mark_sign_outs_loaded();
                break;
            }
        }
    }
}
