//! Turns at the password hasher, handed out fairly between requesters (client
//! addresses): a few hashes run at once, and when one ends the next turn goes to the
//! requester who has waited longest for its *first* turn in the rotation, not to the
//! oldest waiting hash. One address's flood of sign-ups then delays another address's
//! sign-in by at most the hashes already running, however many it has queued.
//!
//! The queue is bounded three ways, each answered at once with `None` (a 429): in all,
//! per requester, and in time (a hash waiting longer is refused, so a proxy never sees a
//! slow answer).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// The bounds of the hasher's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TurnLimits {
    /// Hashes that run at once.
    pub running: usize,
    /// Hashes that wait at once, in all.
    pub waiting: usize,
    /// Hashes of one requester that wait at once.
    pub waiting_per_requester: usize,
    /// How long a hash may wait for its turn.
    pub max_wait: Duration,
}

/// One waiting hash: its number (to find it again) and where its turn is sent.
struct Waiter {
    number: u64,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Rotation {
    running: usize,
    waiting: usize,
    /// The waiting hashes of each requester, oldest first.
    waiters: HashMap<String, VecDeque<Waiter>>,
    /// Requesters with waiting hashes, in the order their next turn comes.
    order: VecDeque<String>,
    next_number: u64,
}

/// The hasher's turns; cheap to clone.
#[derive(Clone)]
pub(crate) struct HashingTurns {
    limits: TurnLimits,
    rotation: Arc<Mutex<Rotation>>,
}

/// The right to run one hash; the next turn is handed out when it is dropped.
pub(crate) struct Turn {
    turns: HashingTurns,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.hand_on();
    }
}

/// Takes a waiter out of the rotation when its wait ends for any reason (a no-op when
/// its turn was handed to it).
struct LeaveOnDrop<'turns> {
    turns: &'turns HashingTurns,
    requester: &'turns str,
    number: u64,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        self.turns.leave(self.requester, self.number);
    }
}

