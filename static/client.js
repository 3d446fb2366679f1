// Natter's browser client: history, online list, then the long-poll loop.
// One tab per browser holds the long poll (the leader) and passes what it
// gets to the other tabs over a BroadcastChannel, so many open tabs hold
// one connection between them. The leader holds a navigator.locks lock
// where the page is a secure context; elsewhere (plain http from another
// host) the tabs elect it with heartbeats over the same channel.
// Every piece of user text goes in with textContent, never as HTML.
"use strict";

const natter = {
  me: "",              // our nick, as the page was rendered with it
  nextId: null,        // the mailbox id the next wait asks for
  started: false,      // start, online list and history were loaded
  online: new Set(),   // nicks in the room
  shown: new Set(),    // keys of chat lines on screen, against doubles
  backoffMs: 0,        // current retry delay after a failure
  retryNow: null,      // ends the current backoff sleep early, if any
  leader: false,       // this tab holds the long poll
  channel: null,       // BroadcastChannel to the other tabs, if shared
  early: [],           // tab messages with events from before start()
  poll: null,          // AbortController of this tab's running poll loop
  elect: false,        // the leader is elected by heartbeats (no locks)
  tab: Math.random().toString(36).slice(2), // this tab's name, tie-break
  term: 0,             // the newest leadership term heard of
  heard: 0,            // when the leader was last heard from (ms)
  status: ["connecting", "connecting…"], // last connection state shown
  notice: "",          // the last system notice, for the ended banner
  day: "",             // the local day of the last line, for dividers
  ended: false,        // the session is over; stop polling
  unread: 0,           // messages that arrived while the tab was hidden
  stickToBottom: true, // keep the newest line in view
  batching: false,     // a batch of events is being applied
  onlineStale: false,  // the online list changed during the batch
};

const MAX_BACKOFF_MS = 10000;
const GROUP_MS = 5 * 60 * 1000;
const TICK_MS = 500;       // how often an elected leader says it is alive
const SILENCE_MS = 3000;   // no leader heard this long: a follower takes over
const FIRST_WAIT_MS = 1000; // how long a new tab waits for a leader
// The log keeps this many entries (lines and day dividers) and drops the
// oldest, so a busy room cannot make the page slower with every event.
const MAX_LOG_ENTRIES = 500;
// Chat lines remembered against doubles; far more than the history holds.
const MAX_SHOWN = 5000;
const el = (id) => document.getElementById(id);

// Fetches a JSON envelope; throws on network errors and non-JSON answers.
async function api(path, body, signal) {
  const init = { credentials: "same-origin", cache: "no-store", signal };
  if (body !== undefined) {
    init.method = "POST";
    init.body = new URLSearchParams(body);
  }
  const res = await fetch(path, init);
  const type = res.headers.get("content-type") || "";
  if (!type.includes("application/json")) {
    throw new Error("unexpected answer " + res.status);
  }
  return res.json();
}

// Tells the other tabs something, when this tab is the one polling.
function publish(kind, data) {
  if (natter.leader && natter.channel) {
    natter.channel.postMessage({
      kind, tab: natter.tab, term: natter.term, ...data,
    });
  }
}

// Shows the connection state in the header (and in the other tabs).
function setStatus(state, text) {
  natter.status = [state, text];
  const status = el("status");
  status.dataset.state = state;
  status.textContent = text;
  publish("status", { state, text });
}

// Formats a server timestamp as the viewer's local time of day.
function clock(ts) {
  return new Date(ts).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit",
  });
}

// Adds a divider naming the day when a line starts a new local day.
function markDay(log, ts) {
  const day = new Date(ts).toDateString();
  if (natter.day === day) return;
  natter.day = day;
  const li = document.createElement("li");
  li.className = "day";
  li.textContent = new Date(ts).toLocaleDateString([], {
    weekday: "long", day: "numeric", month: "long",
  });
  log.appendChild(li);
}

