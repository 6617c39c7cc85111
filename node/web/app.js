// Parley's web chat page: a plain client of the public API (the HTTP endpoints and the
// messenger websocket), with no build step and nothing loaded from elsewhere.
//
// It keeps the same promises as the reference client (simulations/client/src/chat_client.rs):
// - every message is shown once, in seq order, however often the server delivers it
//   (a reconnect replays everything above the `received` cursor);
// - `received` is reported up to the highest seq below which nothing is missing, so a
//   reconnect never skips a message; `read` as the open chat is seen;
// - a sent message stays queued until its ack and is written again, with the same
//   client id, after each reconnect's `replay-complete` (the server stores it once);
// - a lost socket is reopened through the same URL (nginx picks a live node) after an
//   exponential backoff with jitter;
// - a frozen node is noticed too, though it never closes the socket: see the heartbeat
//   constants below.
"use strict";

const SESSION_STORAGE_KEY = "parley.session";
const HISTORY_PAGE_SIZE = 200;
const RECONNECT_INITIAL_DELAY_MS = 100;
const RECONNECT_MAXIMUM_DELAY_MS = 5000;
// The server refused a message for a passing reason: nothing was stored, try again.
// Refusals that pass: the messages stay in the outbox and are written again later
// (`rate_limited` says when, in retry_after_ms; stored once whatever happens).
const PASSING_REFUSAL_CODES = ["database_unavailable", "internal", "rate_limited"];
const REFUSED_SEND_RETRY_MS = 1000;
const CHAT_LIST_RETRY_MS = 200;
const CHAT_LIST_RETRY_LIMIT = 10;

// Heartbeat. A frozen node (a stopped process, a stuck runtime) keeps its sockets open
// and sends nothing, and a page cannot send websocket pings nor see the server's (the
// browser answers them unseen). So while its socket is open the page sends the
// `heartbeat` action every HEARTBEAT_INTERVAL_MS, which a live node answers at once.
// When nothing at all (an answer, a delivery, anything) has arrived for
// SILENCE_TIMEOUT_MS, with a heartbeat unanswered for at least HEARTBEAT_ANSWER_GRACE_MS,
// the page drops the socket and reconnects through the usual path (resume with replay,
// duplicates dropped by id). A frozen node is thus noticed about SILENCE_TIMEOUT_MS after
// its last frame; the grace only matters in a background tab, whose timers the browser
// may slow down to once a minute: a heartbeat sent late must get its chance to be
// answered before the silence is held against the node.
const HEARTBEAT_INTERVAL_MS = 4000;
const SILENCE_TIMEOUT_MS = 10000;
const HEARTBEAT_ANSWER_GRACE_MS = 2000;
// A socket not open within this long is abandoned and another one opened: a frozen
// node's kernel still completes the TCP handshake, so the upgrade may never be answered
// (and nginx would wait for it as long as for any websocket). The next attempt usually
// lands on another node. Worst case to move off a frozen node: SILENCE_TIMEOUT_MS, plus
// CONNECT_TIMEOUT_MS for each new attempt that lands on it again.
const CONNECT_TIMEOUT_MS = 5000;
// How often the two timeouts above are checked and a heartbeat is considered.
const CONNECTION_CHECK_MS = 1000;
const MARK_LABELS = { sending: "sending…", created: "✓ sent", received: "✓✓ received", read: "✓✓ read", failed: "not sent" };

const byId = (id) => document.getElementById(id);

const state = {
  session: null, // {access_token, refresh_token, user_id, email, name, surname}
  renewingSocketToken: false, // a fresh access token is on its way over the socket
  chats: new Map(), // chat_id -> chat (see newChat)
  openChatId: null,
  onlineUsers: new Set(),
  outbox: [], // {client_id, chat_id, text, written, failed}
  clientIdPrefix: `web-${Math.random().toString(36).slice(2, 10)}`,
  nextClientNumber: 1,
  socket: null,
  live: false,
  connectionNumber: 0,
  consecutiveFailures: 0,
  reconnectTimer: null,
  connectionCheckTimer: null, // one interval timer while signed in: heartbeats and timeouts
  socketCreatedAt: 0,
  lastHeardAt: 0, // anything at all from the current socket's server
  lastHeartbeatSentAt: 0,
  unansweredHeartbeatSince: null, // the first heartbeat sent since lastHeardAt
  httpNode: "",
  reportTimer: null,
  foundUserId: null,
  formerGroups: new Set(), // groups this user left or was removed from: late frames are ignored
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function newChat(chatId) {
  return {
    chat_id: chatId,
    kind: null, // "direct" or "group" once listed
    title: null,
    memberCount: 0,
    members: new Map(), // groups: user_id -> "Name Surname", from GET .../members
    membersLoaded: false,
    receipt: null, // groups: the newest summary {seq, received_by, read_by, members, status}
    participants: [],
    listedLastSeq: 0, // last_seq when the chat list was fetched: unread counted up to it
    unread: 0,
    readUpTo: 0, // the highest seq this page reported read, on any connection
    messages: new Map(), // seq -> message: one entry per seq, so duplicates never show
    contiguousTop: 0, // every seq up to here is held (or was received before)
    reportedReceived: 0, // on the current connection
    reportedRead: 0,
    companionReceived: 0,
    companionRead: 0,
  };
}

// ---- errors, shown in words -------------------------------------------------------

function showError(message) {
  byId("error-text").textContent = message;
  byId("error-banner").hidden = false;
  console.warn("parley:", message);
}

function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

// ---- HTTP ---------------------------------------------------------------------------

async function api(method, path, body, { authenticated = true, retried = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (authenticated) headers.Authorization = state.session.access_token;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "network", `the server could not be reached (${describe(error)})`);
  }
  const node = response.headers.get("x-parley-node");
  if (node) {
    state.httpNode = node;
    renderStatusLine();
  }
  if (response.status === 401 && authenticated && !retried) {
    await refreshTokens();
    return api(method, path, body, { authenticated, retried: true });
  }
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch (_) {
    answer = null; // not JSON: the status line below still says what happened
  }
  if (!response.ok) {
    const message = answer && answer.message ? answer.message : `the server answered ${response.status} ${response.statusText}`;
    throw new ApiError(response.status, answer && answer.code ? answer.code : `http_${response.status}`, message);
  }
  return answer;
}

