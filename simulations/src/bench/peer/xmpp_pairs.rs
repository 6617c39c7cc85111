//! The chat load of `bench peer` on ejabberd: pairs of users, each pair split over the
//! two nodes, one user of each sending one-to-one messages to the other at a steady rate,
//! as [`crate::load::chat_load::RunningChatLoad`] does on Parley.
//!
//! Each user behaves as a careful XMPP client does. A sender keeps its messages until the
//! server acks them (XEP-0198) and, on a new session, sends the unacked ones again. A
//! recipient whose connection ends signs in again through nginx, tries to resume its
//! stream-management session, and when that fails (the session died with its node) asks
//! its own archive (MAM) for everything after the last archive id it saw. A message
//! counts as delivered the first time its recipient sees it, live, offline or from the
//! archive; repeats are dropped by message number, as clients drop them by id.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::xmpp_recipient::run_recipient;
use super::xmpp_socket::{stop_requested, ResumableSession, XmppEvent, XmppSignIn, XmppSocket};
use crate::load::latency_samples::LatencySamples;
use parley_client::chat_client::ReconnectBackoff;
use parley_launcher::ejabberd_peer::EJABBERD_DOMAIN;

const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One pair's accounts: `s<i>` sends to `r<i>`.
#[derive(Debug, Clone)]
pub struct XmppPair {
    pub index: usize,
    pub sender: String,
    pub recipient: String,
    pub password: String,
}

