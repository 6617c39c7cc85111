//! Remembers each writer's last commit position (GTID) for read-your-writes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries beyond this count trigger a sweep of expired ones.
const SWEEP_ABOVE: usize = 10_000;

pub(crate) struct RecentWrites {
    horizon: Duration,
    last_write_by_writer: Mutex<HashMap<String, (String, Instant)>>,
}

impl RecentWrites {
    /// Positions older than `horizon` are forgotten: replicas are long past them.
    pub(crate) fn new(horizon: Duration) -> RecentWrites {
        RecentWrites {
            horizon,
            last_write_by_writer: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn remember(&self, writer: &str, gtid: String) {
        let mut entries = self
            .last_write_by_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() > SWEEP_ABOVE {
            let horizon = self.horizon;
            entries.retain(|_, (_, written_at)| written_at.elapsed() < horizon);
        }
        entries.insert(writer.to_owned(), (gtid, Instant::now()));
    }

    pub(crate) fn last_write_of(&self, writer: &str) -> Option<String> {
        let entries = self
            .last_write_by_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(writer)
            .filter(|(_, written_at)| written_at.elapsed() < self.horizon)
            .map(|(gtid, _)| gtid.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_position_within_the_horizon() {
        let writes = RecentWrites::new(Duration::from_secs(60));
        writes.remember("bob", "0-1-5".into());
        writes.remember("bob", "0-1-9".into());
        assert_eq!(writes.last_write_of("bob").as_deref(), Some("0-1-9"));
        assert_eq!(writes.last_write_of("alice"), None);
    }

    #[test]
    fn forgets_positions_past_the_horizon() {
        let writes = RecentWrites::new(Duration::ZERO);
        writes.remember("bob", "0-1-5".into());
        assert_eq!(writes.last_write_of("bob"), None);
    }
}