// Access tokens expire: trade the refresh token for a new pair. One trade at a time,
// since presenting a spent refresh token twice revokes the whole sign-in.
let refreshInFlight = null;
function refreshTokens() {
  if (!refreshInFlight) {
    refreshInFlight = (async () => {
      try {
        const pair = await api("PUT", "/auth/token", { refresh_token: state.session.refresh_token }, { authenticated: false });
        state.session.access_token = pair.access_token;
        state.session.refresh_token = pair.refresh_token;
        saveSession();
      } catch (error) {
        if (error.status === 401) signOutLocally("Your sign-in has expired; please sign in again.");
        throw error;
      } finally {
        refreshInFlight = null;
      }
    })();
  }
  return refreshInFlight;
}

function saveSession() {
  sessionStorage.setItem(SESSION_STORAGE_KEY, JSON.stringify(state.session));
}

// ---- signing up, in and out ---------------------------------------------------------

async function signUp(event) {
  event.preventDefault();
  const field = (name) => byId(`sign-up-${name}`).value.trim();
  const body = {
    email: field("email"),
    password: byId("sign-up-password").value,
    name: field("name"),
    surname: field("surname"),
    birthday: `${field("birthday")}T00:00:00+00:00`,
    sex: field("sex"),
    city: field("city"),
    interests: field("interests"),
  };
  try {
    await api("POST", "/auth/sign-up", body, { authenticated: false });
    byId("sign-up-form").reset();
    byId("sign-in-email").value = body.email;
    byId("auth-notice").textContent = `Account created for ${body.email}. Sign in with your password.`;
  } catch (error) {
    showError(`Could not create the account: ${describe(error)}`);
  }
}

async function signIn(event) {
  event.preventDefault();
  const email = byId("sign-in-email").value.trim();
  try {
    const pair = await api("POST", "/auth/sign-in", { email, password: byId("sign-in-password").value }, { authenticated: false });
    state.session = { access_token: pair.access_token, refresh_token: pair.refresh_token };
    const profile = await api("GET", "/auth/user/get-by-token");
    Object.assign(state.session, { user_id: profile.user_id, email: profile.email, name: profile.name, surname: profile.surname });
    saveSession();
    byId("sign-in-form").reset();
    enterChatScreen();
  } catch (error) {
    state.session = null;
    showError(`Could not sign in: ${describe(error)}`);
  }
}

async function signOut() {
  try {
    await api("POST", "/auth/sign-out", { refresh_token: state.session.refresh_token }, { authenticated: false });
  } catch (error) {
    showError(`The server did not confirm the sign-out: ${describe(error)}`);
  }
  signOutLocally("Signed out.");
}

function signOutLocally(notice) {
  sessionStorage.removeItem(SESSION_STORAGE_KEY);
  state.session = null;
  clearTimeout(state.reconnectTimer);
  clearTimeout(chatListRetryTimer);
  clearInterval(state.connectionCheckTimer);
  state.connectionCheckTimer = null;
  const socket = state.socket;
  state.socket = null;
  state.live = false;
  if (socket) socket.close(1000, "signed out");
  Object.assign(state, {
    chats: new Map(),
    openChatId: null,
    onlineUsers: new Set(),
    outbox: [],
    foundUserId: null,
    formerGroups: new Set(),
  });
  byId("auth-notice").textContent = notice;
  byId("chat-screen").hidden = true;
  byId("auth-screen").hidden = false;
  byId("sign-out-button").hidden = true;
  byId("signed-in-as").textContent = "";
  renderStatusLine();
}

function enterChatScreen() {
  byId("auth-screen").hidden = true;
  byId("chat-screen").hidden = false;
  byId("sign-out-button").hidden = false;
  byId("signed-in-as").textContent = `${state.session.name} ${state.session.surname} (${state.session.email})`;
  renderChatList();
  renderConversation();
  connect();
}

