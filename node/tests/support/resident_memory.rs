//! A node process's resident memory, read from /proc, and its peak while a test floods
//! the node. For the flood tests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The process's resident set, in MiB.
pub fn resident_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Samples a process's resident memory every 20 ms until stopped; the highest reading.
pub struct PeakMemory {
    stop: Arc<AtomicBool>,
    peak_mib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PeakMemory {
    pub fn watch(pid: u32) -> PeakMemory {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_mib = Arc::new(AtomicU64::new(resident_mib(pid).unwrap_or(0)));
        let sampler = tokio::spawn({
            let (stop, peak_mib) = (Arc::clone(&stop), Arc::clone(&peak_mib));
            async move {
                while !stop.load(Ordering::Acquire) {
                    if let Some(mib) = resident_mib(pid) {
                        peak_mib.fetch_max(mib, Ordering::AcqRel);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        PeakMemory {
            stop,
            peak_mib,
            sampler,
        }
    }

    /// Stops sampling; the peak in MiB.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.sampler.await.expect("the memory sampler ran");
        self.peak_mib.load(Ordering::Acquire)
    }
}
