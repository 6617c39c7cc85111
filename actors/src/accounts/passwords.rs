//! Password hashing with scrypt, stored as PHC strings.
//!
//! Hashing is deliberately expensive (OWASP: N=2^17, r=8, p=1 is 128 MiB and a few
//! hundred ms per hash), so it runs on the blocking pool a few at a time: a flood of
//! sign-ins queues up instead of exhausting memory or starving other requests. Turns
//! go round the requesters (client addresses) and the queue is bounded in all, per
//! requester and in time, each refusal a [`HashingError::Busy`] (a 429) at once: see
//! [`hashing_turns`](super::hashing_turns).

use std::time::Duration;

use rand::RngCore;
use scrypt::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use scrypt::{Params, Scrypt};
use std::sync::Arc;
use tokio::sync::OnceCell;

use super::hashing_turns::{HashingTurns, TurnLimits};

/// scrypt cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptCost {
    /// log2 of scrypt's CPU/memory cost N; memory per hash is 128 * r * 2^log_n bytes.
    pub log_n: u8,
    /// scrypt block size.
    pub r: u32,
    /// scrypt parallelism (hashes run one thread each, so it multiplies the time).
    pub p: u32,
}

impl Default for ScryptCost {
    /// OWASP's recommendation.
    fn default() -> Self {
        ScryptCost { log_n: 17, r: 8, p: 1 }
    }
}

/// Why hashing failed (never because of the password's content).
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// scrypt itself failed (bad cost parameters, or the hashing task died): a server
    /// fault, answered 500; the reason is for the log.
    #[error("password hashing failed: {0}")]
    Failed(String),
    /// So many hashes are waiting that this one would wait too long: try again shortly.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
}

fn failed(reason: impl std::fmt::Display) -> HashingError {
    HashingError::Failed(reason.to_string())
}

/// Hashes and verifies passwords with bounded concurrency.
#[derive(Clone)]
pub struct PasswordVault {
    params: Params,
    limits: TurnLimits,
    turns: HashingTurns,
    decoy_hash: Arc<OnceCell<String>>,
}

/// The default of [`PasswordVault::with_max_wait`]: well under the proxy's read timeout
/// (nginx: 5 s), so a flood makes quick 429s, never a slow node.
pub const DEFAULT_MAX_HASH_WAIT: Duration = Duration::from_secs(2);

impl PasswordVault {
    /// At most `max_concurrent_hashes` run at once and `max_waiting_hashes` wait.
    pub fn new(
        cost: ScryptCost,
        max_concurrent_hashes: usize,
        max_waiting_hashes: usize,
    ) -> Result<PasswordVault, HashingError> {
        let params = Params::new(cost.log_n, cost.r, cost.p, Params::RECOMMENDED_LEN)
            .map_err(|error| failed(format!("bad scrypt parameters: {error}")))?;
        let limits = TurnLimits {
            running: max_concurrent_hashes,
            waiting: max_waiting_hashes,
            waiting_per_requester: max_waiting_hashes,
            max_wait: DEFAULT_MAX_HASH_WAIT,
        };
        Ok(PasswordVault {
            params,
            limits,
            turns: HashingTurns::new(limits),
            decoy_hash: Arc::new(OnceCell::new()),
        })
    }

    fn with_limits(mut self, limits: TurnLimits) -> PasswordVault {
        self.limits = limits;
        self.turns = HashingTurns::new(limits);
        self
    }