// ---- chats and history over HTTP ----------------------------------------------------

function companionOf(chat) {
  return chat.participants.find((participant) => participant.user_id !== state.session.user_id) || null;
}

function isGroup(chat) {
  return chat.kind === "group";
}

function chatTitle(chat) {
  if (isGroup(chat)) return `${chat.title} (${chat.memberCount})`;
  const companion = companionOf(chat);
  return companion ? `${companion.name} ${companion.surname}` : "(loading…)";
}

let chatListRetries = 0;
let chatListRetryTimer = null;

async function loadChats() {
  const answer = await api("GET", "/messenger/chats");
  for (const summary of answer.chats) {
    let chat = state.chats.get(summary.chat_id);
    if (!chat) {
      chat = newChat(summary.chat_id);
      state.chats.set(summary.chat_id, chat);
    }
    chat.participants = summary.participants;
    chat.kind = summary.kind || "direct";
    chat.title = summary.title;
    chat.memberCount = summary.member_count;
    chat.listedLastSeq = summary.last_seq;
    // The list may come from a replica behind what this page already holds or has read:
    // add what the page holds beyond it, and drop what the page read.
    const readByThisPage = chat.readUpTo >= summary.last_seq;
    chat.unread = (readByThisPage ? 0 : summary.unread) + heldUnreadAbove(chat, summary.last_seq);
    // Who is online now; `presence` frames tell the changes from here on.
    for (const participant of summary.participants) {
      if (participant.user_id === state.session.user_id) continue;
      if (participant.online) state.onlineUsers.add(participant.user_id);
      else state.onlineUsers.delete(participant.user_id);
    }
  }
  renderChatList();
  renderConversation();
  // A chat created a moment ago may not have reached the replica that answered yet.
  const unlisted = [...state.chats.values()].some((chat) => chat.kind === null);
  if (unlisted && chatListRetries < CHAT_LIST_RETRY_LIMIT) {
    chatListRetries += 1;
    clearTimeout(chatListRetryTimer);
    chatListRetryTimer = setTimeout(
      () => loadChats().catch((error) => showError(`Could not load the chats: ${describe(error)}`)),
      CHAT_LIST_RETRY_MS * chatListRetries,
    );
  } else if (!unlisted) {
    chatListRetries = 0;
  }
}

async function loadHistory(chat) {
  const offset = Math.max(0, chat.listedLastSeq - HISTORY_PAGE_SIZE);
  const query = `chat_id=${encodeURIComponent(chat.chat_id)}&offset=${offset}&limit=${HISTORY_PAGE_SIZE}`;
  const page = await api("GET", `/messenger/messages?${query}`);
  for (const message of page.messages) {
    acceptMessage(chat, message);
    if (message.user_id === state.session.user_id) {
      // The history knows what the companion did while this page was not listening.
      if (message.status === "read") chat.companionRead = Math.max(chat.companionRead, message.seq);
      if (message.status !== "created") chat.companionReceived = Math.max(chat.companionReceived, message.seq);
    }
  }
  // The history is gap-free: everything up to its last message exists and is shown.
  if (page.messages.length > 0) raiseContiguousTop(chat, page.messages[page.messages.length - 1].seq);
  renderConversation();
  scheduleReports();
}

// A chat this page has just heard of: listed with its participants by the next loadChats.
function ensureChat(chatId) {
  if (!state.chats.has(chatId)) state.chats.set(chatId, newChat(chatId));
  return state.chats.get(chatId);
}

// A group's members with their names, for the senders' names and the member bar.
async function loadMembers(chat) {
  const answer = await api("GET", `/messenger/chats/${encodeURIComponent(chat.chat_id)}/members`);
  chat.members = new Map(answer.members.map((member) => [member.user_id, `${member.name} ${member.surname}`]));
  chat.membersLoaded = true;
  chat.memberCount = answer.members.length;
  chat.creatorId = answer.creator_id;
  renderChatList();
  if (chat.chat_id === state.openChatId) renderConversation();
}

async function openChat(chatId) {
  ensureChat(chatId);
  state.openChatId = chatId;
  renderChatList();
  renderConversation();
  try {
    const chat = state.chats.get(chatId);
    if (isGroup(chat)) await loadMembers(chat);
    await loadHistory(chat);
  } catch (error) {
    showError(`Could not load the messages: ${describe(error)}`);
  }
  byId("message-text").focus();
}

async function findUser(event) {
  event.preventDefault();
  const email = byId("find-email").value.trim();
  byId("find-result").hidden = true;
  try {
    const answer = await api("GET", `/auth/user/get-by-email?email=${encodeURIComponent(email)}`);
    if (answer.user_id === state.session.user_id) {
      showError("That is your own email: find someone else to chat with.");
      return;
    }
    state.foundUserId = answer.user_id;
    byId("find-result-text").textContent = `Found ${email}`;
    byId("find-result").hidden = false;
  } catch (error) {
    showError(`Could not find ${email}: ${describe(error)}`);
  }
}

