//! The client's access token, kept fresh: with a refresh token, a new pair is fetched
//! (`PUT /auth/token`) at two thirds of the access token's lifetime and the new access
//! token goes over the open socket (`renew`), so the server does not close it with 4401
//! when the old one expires; reconnects use the newest token. Without a refresh token
//! the access token is used as it is until it expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use protocol::auth::TokenPair;
use reqwest::Method;
use tokio::time::Instant;

use crate::http::ParleyHttp;

/// How long to wait before asking again after a refresh that failed for a passing reason.
const RETRY_AFTER_FAILED_REFRESH: Duration = Duration::from_secs(1);

/// Why the token could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    /// The sign-in is over (signed out elsewhere, or the refresh token reused): 401.
    #[error("the sign-in was revoked: {0}")]
    SignedOut(String),
    /// The server could not be reached or answered with something else; tried again later.
    #[error("refreshing the token failed: {0}")]
    Passing(String),
}

/// The current access token, the refresh token, and when to renew.
pub struct TokenKeeper {
    access_token: String,
    refresh_token: Option<String>,
    renew_at: Option<Instant>,
    http: Option<ParleyHttp>,
}

impl TokenKeeper {
    pub fn new(base_url: &str, access_token: String, refresh_token: Option<String>) -> TokenKeeper {
        let http = refresh_token.as_ref().map(|_| ParleyHttp::new(base_url));
        let mut keeper = TokenKeeper {
            access_token,
            refresh_token,
            renew_at: None,
            http,
        };
        keeper.schedule_renewal();
        keeper
    }

    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// When the next renewal is due (`None`: never, without a refresh token).
    pub fn renew_at(&self) -> Option<Instant> {
        self.renew_at
    }

    /// Whether the renewal is due now (also before a reconnect, so the socket does not
    /// open with a token about to expire).
    pub fn renewal_due(&self) -> bool {
        self.renew_at.is_some_and(|at| at <= Instant::now())
    }

    /// Fetches a new pair. On a passing failure the next try is scheduled a second later;
    /// on a revoked sign-in renewals stop.
    pub async fn refresh(&mut self) -> Result<(), RefreshFailure> {
        let (Some(http), Some(refresh_token)) = (&self.http, &self.refresh_token) else {
            return Ok(());
        };
        let body = serde_json::json!({ "refresh_token": refresh_token }).to_string();
        let answer = match http.request(Method::PUT, "/auth/token", None, Some(&body)).await {
            Ok(answer) => answer,
            Err(error) => {
                self.renew_at = Some(Instant::now() + RETRY_AFTER_FAILED_REFRESH);
                return Err(RefreshFailure::Passing(error.to_string()));
            }
        };
        match (answer.status, serde_json::from_value::<TokenPair>(answer.body.clone())) {
            (200, Ok(pair)) => {
                self.access_token = pair.access_token;
                self.refresh_token = Some(pair.refresh_token);
                self.schedule_renewal();
                Ok(())
            }
            (401, _) => {
                self.renew_at = None;
                Err(RefreshFailure::SignedOut(answer.body.to_string()))
            }
            (status, _) => {
                self.renew_at = Some(Instant::now() + RETRY_AFTER_FAILED_REFRESH);
                Err(RefreshFailure::Passing(format!("status {status}: {}", answer.body)))
            }
        }
    }

    fn schedule_renewal(&mut self) {
        self.renew_at = match (&self.refresh_token, expires_in(&self.access_token)) {
            (Some(_), Some(left)) => Some(Instant::now() + left * 2 / 3),
            // A token whose expiry cannot be read is renewed at once.
            (Some(_), None) => Some(Instant::now()),
            (None, _) => None,
        };
    }
}

/// Time left before the JWT's `exp` (read without checking the signature: the client
/// only schedules by it; the server checks).
fn expires_in(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let expires_at = UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64()?);
    Some(expires_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_expiring_in(seconds: u64) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + seconds;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("e30.{claims}.signature")
    }

    #[tokio::test]
    async fn renewal_is_due_at_two_thirds_of_the_lifetime_and_only_with_a_refresh_token() {
        let with_refresh = TokenKeeper::new("http://127.0.0.1:9", token_expiring_in(300), Some("r".to_owned()));
        let due_in = with_refresh.renew_at().unwrap() - Instant::now();
        assert!(
            due_in > Duration::from_secs(190) && due_in <= Duration::from_secs(200),
            "{due_in:?}"
        );
        assert!(!with_refresh.renewal_due());
        let without = TokenKeeper::new("http://127.0.0.1:9", token_expiring_in(300), None);
        assert_eq!(without.renew_at(), None);
        let unreadable = TokenKeeper::new("http://127.0.0.1:9", "opaque".to_owned(), Some("r".to_owned()));
        assert!(unreadable.renewal_due());
    }
}
