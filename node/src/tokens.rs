//! Access and refresh tokens: HS256 JWTs with a type claim so neither can stand in
//! for the other. Both carry their sign-in's refresh-token family (`fam`), so a sign-out
//! refuses the sign-in's access tokens too (see `actors::messaging::device_access`).

use std::sync::Arc;

use actors::messaging::device_access::{AccessGrant, AccessRefused, AccessTokenCheck, RevokedFamilies};
use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

/// Claims of both token kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `access` or `refresh`.
    pub typ: String,
    /// Unique token id; for refresh tokens, the row in `refresh_tokens`.
    pub jti: String,
    /// The sign-in's refresh-token family (access tokens issued before it was added
    /// have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    /// Issued at: Unix time, seconds.
    pub iat: i64,
    /// Not valid before: Unix time, seconds (the issue time).
    pub nbf: i64,
    /// Expiry: Unix time, seconds (checked with 5 s of leeway).
    pub exp: i64,
}

/// Why a presented token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, not yet valid or expired: the client must refresh or sign in (401).
    #[error("the token is invalid or expired")]
    Invalid,
    /// A refresh token where an access token is needed, or the reverse (401).
    #[error("a {found} token was given where a {expected} token is needed")]
    WrongKind {
        /// The kind the endpoint takes: `access` or `refresh`.
        expected: &'static str,
        /// The `typ` claim the token has.
        found: String,
    },
    /// Valid, but its sign-in was revoked: the client must sign in again (401).
    #[error("this sign-in was signed out; sign in again")]
    SignedOut,
}

/// A freshly issued refresh token with the facts the database stores about it.
#[derive(Debug, Clone)]
pub struct IssuedRefreshToken {
    /// The signed JWT handed to the client.
    pub token: String,
    /// Its `jti`: the row in `refresh_tokens`.
    pub id: String,
    /// The sign-in it belongs to (its `fam` claim).
    pub family_id: String,
    /// When it expires (its `exp`).
    pub expires_at: DateTime<Utc>,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl_seconds: i64,
    refresh_ttl_seconds: i64,
    revoked_families: Arc<RevokedFamilies>,
}

