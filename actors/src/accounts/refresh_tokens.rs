//! Refresh-token families: each sign-in starts a family, each refresh rotates the
//! presented token into a new one of the same family, and presenting a token that was
//! already rotated revokes the whole family (the token leaked; whoever holds the newer
//! one is cut off too, and must sign in again).

use chrono::NaiveDateTime;
use futures::FutureExt;
use mysql_async::prelude::Queryable;

use crate::database::{Database, DbError, Freshness};

/// One refresh token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// The token's `jti`.
    pub id: String,
    /// The sign-in it belongs to: every rotation keeps the family, a new sign-in starts one.
    pub family_id: String,
    /// The user (UUID) the token was issued to.
    pub user_id: String,
    /// UTC.
    pub expires_at: NaiveDateTime,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The token was current; the new one replaces it.
    Rotated,
    /// The token had been rotated before: the family is now revoked.
    ReuseDetected,
    /// Unknown, revoked or expired.
    Rejected,
}

pub(super) async fn store(database: &Database, record: &RefreshTokenRecord) -> Result<(), DbError> {
    database
        .write(Some(&record.user_id), |transaction| {
            let record = record.clone();
            async move {
                insert(transaction, &record).await?;
                Ok(Ok::<(), DbError>(()))
            }
            .boxed()
        })
        .await?
}

async fn insert<Q: Queryable>(queryable: &mut Q, record: &RefreshTokenRecord) -> Result<(), mysql_async::Error> {
    queryable
        .exec_drop(
            "INSERT INTO refresh_tokens (id, family_id, user_id, expires_at, rotated_at, revoked, create_time) \
             VALUES (?, ?, ?, ?, NULL, 0, UTC_TIMESTAMP(6))",
            (&record.id, &record.family_id, &record.user_id, record.expires_at),
        )
        .await
}

/// A revoked sign-in, as read back by [`revoked_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedFamily {
    /// The revoked sign-in's family id (the `fam` claim of its tokens).
    pub family_id: String,
    /// The user (UUID) whose sign-in it was.
    pub user_id: String,
    /// UTC.
    pub revoked_at: NaiveDateTime,
}

/// Families revoked after `since` (UTC), oldest first, at most `limit`: read by every
/// node, so that one that missed a peer's word of a sign-out still refuses its tokens.
pub(super) async fn revoked_since(
    database: &Database,
    since: NaiveDateTime,
    limit: u32,
) -> Result<Vec<RevokedFamily>, DbError> {
    let rows: Vec<(String, String, NaiveDateTime)> = database
        .read(Freshness::MasterFirst, |connection| {
            async move {
                connection
                    .exec(
                        "SELECT family_id, MIN(user_id), MAX(revoked_at) FROM refresh_tokens \
                         WHERE revoked_at > ? GROUP BY family_id ORDER BY MAX(revoked_at) LIMIT ?",
                        (since, limit),
                    )
                    .await
            }
            .boxed()
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(family_id, user_id, revoked_at)| RevokedFamily {
            family_id,
            user_id,
            revoked_at,
        })
        .collect())
}

/// Revokes the family of `presented_id` (sign-out). Returns false when the token is
/// unknown or its family is revoked already.
pub(super) async fn revoke_family(database: &Database, presented_id: &str, user_id: &str) -> Result<bool, DbError> {
    database
        .write(Some(user_id), |transaction| {
            let (presented_id, user_id) = (presented_id.to_owned(), user_id.to_owned());
            async move {
                transaction
                    .exec_drop(
                        "UPDATE refresh_tokens SET revoked = 1, revoked_at = UTC_TIMESTAMP(6) WHERE revoked = 0 AND user_id = ? AND family_id = \
                         (SELECT family_id FROM (SELECT family_id FROM refresh_tokens WHERE id = ?) AS presented)",
                        (&user_id, &presented_id),
                    )
                    .await?;
                Ok(Ok::<bool, DbError>(transaction.affected_rows() > 0))
            }
            .boxed()
        })
        .await?
}

pub(super) async fn rotate(
    database: &Database,
    presented_id: &str,
    next: &RefreshTokenRecord,
) -> Result<RotationOutcome, DbError> {
    database
        .write(Some(&next.user_id), |transaction| {
            let presented_id = presented_id.to_owned();
            let next = next.clone();
            async move {
                // FOR UPDATE: two concurrent refreshes with one token must not both rotate it.
                let current: Option<(String, String, Option<NaiveDateTime>, bool, bool)> = transaction
                    .exec_first(
                        "SELECT family_id, user_id, rotated_at, revoked <> 0, expires_at <= UTC_TIMESTAMP(6) \
                         FROM refresh_tokens WHERE id = ? FOR UPDATE",
                        (&presented_id,),
                    )
                    .await?;
                let Some((family_id, user_id, rotated_at, revoked, expired)) = current else {
                    return Ok(Ok(RotationOutcome::Rejected));
                };
                if family_id != next.family_id || user_id != next.user_id || revoked || expired {
                    return Ok(Ok(RotationOutcome::Rejected));
                }
                if rotated_at.is_some() {
                    transaction
                        .exec_drop(
                            "UPDATE refresh_tokens SET revoked = 1, revoked_at = UTC_TIMESTAMP(6) WHERE revoked = 0 AND family_id = ?",
                            (&family_id,),
                        )
                        .await?;
                    return Ok(Ok(RotationOutcome::ReuseDetected));
                }
                transaction
                    .exec_drop(
                        "UPDATE refresh_tokens SET rotated_at = UTC_TIMESTAMP(6) WHERE id = ?",
                        (&presented_id,),
                    )
                    .await?;
                insert(transaction, &next).await?;
                Ok(Ok::<_, DbError>(RotationOutcome::Rotated))
            }
            .boxed()
        })
        .await?
}
