// Natter's browser client: start, online list, then the long-poll loop.
// Every piece of user text goes in with textContent, never as HTML.
"use strict";

const natter = {
  nextId: null,        // the id the next wait asks for
  online: new Set(),   // nicks in the room
  backoffMs: 0,        // current retry delay after a failure
  ended: false,        // the session is over; stop polling
  unread: 0,           // messages that arrived while the tab was hidden
  stickToBottom: true, // keep the newest line in view
};

const MAX_BACKOFF_MS = 10000;
const el = (id) => document.getElementById(id);

// Fetches a JSON envelope; throws on network errors and non-JSON answers.
async function api(path, body) {
  const init = { credentials: "same-origin", cache: "no-store" };
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

// Shows the connection state in the header.
function setStatus(state, text) {
  const status = el("status");
  status.dataset.state = state;
  status.textContent = text;
}

// Formats a server timestamp in the viewer's local time.
function clock(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// Appends one line to the log; `who` may be empty for notices.
function addLine(kind, ts, who, text) {
  const log = el("log");
  const li = document.createElement("li");
  li.className = "line " + kind;
  const time = document.createElement("time");
  time.textContent = clock(ts);
  time.dateTime = new Date(ts).toISOString();
  li.appendChild(time);
  const last = log.lastElementChild;
  if (who) {
    const name = document.createElement("span");
    name.className = "nick";
    name.textContent = who;
    li.appendChild(name);
    if (last && last.dataset.who === who && last.classList.contains(kind)) {
      li.classList.add("cont");
    }
    li.dataset.who = who;
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.appendChild(body);
  log.appendChild(li);
  keepInView();
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

// Redraws the list of people online.
function renderOnline() {
  const list = el("online");
  list.replaceChildren();
  const nicks = [...natter.online].sort((a, b) =>
    a.toLowerCase().localeCompare(b.toLowerCase()));
  for (const nick of nicks) {
    const li = document.createElement("li");
    li.textContent = nick;
    if (nick === el("me").textContent) li.className = "me";
    list.appendChild(li);
  }
  el("count").textContent = "(" + nicks.length + ")";
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
      addLine("msg", ev.ts, ev.d.nick, ev.d.msg);
      noteUnread();
      break;
    case "sent_chat_msg":
      addLine("msg mine", ev.ts, ev.d.nick, ev.d.msg);
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

// Ends the page's session: no more polling, a way to log in again.
function endSession(text) {
  natter.ended = true;
  setStatus("ended", "disconnected");
  el("ended-text").textContent = text;
  el("ended").hidden = false;
  el("say").hidden = true;
}

// Asks where to start and who is here.
async function start() {
  const first = await api("/chat/start/");
  if (first.status !== "ok") return first;
  natter.nextId = first.response;
  const online = await api("/chat/online/");
  if (online.status !== "ok") return online;
  natter.online = new Set(online.response);
  renderOnline();
  return first;
}

// Handles an error envelope; returns false when polling must stop.
async function handleError(reply) {
  if (reply.response === "bad_session") {
    endSession("Your session has ended.");
    return false;
  }
  if (reply.response === "resync") {
    addLine("system", Date.now(), "", "The server's history changed; " +
      "some lines may be missing.");
    natter.nextId = null;
    return true;
  }
  throw new Error(reply.response);
}

// One round of the long poll.
async function pollOnce() {
  if (natter.nextId === null) {
    const reply = await start();
    if (reply.status !== "ok") return handleError(reply);
  }
  const reply = await api("/chat/wait/?msg_id=" + natter.nextId);
  if (reply.status !== "ok") return handleError(reply);
  if (reply.response === "reconnect") return true;
  if (reply.gap) {
    addLine("system", Date.now(), "", "Older lines were dropped (" +
      (reply.gap.to - reply.gap.from + 1) + " missed).");
  }
  for (const ev of reply.response) {
    handleEvent(ev);
    natter.nextId = ev.id + 1;
  }
  return true;
}

// The wait loop, with a capped backoff while the server is unreachable.
async function pollLoop() {
  while (!natter.ended) {
    try {
      if (!(await pollOnce())) return;
      if (natter.backoffMs > 0) {
        addLine("system", Date.now(), "", "Reconnected.");
        // The list may have changed while we were away.
        await refreshOnline();
      }
      natter.backoffMs = 0;
      setStatus("online", "connected");
    } catch (err) {
      if (natter.backoffMs === 0) {
        addLine("system", Date.now(), "", "Connection lost; retrying…");
      }
      natter.backoffMs = Math.min(MAX_BACKOFF_MS,
        Math.max(500, natter.backoffMs * 2));
      setStatus("offline", "reconnecting in " +
        Math.round(natter.backoffMs / 1000) + " s");
      await new Promise((r) => setTimeout(r, natter.backoffMs));
    }
  }
}

// Reloads the online list after a reconnect.
async function refreshOnline() {
  const online = await api("/chat/online/");
  if (online.status === "ok") {
    natter.online = new Set(online.response);
    renderOnline();
  }
}

// Sends the input line; Enter submits the form.
async function send(event) {
  event.preventDefault();
  const input = el("msg");
  const msg = input.value;
  if (msg.trim() === "") return;
  try {
    const reply = await api("/chat/send_msg/", { msg });
    if (reply.status === "ok") {
      input.value = "";
    } else if (reply.response === "bad_session") {
      endSession("Your session has ended.");
    } else {
      addLine("system", Date.now(), "", "Not sent: " + reply.response);
    }
  } catch (err) {
    addLine("system", Date.now(), "", "Not sent: the server is unreachable.");
  }
  input.focus();
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

// Wires up the page.
function init() {
  el("say").addEventListener("submit", send);
  el("logout").addEventListener("click", logout);
  const log = el("log");
  log.addEventListener("scroll", () => {
    const gap = log.scrollHeight - log.scrollTop - log.clientHeight;
    natter.stickToBottom = gap < 40;
    if (natter.stickToBottom) el("jump").hidden = true;
  });
  el("jump").addEventListener("click", () => {
    natter.stickToBottom = true;
    keepInView();
    el("jump").hidden = true;
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      natter.unread = 0;
      document.title = "Natter";
    }
  });
  pollLoop();
}

init();