impl TokenIssuer {
    /// Checks access tokens against `revoked_families`, which the node keeps current.
    pub fn new(
        secret: &str,
        access_ttl_seconds: u64,
        refresh_ttl_seconds: u64,
        revoked_families: Arc<RevokedFamilies>,
    ) -> TokenIssuer {
        // Only HS256 is accepted: `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        TokenIssuer {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            access_ttl_seconds: access_ttl_seconds as i64,
            refresh_ttl_seconds: refresh_ttl_seconds as i64,
            revoked_families,
        }
    }

    /// Until when (Unix ms) a family revoked now must be refused: past that, every access
    /// token issued for it has expired anyway (leeway included).
    pub fn revoked_until_ms(&self, now: DateTime<Utc>) -> u64 {
        let last_expiry = now.timestamp() + self.access_ttl_seconds + self.validation.leeway as i64;
        u64::try_from(last_expiry).unwrap_or(0).saturating_mul(1000)
    }

    /// How far back the database must be read for families still to refuse.
    pub fn access_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.access_ttl_seconds + self.validation.leeway as i64).max(0) as u64)
    }

    fn sign(&self, claims: &Claims) -> String {
        // HMAC signing of a serialisable struct cannot fail.
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("hs256 signing never fails")
    }

    /// An access token of the sign-in `family_id`.
    pub fn issue_access(&self, user_id: &str, family_id: &str, now: DateTime<Utc>) -> String {
        let now = now.timestamp();
        self.sign(&Claims {
            sub: user_id.to_owned(),
            typ: ACCESS.to_owned(),
            jti: Uuid::new_v4().to_string(),
            fam: Some(family_id.to_owned()),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl_seconds,
        })
    }

    /// A refresh token in `family_id` (a new family at sign-in, the same one on rotation).
    pub fn issue_refresh(&self, user_id: &str, family_id: &str, now: DateTime<Utc>) -> IssuedRefreshToken {
        let id = Uuid::new_v4().to_string();
        let issued_at = now.timestamp();
        let expires_at = now + chrono::Duration::seconds(self.refresh_ttl_seconds);
        let token = self.sign(&Claims {
            sub: user_id.to_owned(),
            typ: REFRESH.to_owned(),
            jti: id.clone(),
            fam: Some(family_id.to_owned()),
            iat: issued_at,
            nbf: issued_at,
            exp: expires_at.timestamp(),
        });
        IssuedRefreshToken {
            token,
            id,
            family_id: family_id.to_owned(),
            expires_at,
        }
    }

    fn verify(&self, token: &str, expected: &'static str) -> Result<Claims, TokenError> {
        let claims = decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.typ != expected {
            return Err(TokenError::WrongKind {
                expected,
                found: claims.typ,
            });
        }
        if Uuid::parse_str(&claims.sub).is_err() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The user id of a valid access token whose sign-in is not revoked.
    pub fn verify_access(&self, token: &str) -> Result<String, TokenError> {
        self.access_grant(token).map(|grant| grant.user_id)
    }

    /// What a valid access token whose sign-in is not revoked grants.
    pub fn access_grant(&self, token: &str) -> Result<AccessGrant, TokenError> {
        let claims = self.verify(token, ACCESS)?;
        if let Some(family_id) = &claims.fam {
            if self.revoked_families.is_revoked(family_id) {
                return Err(TokenError::SignedOut);
            }
        }
        Ok(AccessGrant {
            user_id: claims.sub,
            family_id: claims.fam,
            expires_at_ms: u64::try_from(claims.exp).unwrap_or(0).saturating_mul(1000),
        })
    }

    /// The claims of a valid refresh token (family included).
    pub fn verify_refresh(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verify(token, REFRESH)?;
        if claims.fam.is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// The check of tokens renewed over a socket: the same rules as every request.
impl AccessTokenCheck for TokenIssuer {
    fn check_access(&self, token: &str) -> Result<AccessGrant, AccessRefused> {
        self.access_grant(token).map_err(|error| match error {
            TokenError::SignedOut => AccessRefused::SignedOut,
            TokenError::Invalid | TokenError::WrongKind { .. } => AccessRefused::Invalid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "6a3b2f50-7d0c-4a4e-9f0e-0d1f8c2b3a41";

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&"s".repeat(40), 3600, 86400, Arc::default())
    }

    #[test]
    fn access_tokens_round_trip() {
        let token = issuer().issue_access(USER, "family", Utc::now());
        assert_eq!(issuer().verify_access(&token).unwrap(), USER);
        let grant = issuer().access_grant(&token).unwrap();
        assert_eq!(grant.family_id.as_deref(), Some("family"));
    }

    #[test]
    fn a_revoked_sign_in_refuses_its_access_tokens_and_no_other() {
        let issuer = issuer();
        let signed_out = issuer.issue_access(USER, "signed-out", Utc::now());
        let other_device = issuer.issue_access(USER, "other-device", Utc::now());
        issuer
            .revoked_families
            .revoke("signed-out", issuer.revoked_until_ms(Utc::now()));
        assert!(matches!(issuer.verify_access(&signed_out), Err(TokenError::SignedOut)));
        assert_eq!(issuer.check_access(&signed_out), Err(AccessRefused::SignedOut));
        assert_eq!(issuer.verify_access(&other_device).unwrap(), USER);
    }

    #[test]
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let issuer = issuer();
        let refresh = issuer.issue_refresh(USER, "family", Utc::now());
        assert!(matches!(
            issuer.verify_access(&refresh.token),
            Err(TokenError::WrongKind { .. })
        ));
        let access = issuer.issue_access(USER, "family", Utc::now());
        assert!(matches!(
            issuer.verify_refresh(&access),
            Err(TokenError::WrongKind { .. })
        ));
    }

    #[test]
    fn expired_foreign_and_unsigned_tokens_are_refused() {
        let issuer = issuer();
        let long_ago = Utc::now() - chrono::Duration::hours(3);
        assert!(issuer.verify_access(&issuer.issue_access(USER, "f", long_ago)).is_err());
        let foreign =
            TokenIssuer::new(&"t".repeat(40), 3600, 86400, Arc::default()).issue_access(USER, "f", Utc::now());
        assert!(issuer.verify_access(&foreign).is_err());
        let valid = issuer.issue_access(USER, "f", Utc::now());
        let payload = valid.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(issuer.verify_access(&unsigned).is_err());
    }

    #[test]
    fn not_yet_valid_tokens_are_refused() {
        let issuer = issuer();
        let later = Utc::now() + chrono::Duration::minutes(5);
        assert!(issuer.verify_access(&issuer.issue_access(USER, "f", later)).is_err());
    }
}
