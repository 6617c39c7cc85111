//! Spawning, signalling and reaping the cluster's processes.
//!
//! Every component runs as the leader of its own process group, so a signal to the
//! group reaches helpers it forked (nginx workers) and nothing else.
//!
//! Two ways to spawn:
//! * [`SpawnMode::TiedToThisProcess`] (tests, foreground `parley-sim up`): the child gets
//!   `PR_SET_PDEATHSIG = SIGKILL`. The kernel fires that signal when the *thread* that
//!   forked the child exits, not the process, so all such children are forked by one
//!   dedicated thread that lives as long as the process. An `atexit` hook SIGKILLs the
//!   groups on a normal exit too, because statics holding clusters are never dropped.
//! * [`SpawnMode::Detached`] (`parley-sim up --detach`, CLI restarts): the child starts a
//!   new session and outlives the launcher.
//!
//! The one module of the workspace with `unsafe` code: `pre_exec` hooks (prctl, setsid
//! between fork and exec, where only async-signal-safe calls may run) and `atexit` have
//! no safe wrappers in std or nix. Each block says why it is sound.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Everything needed to start (and later restart) one component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Set on top of the launcher's own environment.
    pub env: Vec<(String, String)>,
    /// The working directory; None: the launcher's.
    pub working_dir: Option<PathBuf>,
    /// stdout and stderr are appended here.
    pub log_path: PathBuf,
    /// A cgroup (v2) directory the process joins before it runs, so that every socket it
    /// ever opens is in that cgroup (see `network_partition`).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

impl LaunchCommand {
    /// The command as one shell-like line, for humans.
    pub fn display_line(&self) -> String {
        let environment = self.env.iter().map(|(key, value)| format!("{key}={value}"));
        let words = std::iter::once(self.program.display().to_string()).chain(self.args.iter().cloned());
        environment.chain(words).collect::<Vec<_>>().join(" ")
    }
}

/// Whether a started process dies with the launcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnMode {
    /// Killed by the kernel if this process dies; killed at exit.
    TiedToThisProcess,
    /// Own session; survives the launcher.
    Detached,
}

/// A pid plus its start time, so a recycled pid is never mistaken for our process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot).
    pub start_time_ticks: Option<u64>,
}

/// Process groups tied to this process that may still have members.
static TIED_PROCESS_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
static EXIT_HOOK: Once = Once::new();

struct SpawnRequest {
    command: LaunchCommand,
    reply: mpsc::Sender<io::Result<u32>>,
}

/// Starts `command` as the leader of a new process group.
pub fn spawn_component_process(command: &LaunchCommand, mode: SpawnMode) -> anyhow::Result<ProcessIdentity> {
    if let Some(parent) = command.log_path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating log directory {}", parent.display()))?;
    }
    let pid = match mode {
        SpawnMode::Detached => spawn_now(command, mode),
        SpawnMode::TiedToThisProcess => spawn_from_spawner_thread(command.clone()),
    }
    .with_context(|| format!("spawning {}", command.display_line()))?;
    Ok(ProcessIdentity {
        pid,
        start_time_ticks: read_process_stat(pid).map(|stat| stat.start_time_ticks),
    })
}

