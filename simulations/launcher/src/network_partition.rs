//! Cutting one process (a node, a database server) off the network while every process
//! shares loopback.
//!
//! Ports alone cannot isolate a process: a node's connections to MariaDB, HAProxy and its
//! peers, or a replica's to its master, leave from ephemeral ports, and every node talks
//! to the same database ports. So each such process is started inside a cgroup (v2) of
//! its own, and a partition is two kinds of iptables rules:
//!
//! * `OUTPUT -m cgroup --path <process's cgroup> -j DROP`: nothing the process sends
//!   leaves, whatever the socket (sockets belong to the cgroup they were created in, which
//!   is why the process must be born there rather than moved later);
//! * `INPUT --dport <its listening ports> -j DROP`: nothing reaches its listeners either,
//!   so its clients see it as unreachable, not as rude.
//!
//! Local administration over a unix socket (the launcher's root session to a MariaDB
//! server) is not network traffic and keeps working through a partition.
//!
//! Every rule carries a comment naming the cgroup, so healing finds them from any
//! process (the `parley-sim` CLI heals a partition an earlier command made).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

/// Where a process's cgroup lives and how iptables names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCgroup {
    /// The cgroup's directory, e.g. `/sys/fs/cgroup/unified/parley-node-1-port-41234`.
    pub directory: PathBuf,
    /// The same cgroup relative to the cgroup2 root, as `-m cgroup --path` wants it.
    pub path_in_hierarchy: String,
}

impl ProcessCgroup {
    /// The cgroup the process called `process_name`, listening on `port`, runs in, if
    /// this machine has a writable cgroup2 hierarchy; the directory is created. None: the
    /// process runs where the launcher runs, and partitions are refused with a clear error.
    pub fn for_process(process_name: &str, port: u16) -> Option<ProcessCgroup> {
        let root = cgroup2_root()?;
        let name = format!("parley-{process_name}-port-{port}");
        let directory = root.join(&name);
        if let Err(error) = std::fs::create_dir_all(&directory) {
            tracing::debug!(directory = %directory.display(), %error, "no cgroup for the process; partitions unavailable");
            return None;
        }
        Some(ProcessCgroup {
            directory,
            path_in_hierarchy: name,
        })
    }

    /// The directory of a cgroup recorded earlier, if it still exists.
    pub fn from_directory(directory: &Path) -> Option<ProcessCgroup> {
        let root = cgroup2_root()?;
        let path_in_hierarchy = directory.strip_prefix(&root).ok()?.to_str()?.to_owned();
        directory.is_dir().then(|| ProcessCgroup {
            directory: directory.to_path_buf(),
            path_in_hierarchy,
        })
    }

    /// The cgroup the component was started in (see `LaunchCommand::cgroup`), or an
    /// error saying why it cannot be partitioned.
    pub fn of_component(component: &crate::component::Component) -> anyhow::Result<ProcessCgroup> {
        match component
            .command
            .cgroup
            .as_deref()
            .and_then(ProcessCgroup::from_directory)
        {
            Some(cgroup) => Ok(cgroup),
            None => bail!(
                "{} was not started in a cgroup of its own (this machine has no writable cgroup2 hierarchy)",
                component.name
            ),
        }
    }

    /// Removes the cgroup once its processes are gone; a live member keeps it.
    pub fn remove_if_empty(&self) {
        let _ = std::fs::remove_dir(&self.directory);
    }
}

/// The mount point of the cgroup2 hierarchy (`/sys/fs/cgroup` on a pure v2 machine,
/// `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_device, mount_point, filesystem) = (fields.next()?, fields.next()?, fields.next()?);
        (filesystem == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// What is cut: the process's cgroup for its outgoing packets, its ports for the incoming.
pub struct PartitionTarget<'target> {
    /// The process's cgroup: packets its processes send are dropped.
    pub cgroup: &'target ProcessCgroup,
    /// Ports the process listens on: packets sent to them are dropped.
    pub listening_ports: &'target [u16],
}

