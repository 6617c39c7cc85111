//! Accounts: sign-up, credentials, profiles and refresh-token families.
//!
//! Plain domain logic on a [`Database`] handle; it runs in the request's own task.

mod hashing_turns;
pub mod passwords;
mod refresh_tokens;
/// Pure checks, in `parley-checks` so the fuzz targets build them without the runtime.
pub use checks::validation;

use chrono::{NaiveDateTime, Utc};
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::auth::{SignUpRequest, UserProfile};
use uuid::Uuid;

use crate::database::{Database, DbError, Freshness};
use crate::time_format::format_utc;
use passwords::{HashingError, PasswordVault};
pub use refresh_tokens::{RefreshTokenRecord, RevokedFamily, RotationOutcome};
use validation::{normalize_email, validate_sign_up, InvalidField};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A sign-up field broke a rule (400 `invalid_body`); the field and rule are named.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// Sign-up with an email already registered (409 `conflict`): sign in instead.
    #[error("a user with this email already exists")]
    EmailTaken,
    /// One answer for an unknown email and a wrong password.
    #[error("wrong email or password")]
    InvalidCredentials,
    /// Hashing the password failed; [`HashingError::Busy`] means retry shortly (429).
    #[error(transparent)]
    Hashing(#[from] HashingError),
    /// The database failed; an outage (`is_unavailable`) is worth a retry (503).
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What a lookup by email found, for a caller who may have been deleted meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailLookup {
    /// The user id (UUID) of the email.
    Found(String),
    /// No account has this email (after normalisation).
    NotFound,
    /// The caller's own account no longer exists.
    CallerGone,
}

/// Account operations.
#[derive(Clone)]
pub struct Accounts {
    database: Database,
    passwords: PasswordVault,
}

type ProfileRow = (
    String,
    String,
    String,
    String,
    NaiveDateTime,
    String,
    String,
    String,
    NaiveDateTime,
);

impl Accounts {
    /// Account operations on `database`, hashing with `passwords` (which holds the scrypt
    /// cost and the hashing queue).
    pub fn new(database: Database, passwords: PasswordVault) -> Accounts {
        Accounts { database, passwords }
    }

    /// Creates the user; returns the new user id. `requester` (the client's address) is
    /// whose share of the hashing queue the password's hash takes.
    pub async fn sign_up(&self, request: &SignUpRequest, requester: &str) -> Result<String, AccountError> {
        let valid = validate_sign_up(request, Utc::now())?;
        // A taken email is refused before the expensive hash: repeated sign-ups with one
        // email would otherwise cost a hash each and crowd sign-ins out of the hashing
        // queue. (The 409 tells that the email exists either way.) A sign-up racing for
        // the same email still meets the unique key below.
        if self.credentials_by_email(&valid.email).await?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let password_hash = self.passwords.hash(&valid.password, requester).await?;
        let user_id = Uuid::new_v4().to_string();
        let inserted = self
            .database
            .write(Some(&user_id), |transaction| {
                let row = (
                    user_id.clone(),
                    valid.email.clone(),
                    password_hash.clone(),
                    valid.name.clone(),
                    valid.surname.clone(),
                    valid.birthday,
                    valid.sex.clone(),
                    valid.city.clone(),
                    valid.interests.clone(),
                );
                async move {
                    transaction
                        .exec_drop(
                            "INSERT INTO users (id, email, password_hash, name, surname, birthday, sex, city, interests, create_time) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
                            row,
                        )
                        .await?;
                    Ok(Ok::<(), AccountError>(()))
                }
                .boxed()
            })
            .await;
        match inserted {
            Ok(Ok(())) => Ok(user_id),
            Ok(Err(error)) => Err(error),
            Err(DbError::Duplicate { key }) if key == "users_email" => Err(AccountError::EmailTaken),
            Err(error) => Err(error.into()),
        }
    }

    /// The user id behind these credentials; `requester` as for [`Accounts::sign_up`].
    pub async fn authenticate(&self, email: &str, password: &str, requester: &str) -> Result<String, AccountError> {
        // A malformed email cannot belong to anyone; answer like any unknown email.
        let found = match normalize_email(email) {
            Ok(email) => self.credentials_by_email(&email).await?,
            Err(_) => None,
        };
        let stored_hash = found.as_ref().map(|(_, hash)| hash.as_str());
        let matches = self.passwords.verify(password, stored_hash, requester).await?;
        match (found, matches) {
            (Some((user_id, _)), true) => Ok(user_id),
            _ => Err(AccountError::InvalidCredentials),
        }
    }

    async fn credentials_by_email(&self, email: &str) -> Result<Option<(String, String)>, AccountError> {
        let lookup = |freshness| {
            self.database.read(freshness, move |conn| {
                let email = email.to_owned();
                async move {
                    conn.exec_first::<(String, String), _, _>(
                        "SELECT id, password_hash FROM users WHERE email = ?",
                        (email,),
                    )
                    .await
                }
                .boxed()
            })
        };
        // A replica may lag behind a sign-up that just happened on another node:
        // "not found" is confirmed on the master.
        match lookup(Freshness::Any).await? {
            Some(found) => Ok(Some(found)),
            None => Ok(lookup(Freshness::MasterFirst).await?),
        }
    }

    /// The id of the user with this email, looked up for `caller`, who must still exist.
    ///
    /// One replica round trip answers both questions on the usual path (the caller
    /// exists, the email is found); only a "no" is confirmed on the master, since a
    /// replica may lag behind a sign-up that just happened on another node.
    pub async fn find_user_id_by_email_for(&self, caller: &str, email: &str) -> Result<EmailLookup, AccountError> {
        let email = normalize_email(email)?;
        let lookup = |freshness| {
            let (email, caller) = (email.clone(), caller.to_owned());
            self.database.read(freshness, move |conn| {
                let (email, caller) = (email.clone(), caller.clone());
                async move {
                    conn.exec_first::<(Option<String>, bool), _, _>(
                        "SELECT (SELECT id FROM users WHERE email = ?), EXISTS(SELECT 1 FROM users WHERE id = ?)",
                        (email, caller),
                    )
                    .await
                }
                .boxed()
            })
        };
        if let Some((Some(user_id), true)) = lookup(Freshness::ReadYourWrites(caller)).await? {
            return Ok(EmailLookup::Found(user_id));
        }
        let (found, caller_exists) = lookup(Freshness::MasterFirst).await?.unwrap_or((None, false));
        Ok(match (found, caller_exists) {
            (_, false) => EmailLookup::CallerGone,
            (Some(user_id), true) => EmailLookup::Found(user_id),
            (None, true) => EmailLookup::NotFound,
        })
    }

    /// The user's profile, if the user exists.
    pub async fn profile(&self, user_id: &str) -> Result<Option<UserProfile>, AccountError> {
        let lookup = |freshness| {
            self.database.read(freshness, move |conn| {
                let user_id = user_id.to_owned();
                async move {
                    conn.exec_first::<ProfileRow, _, _>(
                        "SELECT id, email, name, surname, birthday, sex, city, interests, create_time FROM users WHERE id = ?",
                        (user_id,),
                    )
                    .await
                }
                .boxed()
            })
        };
        let row = match lookup(Freshness::ReadYourWrites(user_id)).await? {
            Some(row) => Some(row),
            None => lookup(Freshness::MasterFirst).await?,
        };
        Ok(row.map(
            |(user_id, email, name, surname, birthday, sex, city, interests, create_time)| UserProfile {
                user_id,
                email,
                name,
                surname,
                birthday: format_utc(birthday),
                sex,
                city,
                interests,
                create_time: format_utc(create_time),
            },
        ))
    }

    /// Whether a user with this id exists (confirmed on the master when a replica says
    /// no). Tokens are stateless: this is what stops a deleted user's unexpired token.
    pub async fn user_exists(&self, user_id: &str) -> Result<bool, AccountError> {
        let lookup = |freshness| {
            self.database.read(freshness, move |conn| {
                let user_id = user_id.to_owned();
                async move {
                    conn.exec_first::<u8, _, _>("SELECT 1 FROM users WHERE id = ?", (user_id,))
                        .await
                }
                .boxed()
            })
        };
        if lookup(Freshness::ReadYourWrites(user_id)).await?.is_some() {
            return Ok(true);
        }
        Ok(lookup(Freshness::MasterFirst).await?.is_some())
    }

    /// Stores a newly issued refresh token (the first of a family, at sign-in).
    pub async fn store_refresh_token(&self, record: &RefreshTokenRecord) -> Result<(), AccountError> {
        refresh_tokens::store(&self.database, record).await.map_err(Into::into)
    }

    /// Signs out: every refresh token of the presented token's sign-in stops working.
    pub async fn revoke_refresh_family(&self, presented_id: &str, user_id: &str) -> Result<bool, AccountError> {
        refresh_tokens::revoke_family(&self.database, presented_id, user_id)
            .await
            .map_err(Into::into)
    }

    /// Sign-ins revoked after `since` (UTC), oldest first, at most `limit`.
    pub async fn revoked_families_since(
        &self,
        since: NaiveDateTime,
        limit: u32,
    ) -> Result<Vec<RevokedFamily>, AccountError> {
        refresh_tokens::revoked_since(&self.database, since, limit)
            .await
            .map_err(Into::into)
    }

    /// Rotates `presented_id` into `next`; see [`RotationOutcome`].
    pub async fn rotate_refresh_token(
        &self,
        presented_id: &str,
        next: &RefreshTokenRecord,
    ) -> Result<RotationOutcome, AccountError> {
        refresh_tokens::rotate(&self.database, presented_id, next)
            .await
            .map_err(Into::into)
    }
}