async function startChat() {
  try {
    const answer = await api("POST", "/messenger/create-chat", { companion_id: state.foundUserId });
    state.foundUserId = null;
    byId("find-result").hidden = true;
    byId("find-form").reset();
    ensureChat(answer.chat_id);
    await loadChats();
    await openChat(answer.chat_id);
  } catch (error) {
    showError(`Could not start the chat: ${describe(error)}`);
  }
}

async function createGroup(event) {
  event.preventDefault();
  const title = byId("group-title").value.trim();
  // The person just found, if any, is the first member besides the creator.
  const memberIds = state.foundUserId ? [state.foundUserId] : [];
  try {
    const answer = await api("POST", "/messenger/create-group", { title, member_ids: memberIds });
    state.foundUserId = null;
    byId("find-result").hidden = true;
    byId("group-form").reset();
    ensureChat(answer.chat_id);
    await loadChats();
    await openChat(answer.chat_id);
  } catch (error) {
    showError(`Could not create the group: ${describe(error)}`);
  }
}

async function addMember(event) {
  event.preventDefault();
  const chat = state.openChatId ? state.chats.get(state.openChatId) : null;
  if (!chat) return;
  const email = byId("add-member-email").value.trim();
  try {
    const found = await api("GET", `/auth/user/get-by-email?email=${encodeURIComponent(email)}`);
    await api("POST", `/messenger/chats/${encodeURIComponent(chat.chat_id)}/members`, { user_id: found.user_id });
    byId("add-member-form").reset();
    await loadMembers(chat);
  } catch (error) {
    showError(`Could not add ${email}: ${describe(error)}`);
  }
}

async function leaveGroup() {
  const chat = state.openChatId ? state.chats.get(state.openChatId) : null;
  if (!chat) return;
  const path = `/messenger/chats/${encodeURIComponent(chat.chat_id)}/members/${encodeURIComponent(state.session.user_id)}`;
  try {
    await api("DELETE", path);
    forgetGroup(chat.chat_id);
  } catch (error) {
    showError(`Could not leave the group: ${describe(error)}`);
  }
}

// Out of a group (left, or removed): gone from the list; its own late event, which may
// arrive before or after the DELETE's answer, must not bring it back.
function forgetGroup(chatId) {
  state.formerGroups.add(chatId);
  state.chats.delete(chatId);
  if (state.openChatId === chatId) state.openChatId = null;
  renderChatList();
  renderConversation();
}

// What a membership event in `chat` means for this page; false when the page is no
// longer in the group.
function applyMembershipEvent(chat, event) {
  const aboutMe = event.subject_id === state.session.user_id;
  if (aboutMe && (event.kind === "left" || event.kind === "removed")) {
    forgetGroup(chat.chat_id);
    return false;
  }
  if (!chat.membersLoaded) {
    // The list's member count comes from the server: ask again.
    loadChats().catch((error) => showError(`Could not load the chats: ${describe(error)}`));
    return true;
  }
  // By user id, so an event the last member list already showed changes nothing.
  if (event.kind === "added" && !chat.members.has(event.subject_id)) chat.members.set(event.subject_id, "…");
  if (event.kind === "left" || event.kind === "removed") chat.members.delete(event.subject_id);
  chat.memberCount = chat.members.size;
  return true;
}

// ---- the websocket ------------------------------------------------------------------