// Appends one line to the log; `who` is empty for notices.
function addLine(kind, ts, who, text) {
  const log = el("log");
  markDay(log, ts);
  const li = document.createElement("li");
  li.className = "line " + kind;
  const time = document.createElement("time");
  time.textContent = clock(ts);
  time.dateTime = new Date(ts).toISOString();
  time.title = new Date(ts).toLocaleString();
  li.appendChild(time);
  if (who) {
    const name = document.createElement("span");
    name.className = "nick";
    name.textContent = who;
    li.appendChild(name);
    if (continues(log.lastElementChild, who, ts)) li.classList.add("cont");
    li.dataset.who = who;
    li.dataset.ts = String(ts);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.appendChild(body);
  log.appendChild(li);
  if (!natter.batching) settleLog();
}

// Applies many events with the costly page work done once at the end:
// a scroll position read forces a layout, so doing it per event made a
// burst of joins and leaves freeze the page.
function inBatch(apply) {
  natter.batching = true;
  try {
    apply();
  } finally {
    natter.batching = false;
    if (natter.onlineStale) renderOnline();
    settleLog();
  }
}

// Drops the oldest log entries past the limit, then scrolls to the newest
// line unless the reader scrolled up.
function settleLog() {
  const log = el("log");
  while (log.childElementCount > MAX_LOG_ENTRIES) {
    log.firstElementChild.remove();
  }
  keepInView();
}

// Whether a line by `who` at `ts` carries on the previous line's group.
function continues(last, who, ts) {
  return Boolean(last) && last.dataset.who === who &&
    ts - Number(last.dataset.ts) < GROUP_MS;
}

// System notices are stamped with the viewer's clock.
function notice(text) {
  addLine("system", Date.now(), "", text);
}

// Shows a chat line once, whether it came from history or the mailbox.
function showChat(ts, nick, msg, mine) {
  const key = ts + "|" + nick + "|" + msg;
  if (natter.shown.has(key)) return false;
  natter.shown.add(key);
  if (natter.shown.size > MAX_SHOWN) {
    // A Set iterates in insertion order: this forgets the oldest line.
    natter.shown.delete(natter.shown.values().next().value);
  }
  addLine(mine ? "msg mine" : "msg", ts, nick, msg);
  return true;
}

// Scrolls to the newest line unless the reader scrolled up.
function keepInView() {
  const log = el("log");
  if (natter.stickToBottom) {
    log.scrollTop = log.scrollHeight;
  } else {
    el("jump").hidden = false;
  }
}

// Redraws the list of people online, or notes that it must be redrawn
// once the current batch of events is applied.
function renderOnline() {
  if (natter.batching) {
    natter.onlineStale = true;
    return;
  }
  natter.onlineStale = false;
  const list = el("online");
  list.replaceChildren();
  const nicks = [...natter.online].sort((a, b) =>
    a.toLowerCase().localeCompare(b.toLowerCase()));
  for (const nick of nicks) {
    const li = document.createElement("li");
    li.textContent = nick;
    if (nick === natter.me) li.className = "me";
    list.appendChild(li);
  }
  el("count").textContent = "(" + nicks.length + ")";
}

// Replaces the online list with what the server says.
function setOnline(nicks) {
  natter.online = new Set(nicks);
  renderOnline();
}

// Counts unread messages in the title while the tab is hidden.
function noteUnread() {
  if (!document.hidden) return;
  natter.unread += 1;
  document.title = "(" + natter.unread + ") Natter";
}

// Applies one event from the server.
function handleEvent(ev) {
  switch (ev.t) {
    case "chat_msg":
      if (showChat(ev.ts, ev.d.nick, ev.d.msg, false)) noteUnread();
      break;
    case "sent_chat_msg":
      showChat(ev.ts, ev.d.nick, ev.d.msg, true);
      break;
    case "user_joined_room":
      natter.online.add(ev.d);
      renderOnline();
      addLine("notice", ev.ts, "", ev.d + " joined the room");
      break;
    case "user_left_room":
      natter.online.delete(ev.d.nick);
      renderOnline();
      addLine("notice", ev.ts, "", ev.d.nick + " left (" + ev.d.reason + ")");
      break;
    case "system_msg":
      natter.notice = ev.d;
      addLine("system", ev.ts, "", ev.d);
      break;
    case "admin_logged_in":
      addLine("notice", ev.ts, "", ev.d + " is now an administrator");
      break;
    case "admin_logged_out":
      addLine("notice", ev.ts, "", ev.d + " is no longer an administrator");
      break;
  }
}

// Applies a wait's answer: events not seen yet, and the gap marker.
function applyDelivery(events, gap) {
  if (gap) {
    notice("Older messages were dropped while you were away (" +
      (gap.to - gap.from + 1) + " events missed).");
  }
  inBatch(() => {
    for (const ev of events) {
      if (natter.nextId !== null && ev.id < natter.nextId) continue;
      handleEvent(ev);
      natter.nextId = ev.id + 1;
    }
  });
}

// Ends the page's session: no more polling, a way to log in again.
function endSession(text) {
  if (natter.ended) return;
  natter.ended = true;
  publish("ended", { text });
  setStatus("ended", "disconnected");
  el("ended-text").textContent = text;
  el("ended").hidden = false;
  el("say").hidden = true;
  el("logout").hidden = true;
  setOnline([]);
  el("relogin").focus();
}

// Shows the room's recent chat lines that are not on screen yet.
async function loadHistory() {
  const reply = await api("/chat/history/");
  if (reply.status !== "ok") return reply;
  inBatch(() => {
    for (const ev of reply.response) {
      showChat(ev.ts, ev.d.nick, ev.d.msg, ev.d.nick === natter.me);
    }
  });
  return reply;
}

// Asks where to start, who is here and what was said lately. The start
// id comes first, so nothing sent meanwhile is missed; doubles between
// history and mailbox are dropped by showChat.
async function start() {
  const first = await api("/chat/start/");
  if (first.status !== "ok") return first;
  natter.nextId = first.response;
  const online = await api("/chat/online/");
  if (online.status !== "ok") return online;
  setOnline(online.response);
  const history = await loadHistory();
  if (history.status !== "ok") return history;
  natter.started = true;
  for (const m of natter.early.splice(0)) applyDelivery(m.events, m.gap);
  return first;
}

// Handles an error envelope; returns false when polling must stop.
async function handleError(reply) {
  if (reply.response === "bad_session") {
    endSession(natter.notice || "Your session has ended.");
    return false;
  }
  if (reply.response === "resync") {
    notice("The server lost track of this page; catching up again.");
    natter.nextId = null;
    return true;
  }
  throw new Error(reply.response);
}

// One round of the long poll; false once it must stop. An answer that
// comes after this tab handed the poll over is dropped: the new leader
// asks again from the same id.
async function pollOnce(signal) {
  if (natter.backoffMs > 0) await reconnected();
  if (natter.nextId === null || !natter.started) {
    const reply = await start();
    if (reply.status !== "ok") return handleError(reply);
    publish("resync", { nextId: natter.nextId });
  }
  const path = "/chat/wait/?msg_id=" + natter.nextId;
  const reply = await api(path, undefined, signal);
  if (signal.aborted) return false;
  if (reply.status !== "ok") return handleError(reply);
  if (reply.response === "reconnect") return true;
  applyDelivery(reply.response, reply.gap);
  publish("events", { events: reply.response, gap: reply.gap });
  return true;
}

// The wait loop, with a capped backoff while the server is unreachable;
// it ends with the session or when this tab hands the poll over.
async function pollLoop() {
  const poll = new AbortController();
  natter.poll = poll;
  while (!natter.ended && natter.poll === poll) {
    try {
      if (!(await pollOnce(poll.signal))) return;
      if (natter.status[0] !== "online") setStatus("online", "connected");
    } catch (err) {
      if (natter.poll !== poll) return;
      await connectionLost();
    }
  }
}

// Notes a failed round and sleeps for the next backoff step.
async function connectionLost() {
  if (natter.backoffMs === 0) notice("Connection lost; retrying…");
  natter.backoffMs = Math.min(MAX_BACKOFF_MS,
    Math.max(500, natter.backoffMs * 2));
  setStatus("offline", "reconnecting…");
  const jitter = Math.random() * 250;
  await new Promise((r) => {
    natter.retryNow = r;
    setTimeout(r, natter.backoffMs + jitter);
  });
  natter.retryNow = null;
}

// After an outage: asks the server for the online list before parking a
// wait, so the page shows it is back at once rather than when that wait
// returns; throws while the server is still unreachable.
async function reconnected() {
  const online = await api("/chat/online/");
  natter.backoffMs = 0;
  notice("Reconnected.");
  setStatus("online", "connected");
  publish("reconnected", {});
  if (online.status === "ok") {
    setOnline(online.response);
    publish("online", { nicks: online.response });
  }
}

// Takes over the long poll; the lock is held until the returned promise
// settles, that is until the session ends or the tab closes.
async function lead() {
  natter.leader = true;
  await pollLoop();
}

// Takes the long poll in a newer term and tells the other tabs at once.
function claim() {
  natter.term += 1;
  natter.leader = true;
  natter.heard = Date.now();
  publish("beat", {});
  pollLoop();
}

// Gives the long poll up: this tab's wait stops at once.
function stepDown() {
  natter.leader = false;
  if (natter.poll) natter.poll.abort();
  natter.poll = null;
}

// Every TICK_MS: the elected leader says it is alive; a follower that has
// not heard one for SILENCE_MS (plus a random share, so that tabs rarely
// claim together) takes over.
function tick() {
  if (natter.ended) return;
  if (natter.leader) {
    publish("beat", {});
  } else if (Date.now() - natter.heard > SILENCE_MS + Math.random() * 1000) {
    claim();
  }
}

// Weighs a message from an elected leader: the newer term leads, and in
// one term the larger tab name; a leader that is outranked steps down,
// one that outranks the sender says so. False for an outranked sender.
function heardFrom(m) {
  const outranked = m.term < natter.term ||
    (natter.leader && m.term === natter.term && m.tab < natter.tab);
  if (outranked) {
    if (natter.leader) publish("beat", {});
    return false;
  }
  natter.term = m.term;
  natter.heard = Date.now();
  if (natter.leader) stepDown();
  return true;
}

// A closing elected leader hands over at once instead of going silent.
function resign() {
  if (!natter.leader || !natter.elect) return;
  publish("resign", {});
  stepDown();
}

// Handles a message from another tab: a new tab's hello (the polling tab
// answers with the connection state), a leader's heartbeat or farewell,
// or what the polling tab passes on.
async function onTabMessage(event) {
  const m = event.data;
  if (natter.ended) return;
  if (m.kind === "hello") {
    publish("status", { state: natter.status[0], text: natter.status[1] });
    return;
  }
  if (m.kind === "resign") {
    // Take over within a second or two, at a random moment per tab.
    const soon = Date.now() - SILENCE_MS + Math.random() * 1000;
    if (!natter.leader && m.term >= natter.term) natter.heard = soon;
    return;
  }
  if (natter.elect && !heardFrom(m)) return;
  if (natter.leader) return;
  switch (m.kind) {
    case "events":
      if (natter.started) applyDelivery(m.events, m.gap);
      else natter.early.push(m);
      break;
    case "status":
      setStatus(m.state, m.text);
      // A tab that loaded while the server was down catches up now.
      if (m.state === "online" && !natter.started) start().catch(() => {});
      break;
    case "online":
      setOnline(m.nicks);
      break;
    case "reconnected":
      notice("Reconnected.");
      break;
    case "resync":
      natter.nextId = m.nextId;
      await start().catch(() => {});
      break;
    case "ended":
      endSession(m.text);
      break;
  }
}

// Listens to the other tabs before start(), so no event passed on while
// this tab loads is missed.
function listen() {
  if (!window.BroadcastChannel) return;
  natter.channel = new BroadcastChannel("natter");
  natter.channel.addEventListener("message", onTabMessage);
}

// Joins the tabs of this browser: one polls, the others listen. The
// poller holds a navigator.locks lock where there is one; without (plain
// http from another host) the tabs elect it with heartbeats.
function shareOrPoll() {
  if (!natter.channel) {
    natter.leader = true;
    pollLoop();
    return;
  }
  if (navigator.locks) {
    navigator.locks.request("natter-poll", lead);
  } else {
    elect();
  }
  natter.channel.postMessage({ kind: "hello" });
}

// Starts the heartbeat election: a leader answers the hello at once, and
// with none heard within FIRST_WAIT_MS this tab claims the poll.
function elect() {
  natter.elect = true;
  natter.heard = Date.now() - SILENCE_MS + FIRST_WAIT_MS;
  setInterval(tick, TICK_MS);
  window.addEventListener("pagehide", resign);
}

// Loads this tab's view, then joins the polling.
async function boot() {
  try {
    const reply = await start();
    if (reply.status !== "ok") await handleError(reply);
    else setStatus("online", "connected");
  } catch (err) {
    setStatus("offline", "reconnecting…");
  }
  if (!natter.ended) shareOrPoll();
}

// Sends the input line; Enter submits the form, focus stays in the input.
async function send(event) {
  event.preventDefault();
  const input = el("msg");
  const msg = input.value;
  if (msg.trim() === "") return;
  input.value = "";
  input.focus();
  try {
    const reply = await api("/chat/send_msg/", { msg });
    if (reply.status === "ok") return;
    if (reply.response === "bad_session") {
      endSession(natter.notice || "Your session has ended.");
      return;
    }
    notice("Not sent (" + reply.response + ").");
  } catch (err) {
    notice("Not sent: the server is unreachable.");
  }
  if (input.value === "") input.value = msg;
}

// Leaves the room and goes back to the login page.
async function logout() {
  natter.ended = true;
  try {
    await api("/chat/leave/", {});
  } finally {
    window.location.href = "/";
  }
}

// Follows the reader's scrolling: stick to the bottom only when there.
function onScroll() {
  const log = el("log");
  const gap = log.scrollHeight - log.scrollTop - log.clientHeight;
  natter.stickToBottom = gap < 40;
  if (natter.stickToBottom) el("jump").hidden = true;
}

// Wires up the page.
function init() {
  natter.me = el("me").textContent;
  el("say").addEventListener("submit", send);
  el("logout").addEventListener("click", logout);
  el("log").addEventListener("scroll", onScroll);
  el("jump").addEventListener("click", () => {
    natter.stickToBottom = true;
    keepInView();
    el("jump").hidden = true;
    el("msg").focus();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    natter.unread = 0;
    document.title = "Natter";
  });
  // The network is back (a laptop woke up): retry without waiting out
  // the backoff, while the server still remembers why a session ended.
  window.addEventListener("online", () => natter.retryNow?.());
  listen();
  boot();
}

init();
