//! The recipient's side of `bench peer`'s XMPP load ([`super::xmpp_pairs`]): a user who
//! counts each message the first time it sees it, live, offline or from its archive. When
//! its connection ends it signs in again through nginx and tries to resume its
//! stream-management session; when that fails (the session died with its node) it asks
//! its own archive (MAM) for everything after the last archive id it saw.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::xmpp_pairs::{number_in, UserContext};
use super::xmpp_socket::{stop_requested, ResumableSession, XmppEvent};

/// Archive results asked for at a time while catching up.
const ARCHIVE_PAGE_SIZE: usize = 250;

/// Runs one recipient until the load stops.
pub(super) async fn run_recipient(user: UserContext) {
    let mut previous: Option<ResumableSession> = None;
    let mut disconnected_at: Option<Instant> = None;
    let mut last_archive_id: Option<String> = None;
    let mut stopped = user.stopped.clone();
    for connection_number in 1.. {
        let Some((mut socket, resumed_with)) = user.sign_in(connection_number, previous.as_ref()).await else {
            return;
        };
        // A new session after a lost one catches up from the archive; the first session
        // and a resumed one have missed nothing.
        let mut catching_up = connection_number > 1 && resumed_with.is_none();
        // Pages follow the archive's own cursor (the last id of the page before): the
        // offline messages arriving meanwhile carry newer ids than results still to come.
        let mut page_after = last_archive_id.clone();
        let mut healthy = true;
        if catching_up {
            healthy = socket
                .query_archive(&user.pair.sender, page_after.as_deref(), ARCHIVE_PAGE_SIZE)
                .await
                .is_ok();
        } else {
            user.back_since(&mut disconnected_at);
        }
        while healthy {
            tokio::select! {
                () = stop_requested(&mut stopped) => {
                    socket.close().await;
                    return;
                }
                event = socket.next_event() => match event {
                    Ok(XmppEvent::Message { body, archive_id }) => {
                        if let Some(number) = number_in(&body) {
                            user.ledger().delivered_at.entry(number).or_insert_with(Instant::now);
                        }
                        // Archive ids grow with time: keep the newest seen.
                        if let Some(id) = archive_id {
                            if is_newer_archive_id(&id, last_archive_id.as_deref()) {
                                last_archive_id = Some(id);
                            }
                        }
                    }
                    Ok(XmppEvent::ArchivePageEnd { complete, last }) => {
                        if let Some(id) = last {
                            if is_newer_archive_id(&id, last_archive_id.as_deref()) {
                                last_archive_id = Some(id.clone());
                            }
                            page_after = Some(id);
                        }
                        if complete || !catching_up {
                            if catching_up {
                                user.back_since(&mut disconnected_at);
                            }
                            catching_up = false;
                        } else {
                            healthy = socket
                                .query_archive(&user.pair.sender, page_after.as_deref(), ARCHIVE_PAGE_SIZE)
                                .await
                                .is_ok();
                        }
                    }
                    Ok(XmppEvent::AckRequested) => healthy = socket.answer_ack_request().await.is_ok(),
                    Ok(XmppEvent::Ended) | Err(_) => healthy = false,
                    Ok(_) => {}
                },
            }
        }
        previous = socket.resumable();
        // A disconnect during a catch-up still counts from the first one.
        disconnected_at.get_or_insert_with(Instant::now);
        user.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// ejabberd's archive ids are decimal microsecond timestamps.
fn is_newer_archive_id(candidate: &str, current: Option<&str>) -> bool {
    match (candidate.parse::<u128>(), current.map(str::parse::<u128>)) {
        (Ok(candidate), Some(Ok(current))) => candidate > current,
        (Ok(_), _) => true,
        (Err(_), _) => false,
    }
}