async function connect() {
  clearTimeout(state.reconnectTimer);
  if (!state.session) return;
  state.live = false;
  renderStatusLine("connecting");
  try {
    // Fresh unread counts and last seqs first; this also renews an expired access token.
    await loadChats();
  } catch (error) {
    if (state.session) scheduleReconnect(`could not load the chats: ${describe(error)}`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = encodeURIComponent(state.session.access_token);
  const socket = new WebSocket(`${scheme}//${location.host}/messenger/ws?token=${token}`);
  state.socket = socket;
  state.renewingSocketToken = false;
  state.connectionNumber += 1;
  state.socketCreatedAt = Date.now();
  state.lastHeartbeatSentAt = 0;
  state.unansweredHeartbeatSince = null;
  if (state.connectionCheckTimer === null) state.connectionCheckTimer = setInterval(checkConnection, CONNECTION_CHECK_MS);
  const replayedChats = new Set();
  for (const chat of state.chats.values()) {
    chat.reportedReceived = 0; // a report on the old socket may have been lost with it
    chat.reportedRead = 0;
  }
  socket.onopen = () => {
    if (socket !== state.socket) return;
    heard();
    renderStatusLine("replaying");
    sendHeartbeat();
  };
  socket.onmessage = (event) => {
    if (socket !== state.socket) return;
    heard();
    onFrame(event.data, replayedChats);
  };
  socket.onclose = (event) => {
    if (socket !== state.socket) return;
    state.socket = null;
    state.live = false;
    if (event.code === CLOSE_SIGNED_OUT) {
      signOutLocally("This device was signed out; please sign in again.");
      return;
    }
    if (event.code === CLOSE_TOKEN_EXPIRED && state.session) {
      // Renewing over the socket did not happen in time: a fresh pair first, then back.
      refreshTokens().then(() => scheduleReconnect("the access token expired"), () => {});
      return;
    }
    const reason = event.code === 1006 ? "the connection was lost" : `closed with ${event.code} ${event.reason}`.trim();
    if (state.session) scheduleReconnect(reason);
  };
}

// The server closes a socket when its access token expires (4401) unless a fresh one
// comes over it, and at once when the device signs out anywhere (4403).
const CLOSE_TOKEN_EXPIRED = 4401;
const CLOSE_SIGNED_OUT = 4403;

// Seconds since the epoch at which a JWT was issued and expires (read without checking:
// only to schedule the renewal; the server checks).
function tokenTimes(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    return { issuedAt: claims.iat, expiresAt: claims.exp };
  } catch (_) {
    return null;
  }
}

// At two thirds of the access token's lifetime: a fresh pair, and the new access token
// over the open socket, which then lives on it.
function renewSocketTokenWhenDue(socket) {
  if (state.renewingSocketToken || !state.session) return;
  const times = tokenTimes(state.session.access_token);
  if (!times) return;
  const renewAt = times.issuedAt + ((times.expiresAt - times.issuedAt) * 2) / 3;
  if (Date.now() / 1000 < renewAt) return;
  state.renewingSocketToken = true;
  refreshTokens().then(
    () => {
      if (socket !== state.socket || !sendFrame("renew", { access_token: state.session.access_token })) {
        state.renewingSocketToken = false;
      }
    },
    () => {
      state.renewingSocketToken = false;
    },
  );
}

function heard() {
  state.lastHeardAt = Date.now();
  state.unansweredHeartbeatSince = null;
}

function sendHeartbeat() {
  if (!sendFrame("heartbeat", { sent_at_ms: Date.now() })) return;
  state.lastHeartbeatSentAt = Date.now();
  if (state.unansweredHeartbeatSince === null) state.unansweredHeartbeatSince = state.lastHeartbeatSentAt;
}

// Runs every CONNECTION_CHECK_MS while signed in: gives up on a socket that does not open
// or whose server has gone silent, and sends the heartbeats.
function checkConnection() {
  const socket = state.socket;
  if (!socket) return;
  const now = Date.now();
  if (socket.readyState === WebSocket.CONNECTING) {
    if (now - state.socketCreatedAt >= CONNECT_TIMEOUT_MS) abandonSocket(`not connected within ${CONNECT_TIMEOUT_MS / 1000} s`);
    return;
  }
  if (socket.readyState !== WebSocket.OPEN) return;
  const silentFor = now - state.lastHeardAt;
  const unanswered = state.unansweredHeartbeatSince !== null && now - state.unansweredHeartbeatSince >= HEARTBEAT_ANSWER_GRACE_MS;
  if (unanswered && silentFor >= SILENCE_TIMEOUT_MS) {
    abandonSocket(`nothing from the server for ${Math.round(silentFor / 1000)} s`);
    return;
  }
  if (now - state.lastHeartbeatSentAt >= HEARTBEAT_INTERVAL_MS) sendHeartbeat();
  renewSocketTokenWhenDue(socket);
}

// Drops the current socket without waiting for its close, which a frozen node never
// answers (the browser would wait for it), and reconnects at once through the usual
// path. Late events of the dropped socket are ignored: they are not state.socket's.
function abandonSocket(reason) {
  const socket = state.socket;
  state.socket = null;
  state.live = false;
  socket.close();
  if (state.session) scheduleReconnect(reason);
}

function scheduleReconnect(reason) {
  const base = Math.min(RECONNECT_MAXIMUM_DELAY_MS, RECONNECT_INITIAL_DELAY_MS * 2 ** Math.min(state.consecutiveFailures, 10));
  const delay = Math.round(base * (0.5 + Math.random())); // jitter: not every page at once
  state.consecutiveFailures += 1;
  renderStatusLine("offline", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.consecutiveFailures})`);
  state.reconnectTimer = setTimeout(connect, delay);
}

function sendFrame(action, payload) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
  state.socket.send(JSON.stringify({ topic: "messenger", action, payload: JSON.stringify(payload) }));
  return true;
}

function onFrame(text, replayedChats) {
  let envelope;
  let payload;
  try {
    envelope = JSON.parse(text);
    payload = JSON.parse(envelope.payload);
  } catch (error) {
    showError(`The server sent a frame this page cannot read: ${describe(error)}`);
    return;
  }
  switch (envelope.action) {
    case "send-message":
      return onDelivery(payload, replayedChats);
    case "ack":
      return onAck(payload);
    case "status":
      return onStatus(payload);
    case "presence":
      return onPresence(payload);
    case "replay-complete":
      return onReplayComplete(payload);
    case "error":
      return onServerError(payload);
    case "heartbeat":
      return; // being heard was the point (see heard())
    case "renewed":
      state.renewingSocketToken = false;
      return;
    default:
      console.info("parley: ignoring unknown action", envelope.action);
  }
}

function onDelivery(delivery, replayedChats) {
  if (state.formerGroups.has(delivery.chat_id)) {
    // Only being added again brings a former group back.
    const addedBack = delivery.messages.some(
      (message) => message.event && message.event.kind === "added" && message.event.subject_id === state.session.user_id,
    );
    if (!addedBack) return;
    state.formerGroups.delete(delivery.chat_id);
  }
  let chat = state.chats.get(delivery.chat_id);
  if (!chat) {
    // A chat someone else started: learn its participants.
    chat = ensureChat(delivery.chat_id);
    loadChats().catch((error) => showError(`Could not load the chats: ${describe(error)}`));
  }
  for (const message of delivery.messages) {
    if (!state.live && !replayedChats.has(chat.chat_id)) {
      // The replay starts right above the server's `received` cursor: everything below
      // it reached this user before.
      replayedChats.add(chat.chat_id);
      raiseContiguousTop(chat, message.seq - 1);
    }
    const isNew = acceptMessage(chat, message);
    if (isNew && message.event && !applyMembershipEvent(chat, message.event)) return;
    // Someone joined or left, or a sender this page has no name for: fresh members.
    const unknownSender = isGroup(chat) && !chat.members.has(message.user_id);
    if (chat.chat_id === state.openChatId && (message.event || unknownSender)) {
      loadMembers(chat).catch((error) => showError(`Could not load the members: ${describe(error)}`));
    }
  }
  renderChatList();
  if (chat.chat_id === state.openChatId) renderConversation();
  scheduleReports();
}

// Messages of others held above `seq` that this page has not reported read.
function heldUnreadAbove(chat, seq) {
  let count = 0;
  for (const message of chat.messages.values()) {
    const unreadByMe = message.seq > seq && message.seq > chat.readUpTo && !message.event;
    if (message.user_id !== state.session.user_id && unreadByMe) count += 1;
  }
  return count;
}

// Holds a message unless its seq is already held. Returns whether it was new.
function acceptMessage(chat, message) {
  if (chat.messages.has(message.seq)) return false;
  if (message.client_id) {
    // Our own message coming back (a replay after its ack was lost): it is stored.
    state.outbox = state.outbox.filter((item) => item.client_id !== message.client_id);
  }
  chat.messages.set(message.seq, {
    id: message.id,
    seq: message.seq,
    user_id: message.user_id,
    text: message.text,
    create_time: message.create_time,
    event: message.event || null,
    status: message.status || "created", // a history page's status: how far it got then
  });
  const countedByTheList = message.seq <= chat.listedLastSeq || message.seq <= chat.readUpTo;
  // Membership events are not unread messages (the server does not count them either).
  if (message.user_id !== state.session.user_id && !countedByTheList && !message.event) chat.unread += 1;
  raiseContiguousTop(chat, chat.contiguousTop);
  return true;
}

function raiseContiguousTop(chat, atLeast) {
  chat.contiguousTop = Math.max(chat.contiguousTop, atLeast);
  while (chat.messages.has(chat.contiguousTop + 1)) chat.contiguousTop += 1;
}

function onAck(ackPayload) {
  const chat = state.chats.get(ackPayload.chat_id);
  for (const ack of ackPayload.acks) {
    const item = state.outbox.find((queued) => queued.client_id === ack.client_id);
    if (!item || !chat) continue; // already known from a replay
    state.outbox = state.outbox.filter((queued) => queued !== item);
    acceptMessage(chat, { ...ack, user_id: state.session.user_id, text: item.text, client_id: undefined });
  }
  if (chat) renderConversation();
  scheduleReports();
}

function onStatus(status) {
  const chat = state.chats.get(status.chat_id);
  if (!chat) return;
  if (status.members !== undefined) {
    // A group's summary of how far this user's newest message got.
    if (!chat.receipt || status.seq >= chat.receipt.seq) chat.receipt = status;
  } else if (status.user_id === state.session.user_id) {
    // Another page of ours read this chat.
    if (status.status === "read") {
      chat.readUpTo = Math.max(chat.readUpTo, status.seq);
      chat.unread = Math.min(chat.unread, heldUnreadAbove(chat, status.seq));
    }
  } else {
    chat.companionReceived = Math.max(chat.companionReceived, status.seq);
    if (status.status === "read") chat.companionRead = Math.max(chat.companionRead, status.seq);
  }
  renderChatList();
  if (chat.chat_id === state.openChatId) renderConversation();
}

function onPresence(presence) {
  if (presence.online) state.onlineUsers.add(presence.user_id);
  else state.onlineUsers.delete(presence.user_id);
  renderChatList();
  renderConversation();
}

function onReplayComplete(complete) {
  state.live = true;
  state.consecutiveFailures = 0;
  state.liveNode = complete.node;
  state.lastReplayed = complete.replayed;
  renderStatusLine("live");
  // Chats without a replay had nothing above the cursor when the list was fetched.
  for (const chat of state.chats.values()) raiseContiguousTop(chat, chat.listedLastSeq);
  // Receipts sent while this page was away are in the history, not in a frame.
  if (state.openChatId) {
    loadHistory(state.chats.get(state.openChatId)).catch((error) => showError(`Could not reload the messages: ${describe(error)}`));
  }
  for (const item of state.outbox) item.written = false;
  writeOutbox();
  scheduleReports();
}

function onServerError(error) {
  const refused = state.outbox.filter((item) => (error.client_ids || []).includes(item.client_id));
  if (refused.length === 0) {
    showError(`The server reported an error: ${error.message} (${error.code})`);
    return;
  }
  if (PASSING_REFUSAL_CODES.includes(error.code)) {
    for (const item of refused) item.written = false;
    showError(`A message could not be stored yet (${error.message}); retrying.`);
    setTimeout(writeOutbox, Math.max(REFUSED_SEND_RETRY_MS, error.retry_after_ms || 0));
  } else {
    for (const item of refused) item.failed = error.message;
    state.outbox = state.outbox.filter((item) => !item.failed);
    showError(`Message not sent: ${error.message}`);
  }
  renderConversation();
}

// ---- sending and receipts -----------------------------------------------------------

function sendMessage(event) {
  event.preventDefault();
  const input = byId("message-text");
  const text = input.value;
  if (!text.trim() || !state.openChatId) return;
  const clientId = `${state.clientIdPrefix}-${state.nextClientNumber++}`;
  state.outbox.push({ client_id: clientId, chat_id: state.openChatId, text, written: false });
  input.value = "";
  renderConversation();
  writeOutbox();
}

// Writes queued messages once the connection is live: resends must follow the replay.
function writeOutbox() {
  if (!state.live) return;
  for (const item of state.outbox) {
    if (item.written) continue;
    const message = { text: item.text, status: "created", client_id: item.client_id };
    if (!sendFrame("send-message", { chat_id: item.chat_id, messages: [message] })) return;
    item.written = true;
  }
}

function scheduleReports() {
  if (state.reportTimer === null) state.reportTimer = setTimeout(sendReports, 50);
}

function sendReports() {
  state.reportTimer = null;
  if (!state.live) return;
  const seeing = document.visibilityState === "visible";
  for (const chat of state.chats.values()) {
    const top = chat.contiguousTop;
    if (seeing && chat.chat_id === state.openChatId && top > chat.reportedRead) {
      // `read` implies `received`.
      if (!sendFrame("read", { chat_id: chat.chat_id, seq: top })) return;
      chat.reportedRead = top;
      chat.reportedReceived = Math.max(chat.reportedReceived, top);
      chat.unread = 0;
      chat.readUpTo = Math.max(chat.readUpTo, top);
    } else if (top > chat.reportedReceived) {
      if (!sendFrame("received", { chat_id: chat.chat_id, seq: top })) return;
      chat.reportedReceived = top;
    }
  }
  renderChatList();
}

// ---- rendering ----------------------------------------------------------------------

function renderStatusLine(phase, detail) {
  const line = byId("status-line");
  if (phase) line.dataset.state = phase;
  if (!state.session) line.dataset.state = "signed-out";
  const current = line.dataset.state;
  line.dataset.node = current === "live" ? state.liveNode : "";
  line.dataset.replayed = current === "live" ? String(state.lastReplayed) : "";
  line.dataset.connection = String(state.connectionNumber); // which socket (tests read it)
  const http = state.httpNode ? ` · HTTP answered by ${state.httpNode}` : "";
  const texts = {
    "signed-out": "Not signed in",
    connecting: `Connecting… (connection ${state.connectionNumber + 1})`,
    replaying: "Connected; catching up on missed messages…",
    live: `Live on ${state.liveNode} · ${state.lastReplayed} missed message(s) replayed`,
    offline: `Offline: ${detail || line.dataset.detail || ""}`,
  };
  if (detail) line.dataset.detail = detail;
  line.textContent = texts[current] + http;
}

function timeOf(createTime) {
  const date = new Date(createTime);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

let renderedChatList = "";

function renderChatList() {
  const list = byId("chat-list");
  byId("no-chats").hidden = state.chats.size > 0;
  // Rebuilt only when something shown changed, so a click never lands on a replaced row.
  const shown = JSON.stringify(
    [...state.chats.values()].map((chat) => {
      const companion = companionOf(chat);
      const online = companion !== null && state.onlineUsers.has(companion.user_id);
      return [chat.chat_id, chatTitle(chat), chat.unread, online, chat.chat_id === state.openChatId];
    }),
  );
  if (shown === renderedChatList && list.children.length === state.chats.size) return;
  renderedChatList = shown;
  list.replaceChildren();
  for (const chat of state.chats.values()) {
    const companion = companionOf(chat);
    const online = companion !== null && state.onlineUsers.has(companion.user_id);
    const item = document.createElement("li");
    item.className = chat.chat_id === state.openChatId ? "chat open" : "chat";
    item.dataset.chatId = chat.chat_id;
    item.dataset.unread = String(chat.unread);
    const dot = document.createElement("span");
    dot.className = online ? "presence-dot online" : "presence-dot";
    dot.title = online ? "online" : "offline";
    dot.hidden = isGroup(chat); // presence is shown per member, not per group
    const name = document.createElement("span");
    name.className = "chat-name";
    name.textContent = chatTitle(chat);
    item.append(dot, name);
    if (chat.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread-count";
      badge.textContent = String(chat.unread);
      item.append(badge);
    }
    item.addEventListener("click", () => openChat(chat.chat_id));
    list.append(item);
  }
}

function markOf(chat, message) {
  if (isGroup(chat)) {
    // Cursors only grow: an earlier message got at least as far as the summarised one.
    if (!chat.receipt || message.seq > chat.receipt.seq) return message.status || "created";
    return chat.receipt.status;
  }
  if (message.seq <= chat.companionRead) return "read";
  if (message.seq <= chat.companionReceived) return "received";
  return "created";
}

function messageElement(chat, message, mark) {
  const mine = message.user_id === state.session.user_id;
  const item = document.createElement("li");
  item.className = mine ? "message mine" : "message theirs";
  if (message.id) item.dataset.id = message.id;
  if (message.seq) item.dataset.seq = String(message.seq);
  if (message.event) {
    // Someone joined or left: a line of its own, in the group's order.
    item.className = "message event";
    item.dataset.event = message.event.kind;
    const line = document.createElement("span");
    line.className = "message-text";
    line.textContent = message.text;
    item.append(line);
    return item;
  }
  if (isGroup(chat) && !mine) {
    const sender = document.createElement("span");
    sender.className = "message-sender";
    sender.textContent = chat.members.get(message.user_id) || "a former member";
    item.append(sender);
  }
  const text = document.createElement("span");
  text.className = "message-text";
  text.textContent = message.text;
  const meta = document.createElement("span");
  meta.className = "message-meta";
  meta.textContent = message.create_time ? timeOf(message.create_time) : "";
  if (mine) {
    const markElement = document.createElement("span");
    markElement.className = `mark mark-${mark}`;
    markElement.dataset.mark = mark;
    markElement.textContent = MARK_LABELS[mark];
    const receipt = chat.receipt;
    if (isGroup(chat) && receipt && message.seq && message.seq <= receipt.seq && mark !== "read") {
      // "received by 3 of 5": a summary, so earlier messages show at least this.
      markElement.textContent = `✓ received by ${receipt.received_by} of ${receipt.members}, read by ${receipt.read_by}`;
    }
    meta.append(" ", markElement);
  }
  item.append(text, meta);
  return item;
}

function renderConversation() {
  const chat = state.openChatId ? state.chats.get(state.openChatId) : null;
  const list = byId("messages");
  const title = byId("conversation-title");
  byId("send-form").hidden = !chat;
  if (!chat) {
    byId("group-bar").hidden = true;
    title.textContent = "Choose a chat";
    list.replaceChildren();
    return;
  }
  const companion = isGroup(chat) ? null : companionOf(chat);
  const online = companion !== null && state.onlineUsers.has(companion.user_id);
  title.textContent = `${chatTitle(chat)}${online ? " · online" : ""}`;
  byId("group-bar").hidden = !isGroup(chat);
  if (isGroup(chat)) byId("group-members").textContent = [...chat.members.values()].join(", ");
  const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const held = [...chat.messages.values()].sort((left, right) => left.seq - right.seq);
  const elements = held.map((message) => messageElement(chat, message, markOf(chat, message)));
  for (const item of state.outbox) {
    if (item.chat_id !== chat.chat_id) continue;
    const pending = { user_id: state.session.user_id, text: item.text };
    const element = messageElement(chat, pending, "sending");
    element.dataset.clientId = item.client_id;
    elements.push(element);
  }
  list.replaceChildren(...elements);
  if (stickToBottom) list.scrollTop = list.scrollHeight;
}

// ---- start --------------------------------------------------------------------------

function start() {
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-up-form").addEventListener("submit", signUp);
  byId("sign-out-button").addEventListener("click", signOut);
  byId("find-form").addEventListener("submit", findUser);
  byId("start-chat-button").addEventListener("click", startChat);
  byId("send-form").addEventListener("submit", sendMessage);
  byId("group-form").addEventListener("submit", createGroup);
  byId("add-member-form").addEventListener("submit", addMember);
  byId("leave-group-button").addEventListener("click", leaveGroup);
  byId("error-dismiss").addEventListener("click", () => (byId("error-banner").hidden = true));
  document.addEventListener("visibilitychange", scheduleReports);
  const saved = sessionStorage.getItem(SESSION_STORAGE_KEY);
  if (saved) {
    try {
      state.session = JSON.parse(saved);
    } catch (_) {
      sessionStorage.removeItem(SESSION_STORAGE_KEY); // unreadable: sign in again
    }
  }
  if (state.session) enterChatScreen();
  else renderStatusLine();
}

start();
