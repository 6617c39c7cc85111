//! A test cluster's state directory that outlives a failed test: its servers' and
//! nodes' logs are what whoever reads the failure needs.

use std::path::Path;

/// A temporary directory, removed when dropped unless the thread is panicking.
pub struct StateDirKeptOnFailure(tempfile::TempDir);

impl StateDirKeptOnFailure {
    /// A new temporary directory.
    pub fn new() -> std::io::Result<StateDirKeptOnFailure> {
        tempfile::tempdir().map(StateDirKeptOnFailure)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for StateDirKeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!("the cluster's logs are kept in {}", self.0.path().display());
        }
    }
}