    /// At most `max_waiting` hashes of one requester wait at once (at least one).
    pub fn with_max_waiting_per_requester(self, max_waiting: usize) -> PasswordVault {
        let limits = TurnLimits {
            waiting_per_requester: max_waiting,
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// A hash that waits longer than `max_wait` for its turn is refused as busy.
    pub fn with_max_wait(self, max_wait: Duration) -> PasswordVault {
        let limits = TurnLimits {
            max_wait,
            ..self.limits
        };
        self.with_limits(limits)
    }

    /// Hashes waiting for their turn now.
    pub fn waiting_hashes(&self) -> usize {
        self.turns.waiting()
    }

    /// A PHC string (`$scrypt$ln=17,r=8,p=1$salt$hash`) for storage. `requester` (the
    /// client's address) is whose share of the queue the hash takes.
    pub async fn hash(&self, password: &str, requester: &str) -> Result<String, HashingError> {
        let params = self.params;
        let password = password.to_owned();
        self.on_blocking_pool(requester, move || {
            let mut salt_bytes = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut salt_bytes);
            let salt = SaltString::encode_b64(&salt_bytes).map_err(failed)?;
            Scrypt
                .hash_password_customized(password.as_bytes(), None, None, params, &salt)
                .map(|hash| hash.to_string())
                .map_err(failed)
        })
        .await
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown user) a decoy is
    /// verified instead, so the answer takes as long either way and says nothing about
    /// which emails exist.
    pub async fn verify(&self, password: &str, stored: Option<&str>, requester: &str) -> Result<bool, HashingError> {
        let (stored, is_decoy) = match stored {
            Some(stored) => (stored.to_owned(), false),
            None => (self.decoy(requester).await?, true),
        };
        let password = password.to_owned();
        let matches = self
            .on_blocking_pool(requester, move || {
                let parsed = PasswordHash::new(&stored).map_err(failed)?;
                // The final comparison inside is constant-time.
                Ok(Scrypt.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(matches && !is_decoy)
    }

    async fn decoy(&self, requester: &str) -> Result<String, HashingError> {
        self.decoy_hash
            .get_or_try_init(|| self.hash("parley decoy password, never matches a real account", requester))
            .await
            .cloned()
    }

    async fn on_blocking_pool<T, F>(&self, requester: &str, work: F) -> Result<T, HashingError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HashingError> + Send + 'static,
    {
        let turn = self.turns.take(requester).await.ok_or(HashingError::Busy)?;
        // The turn ends with the hash itself, not with the request: a client that goes
        // away mid-hash does not let another hash start beside the one still running.
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(turn);
            outcome
        })
        .await
        .map_err(|error| failed(format!("hashing task failed: {error}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_vault() -> PasswordVault {
        PasswordVault::new(ScryptCost { log_n: 4, r: 8, p: 1 }, 2, 16).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let vault = cheap_vault();
        let hash = vault.hash("1234567890", "tester").await.unwrap();
        assert!(hash.starts_with("$scrypt$ln=4,r=8,p=1$"), "{hash}");
        assert!(vault.verify("1234567890", Some(&hash), "tester").await.unwrap());
        assert!(!vault.verify("1234567891", Some(&hash), "tester").await.unwrap());
    }

    #[tokio::test]
    async fn the_decoy_never_matches() {
        let vault = cheap_vault();
        assert!(!vault
            .verify("parley decoy password, never matches a real account", None, "tester")
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_costs_still_verify() {
        let old = PasswordVault::new(ScryptCost { log_n: 5, r: 8, p: 1 }, 1, 16).unwrap();
        let hash = old.hash("secret-password", "tester").await.unwrap();
        assert!(cheap_vault()
            .verify("secret-password", Some(&hash), "tester")
            .await
            .unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_that_waits_past_the_time_bound_is_refused_as_busy() {
        // The running hash fills 64 MiB twice over: far longer than the 5 ms bound.
        let vault = PasswordVault::new(ScryptCost { log_n: 16, r: 8, p: 1 }, 1, 16)
            .unwrap()
            .with_max_wait(Duration::from_millis(5));
        let running = tokio::spawn({
            let vault = vault.clone();
            async move { vault.hash("the one that runs", "tester").await }
        });
        while vault.turns.running() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            vault.hash("the one that waits", "tester").await,
            Err(HashingError::Busy)
        ));
        assert!(running.await.unwrap().is_ok(), "the running hash is not disturbed");
        assert_eq!(vault.waiting_hashes(), 0, "the count of waiters drains");
    }

    /// Polls `condition` until it holds, for at most five seconds.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_requester_holds_at_most_its_share_of_the_queue_and_another_still_gets_in() {
        let vault = PasswordVault::new(ScryptCost { log_n: 16, r: 8, p: 1 }, 1, 16)
            .unwrap()
            .with_max_waiting_per_requester(2)
            .with_max_wait(Duration::from_secs(60));
        let hash_for = |password: String, requester: &'static str| {
            let vault = vault.clone();
            tokio::spawn(async move { vault.hash(&password, requester).await })
        };
        let running = hash_for("running".into(), "flooder");
        until("the first hash runs", || vault.turns.running() == 1).await;
        let flood: Vec<_> = (0..6)
            .map(|index| hash_for(format!("flood {index}"), "flooder"))
            .collect();
        until("the flooder's share waits", || vault.waiting_hashes() == 2).await;
        let other = hash_for("someone else".into(), "other address");
        until("another requester finds room", || vault.waiting_hashes() == 3).await;

        assert!(other.await.unwrap().is_ok());
        assert!(running.await.unwrap().is_ok());
        let mut outcomes = (0, 0);
        for attempt in flood {
            match attempt.await.unwrap() {
                Ok(_) => outcomes.0 += 1,
                Err(HashingError::Busy) => outcomes.1 += 1,
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(outcomes, (2, 4), "two of the flood waited, four were refused at once");
        assert_eq!(vault.waiting_hashes(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_waiting_bound_a_hash_is_refused_at_once() {
        // One runs, two wait, the rest are refused: a cost high enough that none of the
        // first three finishes before all are submitted.
        let vault = PasswordVault::new(ScryptCost { log_n: 14, r: 8, p: 1 }, 1, 2).unwrap();
        let attempts: Vec<_> = (0..8)
            .map(|index| {
                let vault = vault.clone();
                tokio::spawn(async move {
                    vault
                        .hash(&format!("password {index}"), &format!("address {index}"))
                        .await
                })
            })
            .collect();
        let mut hashed = 0;
        let mut busy = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => hashed += 1,
                Err(HashingError::Busy) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(hashed >= 3, "one running and two waiting must finish: {hashed}");
        assert!(busy >= 1, "eight at once must overflow a queue of two");
        assert_eq!(hashed + busy, 8);
        assert_eq!(vault.waiting_hashes(), 0, "the count of waiters drains");
    }
}
