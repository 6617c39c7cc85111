//! A deadline for a whole test binary: a hung test fails the run with a message instead
//! of holding CI until its own timeout, and the binaries after it still run.

use std::sync::OnceLock;
use std::time::Duration;

/// Far above any test binary's run time here (the longest takes a few minutes).
const TEST_BINARY_TIME_LIMIT: Duration = Duration::from_secs(20 * 60);

static ARMED: OnceLock<()> = OnceLock::new();

/// From the first call on, the process gets [`TEST_BINARY_TIME_LIMIT`] to finish; past
/// it, it prints which binary hung and exits with status 101 (a failed test binary).
/// Later calls do nothing.
pub fn arm(binary: &str) {
    let limit = TEST_BINARY_TIME_LIMIT;
    ARMED.get_or_init(|| {
        let binary = binary.to_owned();
        std::thread::Builder::new()
            .name("test-watchdog".to_owned())
            .spawn(move || {
                // A deadline, not a coordination sleep: nothing waits for this thread.
                std::thread::sleep(limit);
                eprintln!("test binary {binary} still running after {limit:?}: a test hangs; failing the binary");
                std::process::exit(101);
            })
            .expect("starting the test watchdog thread");
    });
}