impl XmppPair {
    /// The `count` pairs of a run tagged `tag` (usernames must be new to the database).
    pub fn many(tag: &str, count: usize) -> Vec<XmppPair> {
        (0..count)
            .map(|index| XmppPair {
                index,
                sender: format!("{tag}-s{index}"),
                recipient: format!("{tag}-r{index}"),
                password: format!("pw-{tag}-{index}"),
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub(super) struct PairLedger {
    sent_at: HashMap<u64, Instant>,
    acked_at: HashMap<u64, Instant>,
    /// First sight of each message number at the recipient.
    pub(super) delivered_at: HashMap<u64, Instant>,
}

/// What one run of the load saw.
#[derive(Debug, Default)]
pub struct XmppLoadOutcome {
    pub sent: u64,
    pub acked: u64,
    /// Acked messages whose recipient never saw them.
    pub lost: u64,
    /// Send → first sight at the recipient, of every delivered acked message.
    pub delivery_times: LatencySamples,
    /// Each involuntary disconnect's time until the user was back (a sender: signed in
    /// again; a recipient: signed in and caught up from the archive).
    pub resume_times: LatencySamples,
    pub reconnects: u64,
    /// The lost messages: (sender, recipient, body).
    pub lost_messages: Vec<(String, String, String)>,
}

/// The running load: a task per user, one metronome for the senders.
pub struct RunningXmppLoad {
    pairs: Vec<XmppPair>,
    ledgers: Arc<Vec<Mutex<PairLedger>>>,
    send_queues: Vec<mpsc::UnboundedSender<u64>>,
    live_users: Arc<AtomicUsize>,
    resume_times: Arc<Mutex<LatencySamples>>,
    reconnects: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    message_rate_per_pair: f64,
    next_message: Vec<u64>,
}

/// How hard each sender pushes: the offered rate, and how many of its messages may be
/// written and unacked at once (the rest wait in the client, as in Parley's client).
#[derive(Debug, Clone, Copy)]
pub struct SendPace {
    pub message_rate_per_pair: f64,
    pub max_in_flight: usize,
}

/// Where the users connect: their first node each, and nginx for every reconnect.
#[derive(Debug, Clone)]
pub struct XmppEndpoints {
    pub node_urls: [String; 2],
    pub public_url: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RunningXmppLoad {
    /// Starts both users of every pair (sender on node `i % 2`, recipient on the other).
    pub fn connect(pairs: Vec<XmppPair>, endpoints: XmppEndpoints, pace: SendPace) -> RunningXmppLoad {
        let ledgers: Arc<Vec<Mutex<PairLedger>>> = Arc::new(pairs.iter().map(|_| Mutex::default()).collect());
        let (stop, stopped) = watch::channel(false);
        let live_users = Arc::new(AtomicUsize::new(0));
        let resume_times = Arc::new(Mutex::new(LatencySamples::default()));
        let reconnects = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let mut send_queues = Vec::new();
        for (slot, pair) in pairs.iter().enumerate() {
            let user = |name: &str, node: usize| UserContext {
                pair: pair.clone(),
                username: name.to_owned(),
                first_url: endpoints.node_urls[node].clone(),
                public_url: endpoints.public_url.clone(),
                ledgers: Arc::clone(&ledgers),
                slot,
                stopped: stopped.clone(),
                live_users: Arc::clone(&live_users),
                resume_times: Arc::clone(&resume_times),
                reconnects: Arc::clone(&reconnects),
            };
            let (queue, queued) = mpsc::unbounded_channel();
            send_queues.push(queue);
            let sender = user(&pair.sender, pair.index % 2);
            tasks.push(tokio::spawn(run_sender(sender, queued, pace.max_in_flight)));
            tasks.push(tokio::spawn(run_recipient(user(&pair.recipient, (pair.index + 1) % 2))));
        }
        RunningXmppLoad {
            next_message: vec![0; pairs.len()],
            pairs,
            ledgers,
            send_queues,
            live_users,
            resume_times,
            reconnects,
            stop,
            tasks,
            message_rate_per_pair: pace.message_rate_per_pair,
        }
    }

    /// Waits until every user has its first session.
    pub async fn wait_all_live(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let users = self.pairs.len() * 2;
        while self.live_users.load(Ordering::Relaxed) < users {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {users} XMPP users signed in within {timeout:?}",
                self.live_users.load(Ordering::Relaxed)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Every sender sends `message_rate_per_pair` messages a second until `ends_at`, the
    /// pairs taken in turn by one metronome.
    pub async fn send_at_steady_rate(&mut self, ends_at: Instant) {
        let per_second = self.message_rate_per_pair * self.pairs.len() as f64;
        if self.pairs.is_empty() || per_second <= 0.0 {
            return;
        }
        let mut metronome = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        metronome.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut slot = 0;
        loop {
            metronome.tick().await;
            if Instant::now() >= ends_at {
                return;
            }
            self.next_message[slot] += 1;
            let number = self.next_message[slot];
            lock(&self.ledgers[slot]).sent_at.insert(number, Instant::now());
            // A sender that ended has nothing to send with; its count shows as unacked.
            let _ = self.send_queues[slot].send(number);
            slot = (slot + 1) % self.pairs.len();
        }
    }

    /// First deliveries so far, over every pair.
    pub fn delivered_so_far(&self) -> u64 {
        self.ledgers
            .iter()
            .map(|ledger| lock(ledger).delivered_at.len() as u64)
            .sum()
    }

    /// Polls until every sent message is acked and every acked one delivered; false if
    /// `timeout` passed first.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let settled = self.ledgers.iter().all(|ledger| {
                let ledger = lock(ledger);
                ledger.acked_at.len() >= ledger.sent_at.len()
                    && ledger
                        .acked_at
                        .keys()
                        .all(|number| ledger.delivered_at.contains_key(number))
            });
            if settled {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Signs everyone out and reads the ledgers.
    pub async fn finish(self) -> anyhow::Result<XmppLoadOutcome> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.context("an XMPP user task panicked")?;
        }
        let mut outcome = XmppLoadOutcome {
            resume_times: std::mem::take(&mut *lock(&self.resume_times)),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            ..XmppLoadOutcome::default()
        };
        for (pair, ledger) in self.pairs.iter().zip(self.ledgers.iter()) {
            let ledger = lock(ledger);
            outcome.sent += ledger.sent_at.len() as u64;
            outcome.acked += ledger.acked_at.len() as u64;
            for number in ledger.acked_at.keys() {
                match (ledger.delivered_at.get(number), ledger.sent_at.get(number)) {
                    (Some(delivered), Some(sent)) => outcome
                        .delivery_times
                        .record(delivered.saturating_duration_since(*sent)),
                    _ => {
                        outcome.lost += 1;
                        let body = body_of(pair.index, *number);
                        outcome
                            .lost_messages
                            .push((pair.sender.clone(), pair.recipient.clone(), body));
                    }
                }
            }
        }
        Ok(outcome)
    }
}

/// One user of a pair, as its task sees it.
pub(super) struct UserContext {
    pub(super) pair: XmppPair,
    username: String,
    first_url: String,
    public_url: String,
    ledgers: Arc<Vec<Mutex<PairLedger>>>,
    slot: usize,
    pub(super) stopped: watch::Receiver<bool>,
    live_users: Arc<AtomicUsize>,
    resume_times: Arc<Mutex<LatencySamples>>,
    pub(super) reconnects: Arc<AtomicU64>,
}

impl UserContext {
    pub(super) fn ledger(&self) -> MutexGuard<'_, PairLedger> {
        lock(&self.ledgers[self.slot])
    }

    /// The user is back: records the time since its involuntary disconnect, if any.
    pub(super) fn back_since(&self, disconnected_at: &mut Option<Instant>) {
        if let Some(at) = disconnected_at.take() {
            lock(&self.resume_times).record(at.elapsed());
        }
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Signs in (the first time on its own node, afterwards through nginx), retrying with
    /// Parley's client's backoff until it works or the load stops.
    pub(super) async fn sign_in(
        &self,
        connection_number: u64,
        previous: Option<&ResumableSession>,
    ) -> Option<(XmppSocket, Option<u64>)> {
        let backoff = ReconnectBackoff::default();
        let mut failures = 0;
        loop {
            if self.stopping() {
                return None;
            }
            let url = if connection_number == 1 {
                &self.first_url
            } else {
                &self.public_url
            };
            let resource = format!("bench-{connection_number}-{failures}");
            let sign_in = XmppSignIn {
                url,
                domain: EJABBERD_DOMAIN,
                username: &self.username,
                password: &self.pair.password,
                resource: &resource,
            };
            let attempt = XmppSocket::sign_in(&sign_in, previous, SIGN_IN_TIMEOUT).await;
            match attempt {
                Ok(signed_in) => {
                    if connection_number == 1 {
                        self.live_users.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some((signed_in.socket, signed_in.resumed_with_handled));
                }
                Err(error) => {
                    tracing::debug!(user = %self.username, error = %format!("{error:#}"), "xmpp sign-in failed");
                    tokio::time::sleep(backoff.next_delay(failures)).await;
                    failures += 1;
                }
            }
        }
    }
}

fn body_of(pair: usize, number: u64) -> String {
    format!("pair {pair} message {number}")
}

pub(super) fn number_in(body: &str) -> Option<u64> {
    body.rsplit(' ').next()?.parse().ok()
}

async fn run_sender(user: UserContext, mut queued: mpsc::UnboundedReceiver<u64>, max_in_flight: usize) {
    // Stanza number on the current session → message number, until acked.
    let mut unacked: BTreeMap<u64, u64> = BTreeMap::new();
    // Messages a broken socket did not take, in order.
    let mut not_written: Vec<u64> = Vec::new();
    let mut previous: Option<ResumableSession> = None;
    let mut disconnected_at: Option<Instant> = None;
    let mut stopped = user.stopped.clone();
    for connection_number in 1.. {
        let Some((mut socket, resumed_with)) = user.sign_in(connection_number, previous.as_ref()).await else {
            return;
        };
        // Unacked messages go again: as they were on a resumed session, as new stanzas on
        // a new one (the recipient drops a repeat).
        if let Some(handled) = resumed_with {
            record_acks(&user, &mut unacked, handled);
            socket.set_outbound_handled(handled);
        }
        let resend: Vec<u64> = unacked.values().copied().chain(not_written.drain(..)).collect();
        unacked.clear();
        let mut healthy = true;
        for number in resend {
            if healthy {
                healthy = send_numbered(&user, &mut socket, number, &mut unacked, &mut not_written).await;
            } else {
                not_written.push(number);
            }
        }
        user.back_since(&mut disconnected_at);
        while healthy {
            tokio::select! {
                () = stop_requested(&mut stopped) => {
                    socket.close().await;
                    return;
                }
                number = queued.recv(), if unacked.len() < max_in_flight => {
                    let Some(number) = number else {
                        socket.close().await;
                        return;
                    };
                    healthy = send_numbered(&user, &mut socket, number, &mut unacked, &mut not_written).await;
                }
                event = socket.next_event() => match event {
                    Ok(XmppEvent::Acked(handled)) => record_acks(&user, &mut unacked, handled),
                    Ok(XmppEvent::AckRequested) => healthy = socket.answer_ack_request().await.is_ok(),
                    Ok(XmppEvent::Ended) | Err(_) => healthy = false,
                    Ok(_) => {}
                },
            }
        }
        previous = socket.resumable();
        disconnected_at = Some(Instant::now());
        user.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes message `number` as a stanza awaiting its ack; when the socket is broken the
/// number waits for the next session instead. False when it was broken.
async fn send_numbered(
    user: &UserContext,
    socket: &mut XmppSocket,
    number: u64,
    unacked: &mut BTreeMap<u64, u64>,
    not_written: &mut Vec<u64>,
) -> bool {
    let body = body_of(user.pair.index, number);
    match socket.send_chat(&user.pair.recipient, &number.to_string(), &body).await {
        Ok(stanza) => {
            unacked.insert(stanza, number);
            true
        }
        Err(_) => {
            not_written.push(number);
            false
        }
    }
}

fn record_acks(user: &UserContext, unacked: &mut BTreeMap<u64, u64>, handled: u64) {
    let now = Instant::now();
    let still_unacked = unacked.split_off(&(handled + 1));
    let acked = std::mem::replace(unacked, still_unacked);
    let mut ledger = user.ledger();
    for number in acked.into_values() {
        ledger.acked_at.entry(number).or_insert(now);
    }
}
