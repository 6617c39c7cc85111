//! Group chats on real clusters behind nginx: a removed member gets nothing sent after
//! the removal, whichever node he is on; an outsider can neither read, write nor join;
//! the group limits and who-may-do-what answer with clear errors.
//!
//! The 200-member group through a node kill fills both cores, so it is a test binary of
//! its own, `group_chats_node_kill.rs` (cargo runs test binaries one after another); the
//! helpers both use are in `support/group_members.rs`.

#[path = "support/group_members.rs"]
mod group_members;
#[path = "support/test_app.rs"]
mod test_app;

use group_members::{
    add_member_raw, assert_history_gap_free_from_created, assert_refused, call, create_group_raw, event_kind, history,
    ids, is_event, member_ids, remove_member_raw, sign_up_named, sorted_ids, Watcher, MANY_USERS_ARGS,
};
use parley_client::http::Method;
use protocol::websocket::actions;
use test_app::{shared_servers, TestApp};

const BINARY: &str = "group_chats";

// ---------------------------------------------------------------------------------------
// A removed member
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_nothing_sent_after_the_removal_on_either_node() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 2).await;
    app.wait_cluster_formed().await;
    let http = &app.http;
    let users = sign_up_named(http, &["Owner", "Anna", "Boris", "Carol", "Dave"], "removal").await;
    let [owner, anna, boris, carol, dave] = [&users[0], &users[1], &users[2], &users[3], &users[4]];
    let chat_id = http
        .create_group(&owner.token, "Removals", &ids(&[anna, boris, carol, dave]))
        .await
        .unwrap();
    let (node_1, node_2) = (app.app.node_url("node-1"), app.app.node_url("node-2"));
    // Anna is removed on node-1, Boris on node-2; Carol and Dave stay, one on each.
    let mut owner_socket = Watcher::connect(&node_1, owner, &chat_id).await;
    let mut anna_socket = Watcher::connect(&node_1, anna, &chat_id).await;
    let mut boris_socket = Watcher::connect(&node_2, boris, &chat_id).await;
    let mut carol_socket = Watcher::connect(&node_1, carol, &chat_id).await;
    let mut dave_socket = Watcher::connect(&node_2, dave, &chat_id).await;

    let before = owner_socket.send_acked(&["before the removals".to_owned()]).await[0];
    for watcher in [&mut anna_socket, &mut boris_socket, &mut carol_socket, &mut dave_socket] {
        watcher
            .read_until("the message before the removals", |w| w.holds(before))
            .await;
        assert_eq!(watcher.seqs(), (1..=before).collect::<Vec<_>>(), "{}", watcher.name);
        assert_eq!(
            watcher.at(1).event.as_ref().map(|event| event.kind.as_str()),
            Some("created")
        );
    }

    let anna_removed = http.remove_member(&owner.token, &chat_id, &anna.id).await.unwrap();
    assert_eq!(
        (anna_removed.chat_id.as_str(), anna_removed.user_id.as_str()),
        (chat_id.as_str(), anna.id.as_str())
    );
    assert!(anna_removed.changed);
    let boris_removed = http.remove_member(&owner.token, &chat_id, &boris.id).await.unwrap();
    assert!(boris_removed.changed);
    let (anna_seq, boris_seq) = (anna_removed.seq, boris_removed.seq);
    assert!(
        anna_seq > before && boris_seq > anna_seq,
        "{anna_seq}, {boris_seq} after {before}"
    );
    assert_eq!(
        member_ids(http, owner, &chat_id).await,
        sorted_ids(&[owner, carol, dave])
    );

    // Each removed member hears of his own removal, as the others do.
    anna_socket.read_until("her removal", |w| w.holds(anna_seq)).await;
    assert!(
        is_event(anna_socket.at(anna_seq), "removed", anna, owner),
        "{:?}",
        anna_socket.at(anna_seq)
    );
    boris_socket.read_until("his removal", |w| w.holds(boris_seq)).await;
    assert!(is_event(boris_socket.at(anna_seq), "removed", anna, owner));
    assert!(is_event(boris_socket.at(boris_seq), "removed", boris, owner));
    for watcher in [&mut carol_socket, &mut dave_socket, &mut owner_socket] {
        watcher.read_until("both removals", |w| w.holds(boris_seq)).await;
        assert!(
            is_event(watcher.at(anna_seq), "removed", anna, owner),
            "{}",
            watcher.name
        );
        assert!(
            is_event(watcher.at(boris_seq), "removed", boris, owner),
            "{}",
            watcher.name
        );
    }

    // After the removals: messages from node-1 (Owner) and node-2 (Dave).
    let texts = |who: &str| -> Vec<String> {
        (0..5)
            .map(|index| format!("{who} after the removals {index}"))
            .collect()
    };
    let from_owner = owner_socket.send_acked(&texts("owner")).await;
    let from_dave = dave_socket.send_acked(&texts("dave")).await;
    let after: Vec<u64> = from_owner.iter().chain(&from_dave).copied().collect();
    carol_socket
        .read_until("everything after the removals", |w| {
            after.iter().all(|seq| w.holds(*seq))
        })
        .await;
    dave_socket
        .read_until("the owner's messages", |w| from_owner.iter().all(|seq| w.holds(*seq)))
        .await;
    owner_socket
        .read_until("Dave's messages", |w| from_dave.iter().all(|seq| w.holds(*seq)))
        .await;

    // The removed members' own sends are refused, nothing of theirs is stored; the refusal
    // comes after everything the remaining members have received.
    for (watcher, removed_at) in [(&mut anna_socket, anna_seq), (&mut boris_socket, boris_seq)] {
        let client_id = format!("{}-after-removal", watcher.name);
        let refusal = watcher.send_refused(&chat_id.clone(), &client_id).await;
        assert_eq!(refusal.code, "chat_not_found", "{}: {refusal:?}", watcher.name);
        let later: Vec<u64> = watcher.seqs().into_iter().filter(|seq| *seq > removed_at).collect();
        assert!(
            later.is_empty(),
            "{} got seqs {later:?} after the removal at {removed_at}",
            watcher.name
        );
    }
    let stored = history(http, owner, &chat_id).await;
    assert_history_gap_free_from_created(&stored, owner);
    let total = stored.len() as u64;
    assert_eq!(
        total,
        *after.iter().max().unwrap(),
        "nothing of the removed members was stored"
    );

    // Carol and Dave hold everything; Dave's own messages came as acks.
    assert_eq!(carol_socket.seqs(), (1..=total).collect::<Vec<_>>());
    let mut dave_holds: Vec<u64> = dave_socket
        .seqs()
        .into_iter()
        .chain(from_dave.iter().copied())
        .collect();
    dave_holds.sort_unstable();
    assert_eq!(dave_holds, (1..=total).collect::<Vec<_>>());
    for message in &carol_socket.group {
        assert_eq!(message.id, stored[message.seq as usize - 1].id);
    }

    // Reconnected on the other node, the removed members are replayed nothing later either.
    for (watcher, node, removed_at, user) in [
        (anna_socket, &node_2, anna_seq, anna),
        (boris_socket, &node_1, boris_seq, boris),
    ] {
        watcher.close().await;
        let again = Watcher::connect(node, user, &chat_id).await;
        let later: Vec<u64> = again.seqs().into_iter().filter(|seq| *seq > removed_at).collect();
        assert!(
            later.is_empty(),
            "{}'s replay holds seqs {later:?} after {removed_at}",
            user.name
        );
        again.close().await;

        // History: up to and including the removal, nothing after.
        let readable = history(http, user, &chat_id).await;
        let last = readable.last().unwrap_or_else(|| panic!("{} reads nothing", user.name));
        assert_eq!(last.seq, removed_at, "{}: {readable:?}", user.name);
        assert_eq!(event_kind(last), Some("removed"));
        assert!(readable.iter().all(|message| message.seq <= removed_at));
        let path = format!("/messenger/messages?chat_id={chat_id}&offset={removed_at}&limit=100");
        let beyond = call(http, Method::GET, &path, &user.token, None).await;
        println!("{}: messages after the removal answered {}", user.name, beyond.status);
        match beyond.status {
            200 => assert_eq!(
                beyond.body["messages"],
                serde_json::json!([]),
                "{}: {}",
                user.name,
                beyond.body
            ),
            403 | 404 => {}
            other => panic!(
                "{}: messages after the removal answered {other}: {}",
                user.name, beyond.body
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// An outsider
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_can_neither_read_nor_write_nor_add_himself() {
    let app = TestApp::spawn(shared_servers(BINARY).await, 1).await;
    let http = &app.http;
    let users = sign_up_named(http, &["Owner", "Mia", "Oscar"], "outsider").await;
    let [owner, mia, oscar] = [&users[0], &users[1], &users[2]];
    let chat_id = http
        .create_group(&owner.token, "Members only", &ids(&[mia]))
        .await
        .unwrap();
    let node = app.app.node_url("node-1");
    let mut owner_socket = Watcher::connect(&node, owner, &chat_id).await;
    let secret = owner_socket.send_acked(&["a secret".to_owned()]).await[0];

    // HTTP: no history, no member list, no joining, no removing.
    let path = format!("/messenger/messages?chat_id={chat_id}");
    assert_refused(
        &call(http, Method::GET, &path, &oscar.token, None).await,
        404,
        "not_found",
        "history",
    );
    let path = format!("/messenger/chats/{chat_id}/members");
    assert_refused(
        &call(http, Method::GET, &path, &oscar.token, None).await,
        404,
        "not_found",
        "members",
    );
    let answer = add_member_raw(http, oscar, &chat_id, &oscar.id).await;
    assert_refused(&answer, 404, "not_found", "adding himself");
    let answer = remove_member_raw(http, oscar, &chat_id, &mia.id).await;
    assert_refused(&answer, 404, "not_found", "removing a member");
    let answer = remove_member_raw(http, oscar, &chat_id, &oscar.id).await;
    assert_refused(&answer, 404, "not_found", "leaving a group he is not in");
    let nowhere = uuid::Uuid::new_v4().to_string();
    let answer = add_member_raw(http, oscar, &nowhere, &oscar.id).await;
    assert_refused(&answer, 404, "not_found", "adding himself to no chat");
    let chats = http.chats(&oscar.token).await.unwrap();
    assert!(chats.chats.iter().all(|chat| chat.chat_id != chat_id), "{chats:?}");

    // Websocket: nothing replayed, a send refused, no cursor moved.
    let mut oscar_socket = Watcher::connect(&node, oscar, &chat_id).await;
    let refusal = oscar_socket.send_refused(&chat_id, "oscar-1").await;
    assert_eq!(refusal.code, "chat_not_found", "{refusal:?}");
    oscar_socket
        .socket
        .report(actions::RECEIVED, &chat_id, secret)
        .await
        .unwrap();
    oscar_socket
        .read_until("the cursor refusal", |w| w.errors.len() >= 2)
        .await;
    assert_eq!(
        oscar_socket.errors[1].code, "chat_not_found",
        "{:?}",
        oscar_socket.errors
    );

    // Something sent after all that does not reach him: his next answer comes first.
    let after = owner_socket.send_acked(&["still a secret".to_owned()]).await[0];
    let mut mia_socket = Watcher::connect(&node, mia, &chat_id).await;
    mia_socket.read_until("both messages", |w| w.holds(after)).await;
    let refusal = oscar_socket.send_refused(&chat_id, "oscar-2").await;
    assert_eq!(refusal.code, "chat_not_found");
    assert!(oscar_socket.group.is_empty(), "Oscar got {:?}", oscar_socket.group);
    assert!(oscar_socket.other_chats.is_empty(), "{:?}", oscar_socket.other_chats);

    // Nothing changed.
    assert_eq!(member_ids(http, owner, &chat_id).await, sorted_ids(&[owner, mia]));
    let stored = history(http, owner, &chat_id).await;
    assert_history_gap_free_from_created(&stored, owner);
    assert_eq!(stored.len() as u64, after, "Oscar stored nothing");
    assert!(stored.iter().all(|message| message.user_id != oscar.id));
    oscar_socket.close().await;
    owner_socket.close().await;
    mia_socket.close().await;
}

// ---------------------------------------------------------------------------------------
// Limits and permissions
// ---------------------------------------------------------------------------------------

/// With `--member-additions-per-minute 3` each user's bucket holds 3 additions and earns
/// one back every 20 s. Every create-group or add-member takes its members from it before
/// anything else is checked (refused requests too); a create with more members than the
/// bucket holds is let through when the bucket is full, which leaves it in debt. So each
/// step below is done by a user whose bucket it fits in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_limits_answer_with_clear_errors() {
    let mut args = MANY_USERS_ARGS.to_vec();
    args.extend([
        "--max-group-members",
        "5",
        "--max-groups-per-user",
        "2",
        "--member-additions-per-minute",
        "3",
    ]);
    let app = TestApp::spawn_with_args(shared_servers(BINARY).await, 1, &args).await;
    let http = &app.http;
    let names = [
        "Owen", "Pia", "Mona", "Mark", "Mila", "Max", "Mel", // the full group
        "Xena", "Olga", "Otto", "Yuri", // the group limit per user
        "Rita", "Omar", "Oleg", "Cleo", "Dina", "Erik", "Fred", // the addition rate
        "Tina", "Ursula", "Uma", // titles
    ];
    let users = sign_up_named(http, &names, "limits").await;
    let user = |name: &str| {
        let full_name = format!("{name}.limits");
        users.iter().find(|user| user.name == full_name).unwrap()
    };

    // Members per group: 5, the creator included.
    let (owen, pia) = (user("Owen"), user("Pia"));
    let (mona, mark, mila, max, mel) = (user("Mona"), user("Mark"), user("Mila"), user("Max"), user("Mel"));
    let answer = create_group_raw(http, owen, "Six", &ids(&[mona, mark, mila, max, mel])).await;
    assert_refused(&answer, 403, "limit_reached", "a group of six");
    let owens_chats = http.chats(&owen.token).await.unwrap();
    assert!(owens_chats.chats.is_empty(), "nothing was created: {owens_chats:?}");
    let full = http
        .create_group(&pia.token, "Five", &ids(&[mona, mark, mila, max]))
        .await
        .unwrap();
    let members = http.group_members(&mona.token, &full).await.unwrap();
    assert_eq!(members.members.len(), 5);
    assert_eq!(members.creator_id.as_deref(), Some(pia.id.as_str()));
    let answer = add_member_raw(http, mona, &full, &mel.id).await;
    assert_refused(&answer, 403, "limit_reached", "a sixth member");
    assert_eq!(member_ids(http, pia, &full).await.len(), 5, "Mel was not added");

    // Who may remove whom: only the creator removes others; anyone leaves.
    let answer = remove_member_raw(http, mona, &full, &mark.id).await;
    assert_refused(&answer, 403, "forbidden", "a member removing another");
    let left = http.remove_member(&mark.token, &full, &mark.id).await.unwrap();
    assert!(left.changed);
    let removed = http.remove_member(&pia.token, &full, &mila.id).await.unwrap();
    assert!(removed.changed);
    let answer = remove_member_raw(http, pia, &full, &mila.id).await;
    assert_refused(&answer, 404, "not_found", "removing a former member");
    assert_eq!(member_ids(http, pia, &full).await, sorted_ids(&[pia, mona, max]));
    let full_history = history(http, pia, &full).await;
    assert_history_gap_free_from_created(&full_history, pia);
    let event_at = |seq: u64| full_history[seq as usize - 1].clone();
    let left_event = event_at(left.seq);
    assert_eq!(
        (event_kind(&left_event), left_event.user_id.as_str()),
        (Some("left"), mark.id.as_str())
    );
    assert_eq!(left_event.event.as_ref().unwrap().subject_id, mark.id);
    let removed_event = event_at(removed.seq);
    assert_eq!(
        (event_kind(&removed_event), removed_event.user_id.as_str()),
        (Some("removed"), pia.id.as_str())
    );
    assert_eq!(removed_event.event.as_ref().unwrap().subject_id, mila.id);
    // Room again: Mel may join now.
    let joined = http.add_member(&mona.token, &full, &mel.id).await.unwrap();
    assert!(joined.changed);
    assert_eq!(joined.seq, removed.seq + 1);

    // A one-to-one chat takes no members.
    let direct = http.create_chat(&max.token, &mona.id).await.unwrap();
    let answer = add_member_raw(http, max, &direct, &owen.id).await;
    assert_refused(&answer, 400, "invalid_parameter", "adding to a one-to-one chat");
    let direct_members = http.group_members(&max.token, &direct).await.unwrap();
    assert_eq!(direct_members.kind, "direct");
    assert_eq!(direct_members.members.len(), 2);

    // Groups per user: 2.
    let (xena, olga, otto, yuri) = (user("Xena"), user("Olga"), user("Otto"), user("Yuri"));
    for title in ["First", "Second"] {
        http.create_group(&olga.token, title, &ids(&[xena])).await.unwrap();
    }
    let xenas_chats = http.chats(&xena.token).await.unwrap().chats;
    assert_eq!(xenas_chats.len(), 2, "{xenas_chats:?}");
    for chat in &xenas_chats {
        assert_eq!(chat.kind, "group");
        assert_eq!(chat.member_count, 2);
        assert!(chat.participants.is_empty(), "a group lists no participants: {chat:?}");
        assert!(matches!(chat.title.as_deref(), Some("First" | "Second")), "{chat:?}");
    }
    let answer = create_group_raw(http, xena, "Third", &ids(&[yuri])).await;
    assert_refused(&answer, 403, "limit_reached", "creating a third group");
    let answer = create_group_raw(http, olga, "Third", &ids(&[yuri])).await;
    assert_refused(&answer, 403, "limit_reached", "the creator's third group");
    let ottos = http.create_group(&otto.token, "Otto's", &ids(&[yuri])).await.unwrap();
    let answer = add_member_raw(http, otto, &ottos, &xena.id).await;
    assert_refused(&answer, 403, "limit_reached", "adding a user in two groups");
    let answer = create_group_raw(http, otto, "With Xena", &ids(&[xena])).await;
    assert_refused(&answer, 403, "limit_reached", "a new group with a user in two groups");
    assert_eq!(http.chats(&xena.token).await.unwrap().chats.len(), 2);
    assert_eq!(member_ids(http, otto, &ottos).await, sorted_ids(&[otto, yuri]));
    assert_eq!(http.chats(&otto.token).await.unwrap().chats.len(), 1);
    assert_eq!(http.chats(&yuri.token).await.unwrap().chats.len(), 1);

    // Additions per user and minute: 3. Rita only adds; she created nothing.
    let (rita, omar, oleg) = (user("Rita"), user("Omar"), user("Oleg"));
    let (cleo, dina, erik, fred) = (user("Cleo"), user("Dina"), user("Erik"), user("Fred"));
    let first = http.create_group(&omar.token, "Omar's", &ids(&[rita])).await.unwrap();
    let second = http.create_group(&oleg.token, "Oleg's", &ids(&[rita])).await.unwrap();
    let added = http.add_member(&rita.token, &first, &cleo.id).await.unwrap();
    assert_eq!(
        (added.chat_id.as_str(), added.user_id.as_str()),
        (first.as_str(), cleo.id.as_str())
    );
    assert!(added.changed);
    assert_eq!(added.seq, 2, "after the created event");
    let added = http.add_member(&rita.token, &first, &dina.id).await.unwrap();
    assert_eq!((added.changed, added.seq), (true, 3));
    let added = http.add_member(&rita.token, &second, &erik.id).await.unwrap();
    assert_eq!((added.changed, added.seq), (true, 2));
    let answer = add_member_raw(http, rita, &second, &fred.id).await;
    assert_refused(&answer, 429, "rate_limited", "a fourth addition within the minute");
    let retry_after = answer.retry_after_seconds;
    assert!(
        retry_after.is_some_and(|seconds| (1..=60).contains(&seconds)),
        "Retry-After: {retry_after:?}"
    );
    assert_eq!(
        member_ids(http, oleg, &second).await,
        sorted_ids(&[oleg, rita, erik]),
        "Fred was not added"
    );
    // Another member adding someone already there: nothing changes, the last seq.
    let again = http.add_member(&omar.token, &first, &cleo.id).await.unwrap();
    assert_eq!((again.changed, again.seq), (false, 3));
    let first_history = history(http, omar, &first).await;
    assert_history_gap_free_from_created(&first_history, omar);
    assert_eq!(first_history.len(), 3);
    assert_eq!(event_kind(&first_history[1]), Some("added"));
    assert_eq!(first_history[1].user_id, rita.id, "Rita added Cleo");
    assert_eq!(first_history[1].event.as_ref().unwrap().subject_id, cleo.id);

    // Titles: 1 to 200 characters after trimming; members must exist.
    let (tina, ursula, uma) = (user("Tina"), user("Ursula"), user("Uma"));
    for title in ["".to_owned(), "   ".to_owned(), "x".repeat(201)] {
        let answer = create_group_raw(http, tina, &title, &ids(&[uma])).await;
        assert_refused(&answer, 400, "invalid_parameter", &format!("title {title:?}"));
    }
    assert!(http.chats(&tina.token).await.unwrap().chats.is_empty());
    let answer = create_group_raw(http, ursula, "Ghosts", &[uuid::Uuid::new_v4().to_string()]).await;
    assert_refused(&answer, 404, "not_found", "an unknown member");
    assert!(http.chats(&ursula.token).await.unwrap().chats.is_empty());
    let longest = "y".repeat(200);
    let titled = http
        .create_group(&ursula.token, &format!("  {longest}  "), &ids(&[uma]))
        .await
        .unwrap();
    let members = http.group_members(&uma.token, &titled).await.unwrap();
    assert_eq!(members.title.as_deref(), Some(longest.as_str()), "the title is trimmed");
    assert_eq!(members.kind, "group");
    assert_eq!(members.creator_id.as_deref(), Some(ursula.id.as_str()));
}