fn spawn_from_spawner_thread(command: LaunchCommand) -> io::Result<u32> {
    let spawner = SPAWNER.get_or_init(|| {
        EXIT_HOOK.call_once(|| {
            // SAFETY: registering a plain extern "C" function with no captured state.
            unsafe { libc::atexit(kill_tied_process_groups_at_exit) };
        });
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("parley-sim-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread that is the
                // parent of every tied child) lasts until the process exits.
                for request in receiver {
                    let result = spawn_now(&request.command, SpawnMode::TiedToThisProcess);
                    let _ = request.reply.send(result);
                }
            })
            .expect("starting the parley-sim spawner thread");
        sender
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

fn spawn_now(command: &LaunchCommand, mode: SpawnMode) -> io::Result<u32> {
    let log = OpenOptions::new().create(true).append(true).open(&command.log_path)?;
    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .envs(command.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(directory) = &command.working_dir {
        process.current_dir(directory);
    }
    if let Some(cgroup) = &command.cgroup {
        join_cgroup_before_exec(&mut process, cgroup)?;
    }
    match mode {
        SpawnMode::TiedToThisProcess => {
            let launcher_pid = std::process::id() as libc::pid_t;
            process.process_group(0);
            // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
            unsafe {
                process.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The launcher may have died between fork and prctl; then nobody
                    // would ever kill this child.
                    if libc::getppid() != launcher_pid {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        SpawnMode::Detached => {
            // SAFETY: setsid is async-signal-safe. A new session is also a new process
            // group, and the child no longer gets the terminal's SIGINT/SIGHUP.
            unsafe {
                process.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let child = process.spawn()?;
    let pid = child.id();
    if mode == SpawnMode::TiedToThisProcess {
        lock_tied_groups().insert(pid as i32);
    }
    // Dropping std's Child neither kills nor reaps; reaping is done by pid (see reap_if_exited).
    drop(child);
    Ok(pid)
}

/// Makes the child write itself into `cgroup`'s `cgroup.procs` between fork and exec.
fn join_cgroup_before_exec(process: &mut Command, cgroup: &std::path::Path) -> io::Result<()> {
    // A restarted component finds its cgroup again even if someone removed it.
    std::fs::create_dir_all(cgroup)?;
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes())
        .map_err(|_| io::Error::other("cgroup path with a NUL byte"))?;
    // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec; the
    // path was allocated before the fork.
    unsafe {
        process.pre_exec(move || {
            let descriptor = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if descriptor < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" is the writing process itself.
            let written = libc::write(descriptor, b"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(descriptor);
            if written != 1 {
                return Err(error);
            }
            Ok(())
        });
    }
    Ok(())
}

fn lock_tied_groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    TIED_PROCESS_GROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

extern "C" fn kill_tied_process_groups_at_exit() {
    // try_lock: never block process exit on a thread that died holding the lock.
    if let Ok(groups) = TIED_PROCESS_GROUPS.try_lock() {
        for &group in groups.iter() {
            // SAFETY: plain syscall; a vanished group just gives ESRCH.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

pub(crate) struct ProcessStat {
    pub state: char,
    pub process_group: i32,
    pub start_time_ticks: u64,
}

pub(crate) fn read_process_stat(pid: u32) -> Option<ProcessStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_stat(&text)
}

fn parse_process_stat(text: &str) -> Option<ProcessStat> {
    // The command name is in parentheses and may itself contain spaces or ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is stat field 3 (state), so stat field N is fields[N - 3].
    Some(ProcessStat {
        state: fields.first()?.chars().next()?,
        process_group: fields.get(2)?.parse().ok()?,
        start_time_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Collects the exit status if `pid` is our child and has exited, so it does not
/// linger as a zombie. Harmless (ECHILD) for processes that are not our children.
fn reap_if_exited(pid: u32) {
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// True if a process with this pid exists and is not a zombie.
pub fn pid_is_alive(pid: u32) -> bool {
    reap_if_exited(pid);
    read_process_stat(pid).is_some_and(|stat| !is_dead_state(stat.state))
}

/// True if `identity` still runs (a stopped process counts as alive, a zombie does not).
pub fn process_is_alive(identity: ProcessIdentity) -> bool {
    reap_if_exited(identity.pid);
    match read_process_stat(identity.pid) {
        None => false,
        Some(stat) => {
            !is_dead_state(stat.state)
                && identity
                    .start_time_ticks
                    .is_none_or(|ticks| ticks == stat.start_time_ticks)
        }
    }
}

/// True if any non-zombie process is in process group `group`.
pub fn process_group_has_live_members(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            return false;
        };
        read_process_stat(pid).is_some_and(|stat| stat.process_group == group as i32 && !is_dead_state(stat.state))
    })
}

/// Sends `signal` to the component's whole process group. Returns false when there was
/// nothing left to signal.
pub fn signal_process_group(identity: ProcessIdentity, signal: Signal) -> anyhow::Result<bool> {
    if let (Some(stat), Some(expected)) = (read_process_stat(identity.pid), identity.start_time_ticks) {
        if stat.start_time_ticks != expected && !is_dead_state(stat.state) {
            // The pid now belongs to an unrelated process; its group is not ours.
            return Ok(false);
        }
    }
    match killpg(Pid::from_raw(identity.pid as i32), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(error) => Err(error).with_context(|| format!("sending {signal} to process group {}", identity.pid)),
    }
}

/// True once the leader is dead and no member of its group is left.
pub fn process_group_is_gone(identity: ProcessIdentity) -> bool {
    let gone = !process_is_alive(identity) && !process_group_has_live_members(identity.pid);
    if gone {
        lock_tied_groups().remove(&(identity.pid as i32));
    }
    gone
}

/// SIGKILLs the groups and blocks (polling) until they are gone or `timeout` passes.
/// Blocking on purpose: it runs from `Drop`, where no runtime may be available.
pub fn kill_process_groups_and_wait_blocking(identities: &[ProcessIdentity], timeout: Duration) {
    for identity in identities {
        let _ = signal_process_group(*identity, Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    while !identities.iter().all(|identity| process_group_is_gone(*identity)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM first, SIGKILL for whatever is still there after `grace`.
pub async fn terminate_process_groups(identities: &[ProcessIdentity], grace: Duration) {
    for identity in identities {
        let _ = signal_process_group(*identity, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !identities.iter().all(|identity| process_group_is_gone(*identity)) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("components still running {grace:?} after sigterm, sending sigkill");
            for identity in identities {
                let _ = signal_process_group(*identity, Signal::SIGKILL);
            }
            let kill_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !identities.iter().all(|identity| process_group_is_gone(*identity))
                && tokio::time::Instant::now() < kill_deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Looks in PATH, then in the sbin directories a non-root PATH often lacks.
pub fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback_dirs = ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(fallback_dirs)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{name} not found in PATH or /usr/sbin; run deploy/install.sh"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_parentheses_in_the_command_name() {
        let line = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_process_stat(line).expect("parsable");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.process_group, 4242);
        assert_eq!(stat.start_time_ticks, 987654);
    }
}
