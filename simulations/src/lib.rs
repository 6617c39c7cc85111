//! parley-sim: breaks a Parley cluster on purpose and measures it.
//!
//! * [`failover`]: the seed's fault-tolerance experiment (HTTP and chat load while
//!   scripted faults hit the cluster), its report and timeline plot.
//! * [`bench`]: the benchmarks, each a ratio against a baseline measured in the same run.
//! * [`load`]: the load generators both of them run.
//!
//! Clusters come from `parley-launcher`, clients from `parley-client`; the `parley-sim`
//! binary puts the three behind one command line.

pub mod bench;
pub mod failover;
pub mod load;
