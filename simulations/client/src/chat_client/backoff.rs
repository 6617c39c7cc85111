//! Reconnect delays: exponential with jitter, so a thousand clients cut off by one dead
//! node do not all knock on the survivors in the same millisecond.

use std::time::Duration;

use rand::Rng;

/// Delay before the next connection attempt, from how many attempts failed in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectBackoff {
    /// The delay after the first failure (before jitter).
    pub initial_delay: Duration,
    /// The delay stops doubling here (before jitter).
    pub maximum_delay: Duration,
    /// 0.5 means each delay is drawn uniformly from 50% to 150% of its base.
    pub jitter_fraction: f64,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff {
            initial_delay: Duration::from_millis(50),
            maximum_delay: Duration::from_secs(2),
            jitter_fraction: 0.5,
        }
    }
}

impl ReconnectBackoff {
    /// The delay without jitter: `initial_delay` doubled once per earlier failure, capped.
    pub fn base_delay(&self, consecutive_failures: u32) -> Duration {
        // Past 2^20 the cap has long been reached; stopping there keeps the multiplication
        // far from overflowing.
        let doublings = consecutive_failures.min(20);
        self.initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.maximum_delay)
    }

    /// The delay with jitter; `unit_random` is uniform in [0, 1).
    pub fn jittered_delay(&self, consecutive_failures: u32, unit_random: f64) -> Duration {
        let jitter = self.jitter_fraction.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit_random.clamp(0.0, 1.0);
        self.base_delay(consecutive_failures).mul_f64(factor)
    }

    /// The delay with jitter drawn from the thread's random generator.
    pub fn next_delay(&self, consecutive_failures: u32) -> Duration {
        self.jittered_delay(consecutive_failures, rand::thread_rng().gen::<f64>())
    }

    /// The smallest and largest delay `next_delay` can return.
    pub fn delay_bounds(&self, consecutive_failures: u32) -> (Duration, Duration) {
        (
            self.jittered_delay(consecutive_failures, 0.0),
            self.jittered_delay(consecutive_failures, 1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_delay_doubles_from_fifty_milliseconds_and_stops_at_two_seconds() {
        let backoff = ReconnectBackoff::default();
        let bases: Vec<u128> = (0..8)
            .map(|failures| backoff.base_delay(failures).as_millis())
            .collect();
        assert_eq!(bases, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_half_of_the_base_either_way() {
        let backoff = ReconnectBackoff::default();
        for failures in [0, 1, 5, 6, 40] {
            let base = backoff.base_delay(failures);
            let (lowest, highest) = backoff.delay_bounds(failures);
            assert_eq!(lowest, base / 2, "failures {failures}");
            assert_eq!(highest, base * 3 / 2, "failures {failures}");
            for _ in 0..200 {
                let delay = backoff.next_delay(failures);
                assert!(
                    delay >= lowest && delay <= highest,
                    "{delay:?} outside {lowest:?}..{highest:?}"
                );
            }
        }
    }

    #[test]
    fn out_of_range_jitter_inputs_are_clamped() {
        let backoff = ReconnectBackoff {
            jitter_fraction: 3.0,
            ..ReconnectBackoff::default()
        };
        assert_eq!(backoff.jittered_delay(0, 0.0), Duration::ZERO);
        assert_eq!(backoff.jittered_delay(0, 7.0), Duration::from_millis(100));
        let no_jitter = ReconnectBackoff {
            jitter_fraction: 0.0,
            ..ReconnectBackoff::default()
        };
        assert_eq!(no_jitter.next_delay(2), Duration::from_millis(200));
    }
}
