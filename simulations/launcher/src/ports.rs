//! Choosing the TCP ports of a cluster.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// How a group of components gets its ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortChoice {
    /// A known layout from `base` (the CLI's stable ports).
    Fixed {
        /// The first port of the layout; the others follow at fixed offsets.
        base: u16,
    },
    /// Whatever the kernel hands out (tests running side by side).
    Free,
}

/// Ports that are free right now, outside the kernel's ephemeral range.
///
/// Not `bind(0)`: that hands out ephemeral ports, and while a component is down (killed
/// on purpose) the kernel may give its port to some outgoing connection as a source
/// port, and the restart then fails to bind. Below the ephemeral range only listeners
/// compete, and each candidate is checked by binding it. All listeners are held until
/// every port is picked, so one call never returns the same port twice.
pub fn pick_free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    use rand::Rng;
    const LOWEST_CANDIDATE: u16 = 15000;
    let ephemeral_start = ephemeral_port_range_start().unwrap_or(32768);
    if ephemeral_start <= LOWEST_CANDIDATE + 1000 {
        return pick_ports_from_the_kernel(count);
    }
    let mut random = rand::thread_rng();
    let mut listeners = Vec::with_capacity(count);
    let mut attempts = 0;
    while listeners.len() < count {
        attempts += 1;
        if attempts > 10_000 {
            bail!("no free port found below {ephemeral_start} after {attempts} attempts");
        }
        let candidate = random.gen_range(LOWEST_CANDIDATE..ephemeral_start);
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)) {
            listeners.push(listener);
        }
    }
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr().context("reading a picked port")?.port()))
        .collect()
}

fn ephemeral_port_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn pick_ports_from_the_kernel(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0 to pick a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr().context("reading a picked port")?.port()))
        .collect()
}

/// Fails with a clear message when a fixed port is taken, instead of letting a server
/// die at bind time with the reason buried in its log.
pub fn ensure_ports_are_free(ports: &[u16]) -> anyhow::Result<()> {
    for &port in ports {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("port 127.0.0.1:{port} is already in use"))?;
    }
    Ok(())
}

/// `count` ports following `choice`: consecutive from the base, or free ones.
pub fn ports_for(choice: PortChoice, count: usize) -> anyhow::Result<Vec<u16>> {
    match choice {
        PortChoice::Free => pick_free_ports(count),
        PortChoice::Fixed { base } => {
            let ports = (0..count)
                .map(|offset| {
                    u16::try_from(usize::from(base) + offset)
                        .with_context(|| format!("port base {base} + {offset} is beyond 65535"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            ensure_ports_are_free(&ports)?;
            Ok(ports)
        }
    }
}

/// `127.0.0.1:port`: every component listens on loopback only.
pub fn local_addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}
