//! Percentiles of latency samples. Samples are kept whole (an hour of 2,000 requests a
//! second is 29 MB of u32s), so the figures are exact rather than a histogram's estimate.

use std::time::Duration;

/// Latencies in microseconds, sorted on demand.
#[derive(Debug, Default, Clone)]
pub struct LatencySamples {
    microseconds: Vec<u32>,
    sorted: bool,
}

impl LatencySamples {
    /// Adds one latency (kept in whole microseconds, at most about 71 minutes).
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.microseconds.push(micros);
        self.sorted = false;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: LatencySamples) {
        self.microseconds.extend(other.microseconds);
        self.sorted = false;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.microseconds.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.microseconds.is_empty()
    }

    /// The nearest-rank percentile in milliseconds (0 without samples); `fraction` in [0, 1].
    pub fn percentile_ms(&mut self, fraction: f64) -> f64 {
        if self.microseconds.is_empty() {
            return 0.0;
        }
        self.sort();
        let count = self.microseconds.len();
        let rank = (fraction.clamp(0.0, 1.0) * count as f64).ceil() as usize;
        let index = rank.clamp(1, count) - 1;
        f64::from(self.microseconds[index]) / 1000.0
    }

    /// The largest sample, ms (0 when empty).
    pub fn max_ms(&self) -> f64 {
        self.microseconds
            .iter()
            .max()
            .map_or(0.0, |max| f64::from(*max) / 1000.0)
    }

    /// The mean, ms (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        if self.microseconds.is_empty() {
            return 0.0;
        }
        let total: u64 = self.microseconds.iter().map(|micros| u64::from(*micros)).sum();
        total as f64 / self.microseconds.len() as f64 / 1000.0
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.microseconds.sort_unstable();
            self.sorted = true;
        }
    }
}

impl FromIterator<Duration> for LatencySamples {
    fn from_iter<Iterator: IntoIterator<Item = Duration>>(latencies: Iterator) -> Self {
        let mut samples = LatencySamples::default();
        for latency in latencies {
            samples.record(latency);
        }
        samples
    }
}

/// Rounds to 3 decimals for reports (microsecond resolution in milliseconds).
pub fn round_ms(milliseconds: f64) -> f64 {
    (milliseconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: LatencySamples = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(samples.percentile_ms(0.5), 50.0);
        assert_eq!(samples.percentile_ms(0.9), 90.0);
        assert_eq!(samples.percentile_ms(0.99), 99.0);
        assert_eq!(samples.percentile_ms(1.0), 100.0);
        assert_eq!(samples.max_ms(), 100.0);
        assert_eq!(samples.mean_ms(), 50.5);
    }

    #[test]
    fn one_slow_sample_shows_in_the_tail_only() {
        let mut samples: LatencySamples = std::iter::repeat_n(Duration::from_millis(2), 999)
            .chain([Duration::from_millis(900)])
            .collect();
        assert_eq!(samples.percentile_ms(0.5), 2.0);
        assert_eq!(samples.percentile_ms(0.99), 2.0);
        assert_eq!(samples.percentile_ms(0.999), 2.0);
        assert_eq!(samples.max_ms(), 900.0);
    }

    #[test]
    fn no_samples_give_zeroes_and_merging_adds_samples() {
        let mut empty = LatencySamples::default();
        assert_eq!(empty.percentile_ms(0.99), 0.0);
        assert_eq!(empty.max_ms(), 0.0);
        empty.merge([Duration::from_micros(1500)].into_iter().collect());
        assert_eq!(empty.len(), 1);
        assert_eq!(empty.percentile_ms(0.5), 1.5);
    }
}
