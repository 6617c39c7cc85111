//! Password hashing with scrypt, stored as PHC strings.
//!
//! Hashing is deliberately expensive (OWASP: N=2^17, r=8, p=1 is 128 MiB and a few
//! hundred ms per hash), so it runs on the blocking pool behind a semaphore: a flood of
//! sign-ins queues up instead of exhausting memory or starving other requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::RngCore;
use scrypt::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use scrypt::{Params, Scrypt};
use tokio::sync::{OnceCell, Semaphore};

/// scrypt cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptCost {
    pub log_n: u8,
    pub r: u32,
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
    permits: Arc<Semaphore>,
    /// Hashes waiting for a permit; past `max_waiting` new ones are refused at once, so a
    /// flood costs neither memory nor minutes of latency for the ones in the queue.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    decoy_hash: Arc<OnceCell<String>>,
}

/// Counts a hash as waiting for as long as it lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordVault {
    /// At most `max_concurrent_hashes` run at once and `max_waiting_hashes` wait.
    pub fn new(
        cost: ScryptCost,
        max_concurrent_hashes: usize,
        max_waiting_hashes: usize,
    ) -> Result<PasswordVault, HashingError> {
        let params = Params::new(cost.log_n, cost.r, cost.p, Params::RECOMMENDED_LEN)
            .map_err(|error| failed(format!("bad scrypt parameters: {error}")))?;
        Ok(PasswordVault {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent_hashes.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: max_waiting_hashes,
            decoy_hash: Arc::new(OnceCell::new()),
        })
    }

    /// A PHC string (`$scrypt$ln=17,r=8,p=1$salt$hash`) for storage.
    pub async fn hash(&self, password: &str) -> Result<String, HashingError> {
        let params = self.params;
        let password = password.to_owned();
        self.on_blocking_pool(move || {
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
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashingError> {
        let (stored, is_decoy) = match stored {
            Some(stored) => (stored.to_owned(), false),
            None => (self.decoy().await?, true),
        };
        let password = password.to_owned();
        let matches = self
            .on_blocking_pool(move || {
                let parsed = PasswordHash::new(&stored).map_err(failed)?;
                // The final comparison inside is constant-time.
                Ok(Scrypt.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(matches && !is_decoy)
    }

    async fn decoy(&self) -> Result<String, HashingError> {
        self.decoy_hash
            .get_or_try_init(|| self.hash("parley decoy password, never matches a real account"))
            .await
            .cloned()
    }

    async fn on_blocking_pool<T, F>(&self, work: F) -> Result<T, HashingError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HashingError> + Send + 'static,
    {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(HashingError::Busy);
                }
                let _waiting = Waiting(Arc::clone(&self.waiting));
                self.permits
                    .acquire()
                    .await
                    .map_err(|_| failed("the hashing pool is closed"))?
            }
        };
        let outcome = tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| failed(format!("hashing task failed: {error}")))?;
        drop(permit);
        outcome
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
        let hash = vault.hash("1234567890").await.unwrap();
        assert!(hash.starts_with("$scrypt$ln=4,r=8,p=1$"), "{hash}");
        assert!(vault.verify("1234567890", Some(&hash)).await.unwrap());
        assert!(!vault.verify("1234567891", Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn the_decoy_never_matches() {
        let vault = cheap_vault();
        assert!(!vault
            .verify("parley decoy password, never matches a real account", None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_costs_still_verify() {
        let old = PasswordVault::new(ScryptCost { log_n: 5, r: 8, p: 1 }, 1, 16).unwrap();
        let hash = old.hash("secret-password").await.unwrap();
        assert!(cheap_vault().verify("secret-password", Some(&hash)).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_waiting_bound_a_hash_is_refused_at_once() {
        // One runs, two wait, the rest are refused: a cost high enough that none of the
        // first three finishes before all are submitted.
        let vault = PasswordVault::new(ScryptCost { log_n: 14, r: 8, p: 1 }, 1, 2).unwrap();
        let attempts: Vec<_> = (0..8)
            .map(|index| {
                let vault = vault.clone();
                tokio::spawn(async move { vault.hash(&format!("password {index}")).await })
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
        assert_eq!(vault.waiting.load(Ordering::Acquire), 0, "the count of waiters drains");
    }
}
