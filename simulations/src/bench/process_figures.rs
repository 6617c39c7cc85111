//! What `/proc` says about a process: its resident memory and how many more files it may
//! open; and raising this process's own open files limit.

use anyhow::{bail, ensure, Context};

/// `VmRSS` of `pid`, in bytes.
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kibibytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kibibytes * 1024)
}

/// CPU time `pid` has used so far (user and system), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its `)` do not.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ) in /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("field {} of {path}", index + 3))
    };
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / ticks_per_second)
}

/// File descriptors `pid` may still open: its soft `Max open files` minus those open.
pub fn open_files_left(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/limits");
    let limits = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let soft_limit = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|values| values.split_whitespace().next())
        .with_context(|| format!("no open files limit in {path}"))?;
    let soft_limit: u64 = match soft_limit {
        "unlimited" => u64::MAX,
        number => number
            .parse()
            .with_context(|| format!("open files limit {number:?} in {path}"))?,
    };
    let directory = format!("/proc/{pid}/fd");
    let open = std::fs::read_dir(&directory)
        .with_context(|| format!("listing {directory}"))?
        .count() as u64;
    Ok(soft_limit.saturating_sub(open))
}

/// Raises this process's soft open files limit to the hard one (thousands of client
/// sockets live here too) and returns the new soft limit.
pub fn raise_own_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading the open files limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising the open files limit")?;
    }
    Ok(hard)
}

/// How many of the `requested` sockets this process and each of `pids` can open,
/// keeping `headroom` files free in each: the open files limits decide how many
/// connections a benchmark holds on one machine (this kind of machine: a hard limit of
/// 20,000 that even root may not raise). Fewer than asked is logged; none is an error.
pub fn sockets_that_fit(pids: &[u32], headroom: u64, requested: usize) -> anyhow::Result<usize> {
    let mut left = open_files_left(std::process::id())?;
    for pid in pids {
        left = left.min(open_files_left(*pid)?);
    }
    let fits = requested.min(left.saturating_sub(headroom) as usize);
    ensure!(fits > 0, "no open files left for the benchmark's sockets");
    if fits < requested {
        tracing::warn!(
            requested,
            fits,
            "the open files limits hold only this many sockets; measuring with fewer"
        );
    }
    Ok(fits)
}

/// The pid of a cluster component, from the cluster's status.
pub fn component_pid(statuses: &[parley_launcher::ComponentStatus], name: &str) -> anyhow::Result<u32> {
    match statuses.iter().find(|status| status.name == name) {
        Some(status) if status.alive => Ok(status.pid),
        Some(_) => bail!("{name} is not running"),
        None => bail!("the cluster has no {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let own = std::process::id();
        assert!(resident_bytes(own).unwrap() > 0);
        assert!(open_files_left(own).unwrap() > 0);
        // Busy until the clock ticks over (it counts in ticks of 10 ms, usually).
        let before = cpu_seconds(own).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        while cpu_seconds(own).unwrap() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "no CPU time counted after 10 s busy"
            );
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
    }
}