impl PartitionTarget<'_> {
    fn rule_tag(&self) -> String {
        format!("parley-partition:{}", self.cgroup.path_in_hierarchy)
    }

    fn rules(&self) -> Vec<Vec<String>> {
        let tag = self.rule_tag();
        let dropped = |chain: &str, matches: &[&str]| -> Vec<String> {
            let tail = ["-m", "comment", "--comment", tag.as_str(), "-j", "DROP"];
            std::iter::once(chain)
                .chain(matches.iter().copied())
                .chain(tail)
                .map(str::to_owned)
                .collect()
        };
        let mut rules = vec![dropped(
            "OUTPUT",
            &["-m", "cgroup", "--path", &self.cgroup.path_in_hierarchy],
        )];
        for port in self.listening_ports {
            rules.push(dropped(
                "INPUT",
                &["-i", "lo", "-p", "tcp", "--dport", &port.to_string()],
            ));
        }
        rules
    }

    /// Cuts the process off. Cutting twice is refused: the second heal would be the first.
    pub fn cut(&self) -> anyhow::Result<()> {
        ensure!(
            self.tagged_rules()?.is_empty(),
            "{} is already partitioned",
            self.cgroup.path_in_hierarchy
        );
        for rule in self.rules() {
            if let Err(error) = iptables(&[&["-I".to_owned()], rule.as_slice()].concat()) {
                // Half a partition is worse than none.
                let _ = self.heal();
                return Err(error.context("cutting the process off (the launcher must run as root with iptables)"));
            }
        }
        Ok(())
    }

    /// Removes every rule this target's cut added; true if there were any.
    pub fn heal(&self) -> anyhow::Result<bool> {
        let rules = self.tagged_rules()?;
        for rule in &rules {
            iptables(&[&["-D".to_owned()], rule.as_slice()].concat())?;
        }
        Ok(!rules.is_empty())
    }

    /// The rules carrying this target's tag, as `iptables -S` prints them (minus `-A`).
    fn tagged_rules(&self) -> anyhow::Result<Vec<Vec<String>>> {
        let tag = self.rule_tag();
        let mut found = Vec::new();
        for chain in ["INPUT", "OUTPUT"] {
            let listing = iptables_output(&["-S", chain])?;
            for line in listing.lines() {
                if !line.contains(&tag) {
                    continue;
                }
                let Some(rule) = line.strip_prefix("-A ") else {
                    continue;
                };
                found.push(split_rule(rule));
            }
        }
        Ok(found)
    }
}

/// `iptables -S` quotes a comment only when it has spaces; ours has none, so splitting on
/// whitespace and dropping quotes gives back the words of the rule.
fn split_rule(rule: &str) -> Vec<String> {
    rule.split_whitespace()
        .map(|word| word.trim_matches('"').to_owned())
        .collect()
}

fn iptables(arguments: &[String]) -> anyhow::Result<()> {
    let output = Command::new("iptables")
        .args(arguments)
        .output()
        .context("running iptables")?;
    if !output.status.success() {
        bail!(
            "iptables {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn iptables_output(arguments: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("iptables")
        .args(arguments)
        .output()
        .context("running iptables")?;
    ensure!(
        output.status.success(),
        "iptables {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_rule_splits_back_into_the_words_it_was_added_with() {
        let cgroup = ProcessCgroup {
            directory: PathBuf::from("/sys/fs/cgroup/parley-node-1-port-5"),
            path_in_hierarchy: "parley-node-1-port-5".to_owned(),
        };
        let target = PartitionTarget {
            cgroup: &cgroup,
            listening_ports: &[5, 105],
        };
        let rules = target.rules();
        assert_eq!(rules.len(), 3);
        let listed = "INPUT -i lo -p tcp -m tcp --dport 105 -m comment --comment \"parley-partition:parley-node-1-port-5\" -j DROP";
        let split = split_rule(listed);
        assert!(split.contains(&"parley-partition:parley-node-1-port-5".to_owned()));
        assert_eq!(split.first().map(String::as_str), Some("INPUT"));
        assert_eq!(split.last().map(String::as_str), Some("DROP"));
    }
}