impl HashingTurns {
    pub(crate) fn new(limits: TurnLimits) -> HashingTurns {
        HashingTurns {
            limits: TurnLimits {
                running: limits.running.max(1),
                waiting_per_requester: limits.waiting_per_requester.max(1),
                ..limits
            },
            rotation: Arc::new(Mutex::new(Rotation::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rotation> {
        self.rotation.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hashes waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Hashes running now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }

    /// A turn for `requester`: at once when a hash slot is free, else after waiting in
    /// the rotation; `None` when the queue, the requester's share of it or the wait is
    /// exhausted.
    pub(crate) async fn take(&self, requester: &str) -> Option<Turn> {
        let (number, turn) = {
            let mut rotation = self.lock();
            if rotation.running < self.limits.running {
                rotation.running += 1;
                return Some(Turn { turns: self.clone() });
            }
            let of_requester = rotation.waiters.get(requester).map_or(0, VecDeque::len);
            if rotation.waiting >= self.limits.waiting || of_requester >= self.limits.waiting_per_requester {
                return None;
            }
            let (sender, receiver) = oneshot::channel();
            let number = rotation.next_number;
            rotation.next_number += 1;
            rotation.waiting += 1;
            if of_requester == 0 {
                rotation.order.push_back(requester.to_owned());
            }
            let waiter = Waiter { number, turn: sender };
            rotation
                .waiters
                .entry(requester.to_owned())
                .or_default()
                .push_back(waiter);
            (number, receiver)
        };
        // A request that goes away while it waits (its client disconnected) leaves the
        // rotation at once rather than when its turn comes.
        let _leave_if_abandoned = LeaveOnDrop {
            turns: self,
            requester,
            number,
        };
        let mut turn = turn;
        match tokio::time::timeout(self.limits.max_wait, &mut turn).await {
            Ok(Ok(turn)) => Some(turn),
            // The rotation is never dropped while a waiter is in it.
            Ok(Err(_)) => None,
            Err(_) => {
                if self.leave(requester, number) {
                    return None;
                }
                // The turn was handed over as the wait ran out: take it.
                turn.try_recv().ok()
            }
        }
    }

    /// Takes a waiter that gave up out of the rotation; false when it is no longer
    /// there (its turn was sent).
    fn leave(&self, requester: &str, number: u64) -> bool {
        let mut rotation = self.lock();
        let Some(queue) = rotation.waiters.get_mut(requester) else {
            return false;
        };
        let Some(position) = queue.iter().position(|waiter| waiter.number == number) else {
            return false;
        };
        queue.remove(position);
        let now_empty = queue.is_empty();
        rotation.waiting -= 1;
        if now_empty {
            rotation.waiters.remove(requester);
            rotation.order.retain(|waiting| waiting != requester);
        }
        true
    }

    /// A turn ended: the next requester in the rotation gets it (and goes to the back
    /// if it has more waiting), or the slot becomes free.
    fn hand_on(&self) {
        let mut rotation = self.lock();
        while let Some(requester) = rotation.order.pop_front() {
            let Some(queue) = rotation.waiters.get_mut(&requester) else {
                continue;
            };
            let waiter = queue.pop_front();
            let more = !queue.is_empty();
            if more {
                rotation.order.push_back(requester.clone());
            } else {
                rotation.waiters.remove(&requester);
            }
            let Some(waiter) = waiter else { continue };
            rotation.waiting -= 1;
            // The turn changes hands without the slot ever being free; a waiter whose
            // request went away drops it at once, and that drop hands it on again.
            let turn = Turn { turns: self.clone() };
            drop(rotation);
            if let Err(unwanted) = waiter.turn.send(turn) {
                drop(unwanted);
            }
            return;
        }
        rotation.running -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(running: usize, waiting: usize, per_requester: usize) -> HashingTurns {
        HashingTurns::new(TurnLimits {
            running,
            waiting,
            waiting_per_requester: per_requester,
            max_wait: Duration::from_secs(60),
        })
    }

    /// Polls until `condition` holds (the spawned waiters have queued).
    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once_and_given_back() {
        let turns = turns(2, 4, 2);
        let first = turns.take("a").await.expect("a free slot");
        let second = turns.take("b").await.expect("a free slot");
        assert_eq!(turns.running(), 2);
        drop((first, second));
        assert_eq!(turns.running(), 0);
    }

    #[tokio::test]
    async fn turns_go_round_the_requesters_not_first_come_first_served() {
        let turns = turns(1, 16, 8);
        let running = turns.take("flooder").await.unwrap();
        let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
        let wait = |requester: &'static str, label: &'static str| {
            let (turns, served) = (turns.clone(), served.clone());
            tokio::spawn(async move {
                let turn = turns.take(requester).await.expect("a turn");
                served.send(label).unwrap();
                drop(turn);
            })
        };
        let mut waiting = vec![
            wait("flooder", "flood 1"),
            wait("flooder", "flood 2"),
            wait("flooder", "flood 3"),
        ];
        until(|| turns.waiting() == 3).await;
        waiting.push(wait("quiet", "quiet"));
        until(|| turns.waiting() == 4).await;
        drop(running);
        for task in waiting {
            task.await.unwrap();
        }
        let mut served_in = Vec::new();
        while let Ok(label) = order.try_recv() {
            served_in.push(label);
        }
        assert_eq!(served_in, ["flood 1", "quiet", "flood 2", "flood 3"]);
        assert_eq!((turns.running(), turns.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn past_its_share_or_the_queue_a_requester_is_refused_at_once() {
        let turns = turns(1, 3, 2);
        let _running = turns.take("a").await.unwrap();
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let turns = turns.clone();
                tokio::spawn(async move { turns.take("a").await.is_some() })
            })
            .collect();
        until(|| turns.waiting() == 2).await;
        assert!(turns.take("a").await.is_none(), "over a's share");
        let other = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take("b").await.is_some() }
        });
        until(|| turns.waiting() == 3).await;
        assert!(turns.take("c").await.is_none(), "the queue is full");
        drop(_running);
        for task in queued {
            assert!(task.await.unwrap());
        }
        assert!(other.await.unwrap());
    }

    #[tokio::test]
    async fn a_waiter_whose_request_went_away_leaves_the_rotation() {
        let turns = turns(1, 4, 4);
        let running = turns.take("a").await.unwrap();
        let abandoned = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take("b").await.is_some() }
        });
        until(|| turns.waiting() == 1).await;
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(turns.waiting(), 0);
        drop(running);
        assert_eq!(turns.running(), 0, "the slot is free, not handed to nobody");
    }

    #[tokio::test]
    async fn a_wait_past_the_bound_is_refused_and_leaves_the_rotation() {
        let turns = HashingTurns::new(TurnLimits {
            running: 1,
            waiting: 4,
            waiting_per_requester: 4,
            max_wait: Duration::from_millis(20),
        });
        // Held for the whole test: the wait below can only run out.
        let running = turns.take("a").await.unwrap();
        assert!(turns.take("b").await.is_none(), "no turn within the bound");
        assert_eq!(turns.waiting(), 0);
        drop(running);
        assert_eq!(turns.running(), 0);
    }
}
