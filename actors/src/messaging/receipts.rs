//! Receipts in groups: summaries for senders instead of a frame per member per move.
//!
//! In a one-to-one chat a cursor move is one `status` frame to the one other member. In a
//! group of n members that would be n - 1 frames per move, and every member moving their
//! cursor over a busy group makes it n² frames. A group's `Chat` actor instead notes the
//! highest cursor moved and, at most every [`SUMMARY_INTERVAL`], tells each sender of a
//! recent message how far their newest message got ("received by 3 of 5"), and only when
//! that changed. Cursors only grow, so a sender's earlier messages got at least as far.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use mysql_async::prelude::Queryable;
use protocol::messenger::status;
use protocol::websocket::StatusPayload;

use crate::database::{Database, DbError, Freshness};

/// Summaries for one group go out at most this often: cursor moves in between coalesce.
pub const SUMMARY_INTERVAL: Duration = Duration::from_millis(250);

/// How far back from the highest moved cursor senders are looked for: the newest message
/// of each sender within this many messages gets a summary.
pub const SENDERS_WINDOW: u64 = 1000;

/// A member's cursors, as a summary needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCursors {
    /// The member (UUID).
    pub user_id: String,
    /// Everything up to this seq reached the member's devices.
    pub received_seq: u64,
    /// Everything up to this seq was read.
    pub read_seq: u64,
}

/// What a summary is computed from: each recent sender's newest message, and every
/// member's cursors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptInputs {
    /// The newest message seq of each sender in the window.
    pub newest_by_sender: Vec<(String, u64)>,
    /// Every current member's cursors.
    pub members: Vec<MemberCursors>,
}

/// One `status` summary per sender who is still a member, about their newest message.
pub fn summarize(chat_id: &str, inputs: &ReceiptInputs) -> Vec<StatusPayload> {
    let mut summaries = Vec::new();
    for (sender, seq) in &inputs.newest_by_sender {
        if !inputs.members.iter().any(|member| &member.user_id == sender) {
            continue;
        }
        let others = inputs.members.iter().filter(|member| &member.user_id != sender);
        let (mut members, mut received_by, mut read_by) = (0, 0, 0);
        for member in others {
            members += 1;
            received_by += u64::from(member.received_seq >= *seq);
            read_by += u64::from(member.read_seq >= *seq);
        }
        let overall = if members > 0 && read_by == members {
            status::READ
        } else if members > 0 && received_by == members {
            status::RECEIVED
        } else {
            status::CREATED
        };
        summaries.push(StatusPayload {
            chat_id: chat_id.to_owned(),
            user_id: sender.clone(),
            status: overall.to_owned(),
            seq: *seq,
            received_by: Some(received_by),
            read_by: Some(read_by),
            members: Some(members),
        });
    }
    summaries
}

/// What a summary says: seq, received by, read by, of how many.
type SummaryFigures = (u64, Option<u64>, Option<u64>, Option<u64>);

/// Remembers what each sender was told last, so an unchanged summary is not sent again.
#[derive(Debug, Default)]
pub struct SentSummaries {
    last: HashMap<String, SummaryFigures>,
}

impl SentSummaries {
    /// The summaries of `candidates` that differ from what their sender was told last
    /// (and remembers them as told).
    pub fn changed(&mut self, candidates: Vec<StatusPayload>) -> Vec<StatusPayload> {
        candidates
            .into_iter()
            .filter(|summary| {
                let key = (summary.seq, summary.received_by, summary.read_by, summary.members);
                self.last.insert(summary.user_id.clone(), key) != Some(key)
            })
            .collect()
    }
}

/// Reads a group's receipt inputs up to `up_to` on the master (the cursors just moved
/// there): two reads by primary key and by the (chat, seq) key.
pub async fn read_inputs(database: &Database, chat_id: &str, up_to: u64) -> Result<ReceiptInputs, DbError> {
    let from = up_to.saturating_sub(SENDERS_WINDOW);
    database
        .read(Freshness::MasterFirst, move |conn| {
            let chat_id = chat_id.to_owned();
            async move {
                let newest_by_sender: Vec<(String, u64)> = conn
                    .exec(
                        "SELECT user_id, MAX(seq) FROM messages \
                         WHERE chat_id = ? AND seq > ? AND seq <= ? AND kind = 'text' GROUP BY user_id",
                        (&chat_id, from, up_to),
                    )
                    .await?;
                let members: Vec<(String, u64, u64)> = conn
                    .exec(
                        "SELECT user_id, received_seq, read_seq FROM chat_members WHERE chat_id = ?",
                        (&chat_id,),
                    )
                    .await?;
                let members = members
                    .into_iter()
                    .map(|(user_id, received_seq, read_seq)| MemberCursors {
                        user_id,
                        received_seq,
                        read_seq,
                    })
                    .collect();
                Ok(ReceiptInputs {
                    newest_by_sender,
                    members,
                })
            }
            .boxed()
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursors(user_id: &str, received_seq: u64, read_seq: u64) -> MemberCursors {
        MemberCursors {
            user_id: user_id.into(),
            received_seq,
            read_seq,
        }
    }

    #[test]
    fn each_sender_hears_how_many_of_the_others_got_their_newest_message() {
        let inputs = ReceiptInputs {
            newest_by_sender: vec![("ann".into(), 7), ("bob".into(), 9), ("gone".into(), 8)],
            members: vec![
                cursors("ann", 9, 9),
                cursors("bob", 9, 5),
                cursors("cid", 7, 7),
                cursors("dan", 3, 0),
            ],
        };
        let shown: Vec<String> = summarize("g", &inputs)
            .iter()
            .map(|summary| {
                format!(
                    "{} {} {:?}/{:?} of {:?} {}",
                    summary.user_id, summary.seq, summary.received_by, summary.read_by, summary.members, summary.status
                )
            })
            .collect();
        // A former member (gone) gets nothing; counts leave the sender out.
        assert_eq!(
            shown,
            [
                "ann 7 Some(2)/Some(1) of Some(3) created",
                "bob 9 Some(1)/Some(1) of Some(3) created"
            ]
        );
        let everyone_read = ReceiptInputs {
            newest_by_sender: vec![("ann".into(), 3)],
            members: inputs.members,
        };
        assert_eq!(summarize("g", &everyone_read)[0].status, status::RECEIVED);
    }

    #[test]
    fn an_unchanged_summary_is_not_sent_twice() {
        let inputs = ReceiptInputs {
            newest_by_sender: vec![("ann".into(), 2)],
            members: vec![cursors("ann", 2, 2), cursors("bob", 2, 0)],
        };
        let mut sent = SentSummaries::default();
        assert_eq!(sent.changed(summarize("g", &inputs)).len(), 1);
        assert!(sent.changed(summarize("g", &inputs)).is_empty());
        let read = ReceiptInputs {
            members: vec![cursors("ann", 2, 2), cursors("bob", 2, 2)],
            ..inputs
        };
        let changed = sent.changed(summarize("g", &read));
        assert_eq!(
            (changed[0].read_by, changed[0].status.as_str()),
            (Some(1), status::READ)
        );
    }
}
