// trio-agent: the browser page; the protocol is in docs/protocol.md.  Two transports, by
// the setting ?transport= in the page URL:
//
// - `ws` (the default): one WebSocket per tab to /sessions/{id}.  Every frame is a JSON
//   array of events in seq order; commands go up the same socket.
// - `sse`: an EventSource on /sessions/{id}/events (one message per event, its id the
//   seq) and commands POSTed to /sessions/{id}/commands, one at a time, in order.
//
// The page keeps the last seq it has applied.  A WebSocket reconnects with ?after= that
// seq; an EventSource reconnects by itself with Last-Event-ID (the page opens a new one
// with ?after= only when the browser gave up).  Either way the server replays exactly
// what was missed.  Without `after` (first load, reload) the server sends a `state`
// snapshot first, and the page renders from it.
//
// Every command carries an id.  The page keeps the commands the session has not
// acknowledged yet (an event with their `command_id`, an `ack`, or a 202 to the POST) and
// sends them again after a reconnect, so a click made during a network blip is neither
// lost nor doubled: the session applies an id once and answers a repeat with an `ack`
// (over HTTP: 202 with the original seq).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const SESSION_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  let sessionId = params.get("session");
  if (!sessionId || !SESSION_RE.test(sessionId)) {
    sessionId = "s-" + Math.random().toString(36).slice(2, 10);
    params.set("session", sessionId);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
  }
  const token = params.get("token");
  const transport = params.get("transport") === "sse" ? "sse" : "ws";
  $("session-id").textContent = sessionId;

  const TIMELINE_MAX = 400;
  const UNACKED_MAX = 32; // commands kept for a resend: more than anyone clicks in a blip
  // Events a frame may merge (a merged one carries the last seq it covers); consecutive
  // tool_progress of one call collapse to the newest.
  const MERGEABLE = new Set(["token_stream", "reasoning", "tool_call_delta", "tool_progress"]);
  const EVENT_TYPES = [ // what an EventSource listens for (each is an SSE `event:` name)
    "state", "user_input", "run_started", "thinking", "token_stream", "reasoning",
    "tool_call_start", "tool_call_delta", "tool_call", "tool_approval_requested",
    "tool_approval", "tool_progress", "tool_result", "interrupt", "interrupted", "resume",
    "error", "done",
  ];

  // ---- connection state ----
  let ws = null; // the WebSocket (transport ws)
  let es = null; // the EventSource (transport sse)
  let postQueue = Promise.resolve(); // commands POSTed one at a time, in order
  let lastSeq = null; // the last seq applied; null: none (ask for a snapshot)
  let attempts = 0;
  let reconnectTimer = null;
  const counters = { frames: 0, events: 0, merged: 0 };
  const unacked = new Map(); // command id -> command, in the order sent
  const idPrefix = "p" + Math.random().toString(36).slice(2, 8) + "-";
  let nextId = 1;

  // ---- view state ----
  let status = "idle";
  let interrupting = null;
  let current = null; // {bubble, text: Text node} of the step being streamed
  let thinkingEl = null;
  const cards = new Map(); // call_id -> card element

  const conversation = $("conversation");

  // ---------------------------------------------------------------- rendering helpers

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function nearBottom() {
    return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80;
  }

  function append(node) {
    const stick = nearBottom();
    $("empty").hidden = true;
    if (thinkingEl && thinkingEl.parentNode) conversation.insertBefore(node, thinkingEl);
    else conversation.appendChild(node);
    if (stick) conversation.scrollTop = conversation.scrollHeight;
    return node;
  }

  // Streamed text (tokens, tool-call arguments) is gathered per element while a frame
  // is handled and appended once per frame as one text node: appending to a node's
  // text copies all of it in the browser, so one append per event would make a long
  // stream quadratic.  A frame's worth is one node; frames grow when the page is behind.
  const pendingText = new Map(); // element -> [text, ...]

  function streamText(node, text) {
    const parts = pendingText.get(node);
    if (parts) parts.push(text);
    else pendingText.set(node, [text]);
  }

  function setText(node, text) {
    pendingText.delete(node); // replaced whole: what was pending is in `text`
    node.textContent = text;
  }

  function flushText() {
    if (pendingText.size === 0) return;
    keepBottom(() => {
      for (const [node, parts] of pendingText) node.appendChild(document.createTextNode(parts.join("")));
    });
    pendingText.clear();
  }

  function keepBottom(fn) {
    const stick = nearBottom();
    fn();
    if (stick) conversation.scrollTop = conversation.scrollHeight;
  }

  function userBubble(text, tag) {
    const b = el("div", "msg user");
    if (tag) b.appendChild(el("span", "tag", tag));
    b.appendChild(document.createTextNode(text));
    return append(b);
  }

  function assistantBubble(text, streaming) {
    const b = el("div", "msg assistant" + (streaming ? " streaming" : ""));
    const span = el("span", "text", text || "");
    b.appendChild(span);
    append(b);
    return { bubble: b, text: span };
  }

  function notice(text, kind) {
    return append(el("div", "notice" + (kind ? " " + kind : ""), text));
  }

  function setThinking(on) {
    if (on && !thinkingEl) {
      thinkingEl = el("div", "thinking-dots");
      thinkingEl.append(el("i"), el("i"), el("i"), el("span", "", "thinking"));
      conversation.appendChild(thinkingEl);
      conversation.scrollTop = conversation.scrollHeight;
    } else if (!on && thinkingEl) {
      thinkingEl.remove();
      thinkingEl = null;
    }
  }

  function endStreaming() {
    if (current) current.bubble.classList.remove("streaming");
    current = null;
  }

  function pretty(value) {
    if (typeof value === "string") return value;
    try { return JSON.stringify(value, null, 2); } catch (_) { return String(value); }
  }

  function toolCard(callId, name) {
    let card = cards.get(callId);
    if (card) return card;
    card = el("div", "tool-card");
    card.dataset.callId = callId;
    card.dataset.status = "streaming";
    const head = el("div", "tool-head");
    head.append(el("span", "icon", "ƒ"), el("span", "tool-name", name), el("span", "call-id", callId));
    const pill = el("span", "pill", "streaming");
    pill.dataset.status = "streaming";
    head.appendChild(pill);
    const body = el("div", "tool-body");
    const args = el("section", "args");
    args.append(el("h4", "", "arguments"), el("pre", "args-text"));
    const result = el("section", "result");
    result.append(el("h4", "", "result"), el("pre", "result-text"));
    body.append(args, result);
    card.append(head, body);
    cards.set(callId, card);
    append(card);
    return card;
  }

  function setCardStatus(card, st) {
    card.dataset.status = st;
    const pill = card.querySelector(".pill");
    pill.dataset.status = st;
    pill.textContent = st;
  }

  // A call waiting for a person's approval: the card asks, with a reason box.
  function askApproval(card, callId) {
    setCardStatus(card, "awaiting_approval");
    if (card.querySelector(".approval")) return;
    const box = el("div", "approval");
    const reason = el("input", "reason");
    reason.placeholder = "reason (sent to the model if you deny)";
    const yes = el("button", "btn primary approve", "Approve");
    const no = el("button", "btn ghost danger deny", "Deny");
    yes.type = no.type = "button";
    yes.addEventListener("click", () => send({ op: "approve", call_id: callId, approved: true }));
    no.addEventListener("click", () =>
      send({ op: "approve", call_id: callId, approved: false, reason: reason.value.trim() }));
    box.append(el("span", "question", "Run this call?"), reason, yes, no);
    card.querySelector(".tool-body").before(box);
  }

  function decided(card, approved, reason) {
    const box = card.querySelector(".approval");
    if (box) box.remove();
    const note = el("div", "decision " + (approved ? "approved" : "denied"),
      approved ? "approved" : "denied" + (reason ? ": " + reason : ""));
    card.querySelector(".tool-body").before(note);
    if (approved) setCardStatus(card, "running");
  }

  // How far a running call got (tool_progress): a bar, determinate when the tool knows
  // its total, and the numbers and message beside it.
  function setProgress(card, progress, total, message) {
    let box = card.querySelector(".progress");
    if (!box) {
      box = el("div", "progress");
      box.append(el("progress", "bar"), el("span", "progress-text"));
      card.querySelector(".tool-body").before(box);
    }
    const bar = box.querySelector("progress");
    if (typeof total === "number" && total > 0) {
      bar.max = total;
      bar.value = Math.min(progress, total);
    } else {
      bar.removeAttribute("value"); // indeterminate: the tool does not know its total
    }
    const numbers = typeof total === "number" ? progress + " / " + total : String(progress);
    box.querySelector(".progress-text").textContent = numbers + (message ? " — " + message : "");
  }

  function setCardResult(card, st, result, error) {
    const box = card.querySelector(".approval");
    if (box) box.remove();
    setCardStatus(card, st);
    card.classList.add("has-result");
    card.querySelector(".result-text").textContent =
      st === "ok" ? pretty(result) : (error || st);
  }

  function setStatus(st) {
    status = st;
    const badge = $("status");
    badge.dataset.status = st;
    badge.textContent = interrupting && (st === "thinking" || st === "acting")
      ? st + " · pausing" : st;
    setThinking(st === "thinking" && !current);
    updateButtons();
  }

  function connected() {
    if (transport === "sse") return es !== null && es.readyState === EventSource.OPEN;
    return ws !== null && ws.readyState === WebSocket.OPEN;
  }

  function updateButtons() {
    const live = connected();
    const running = status === "thinking" || status === "acting";
    $("btn-soft").disabled = !live || !running || interrupting !== null;
    $("btn-hard").disabled = !live || !running || interrupting === "hard";
    $("btn-resume").disabled = !live || status !== "interrupted";
    $("btn-cancel").disabled = !live || !(running || status === "interrupted");
    $("btn-send").disabled = !live;
    $("btn-send").textContent =
      running ? "Steer" : status === "interrupted" ? "Send & resume" : "Send";
  }

  function setConn(state, text) {
    $("conn").dataset.conn = state;
    $("conn-text").textContent = text || state;
    updateButtons();
  }

  let toastTimer = null;
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  function summary(e) {
    switch (e.type) {
      case "user_input": return JSON.stringify(e.text);
      case "run_started": return "run " + e.run;
      case "thinking": return "step " + e.step;
      case "token_stream": case "reasoning": return JSON.stringify(e.text);
      case "tool_call_start": return e.name + " " + e.call_id;
      case "tool_call_delta": return e.delta;
      case "tool_call": return e.name + " " + JSON.stringify(e.arguments);
      case "tool_result": return e.call_id + " " + e.status;
      case "tool_progress":
        return e.call_id + " " + e.progress + (e.total !== null ? "/" + e.total : "") +
          (e.message ? " " + e.message : "");
      case "interrupt": return e.mode + (e.reason ? ": " + e.reason : "");
      case "interrupted": return e.mode + " at step " + e.step;
      case "resume": return e.instruction ? JSON.stringify(e.instruction) : "";
      case "error": return e.code + ": " + e.message;
      case "done": return e.status;
      case "state": return e.state.status + " · seq " + e.seq;
      default: return "";
    }
  }

  const timeline = $("timeline");
  function logEvent(e, covered) {
    const stick = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
    const li = el("li");
    li.dataset.type = e.type;
    li.append(
      el("span", "seq", e.seq ? String(e.seq) : "–"),
      el("span", "type", e.type + (covered > 1 ? " ×" + covered : "")),
      el("span", "detail", summary(e)),
    );
    timeline.appendChild(li);
    while (timeline.childElementCount > TIMELINE_MAX) timeline.firstElementChild.remove();
    if (stick) timeline.scrollTop = timeline.scrollHeight;
  }

  function renderCounters() {
    $("count-frames").textContent = counters.frames;
    $("count-events").textContent = counters.events;
    $("count-merged").textContent = counters.merged;
  }

  // ---------------------------------------------------------------- applying events

  function resetView() {
    for (const node of [...conversation.children]) if (node.id !== "empty") node.remove();
    $("empty").hidden = false;
    cards.clear();
    pendingText.clear();
    current = null;
    thinkingEl = null;
    interrupting = null;
  }

  function applySnapshot(e) {
    const s = e.state;
    resetView();
    for (const m of s.messages) {
      if (m.role === "user") userBubble(m.content);
      else if (m.role === "assistant") {
        if (m.content) {
          const a = assistantBubble(m.content, false);
          if (m.cut) a.bubble.classList.add("cut");
        }
        for (const c of m.tool_calls || []) {
          const card = toolCard(c.call_id, c.name);
          card.querySelector(".args-text").textContent = pretty(c.arguments);
          setCardStatus(card, "running");
        }
      } else if (m.role === "tool") {
        const card = cards.get(m.call_id) || toolCard(m.call_id, m.name || "tool");
        setCardResult(card, m.status || "ok", m.content, m.content);
      }
    }
    for (const text of s.pending_inputs) userBubble(text, "queued");
    if (s.text) current = assistantBubble(s.text, true);
    for (const c of s.tool_calls) {
      const card = toolCard(c.call_id, c.name);
      card.querySelector(".args-text").textContent =
        c.arguments ? pretty(c.arguments) : c.arguments_text;
      if (c.progress) setProgress(card, c.progress.progress, c.progress.total, c.progress.message);
      if (c.status === "awaiting_approval") askApproval(card, c.call_id);
      else if (c.status === "streaming" || c.status === "running") setCardStatus(card, c.status);
      else setCardResult(card, c.status, c.result, c.error);
    }
    if (s.status === "interrupted") notice("Paused — resume, send a message, or cancel", "pause");
    interrupting = s.interrupting;
    setStatus(s.status);
  }

  function apply(e) {
    switch (e.type) {
      case "user_input": {
        const running = status === "thinking" || status === "acting";
        userBubble(e.text, running ? "steering" : status === "interrupted" ? "resuming" : undefined);
        break;
      }
      case "run_started":
        endStreaming();
        setStatus("thinking");
        break;
      case "thinking":
        endStreaming();
        setStatus("thinking");
        break;
      case "token_stream":
        if (!current) {
          current = assistantBubble("", true);
          setThinking(false);
        }
        streamText(current.text, e.text);
        break;
      case "reasoning":
        break;
      case "tool_call_start":
        endStreaming();
        setThinking(false);
        toolCard(e.call_id, e.name);
        break;
      case "tool_call_delta": {
        const card = cards.get(e.call_id);
        if (card) streamText(card.querySelector(".args-text"), e.delta);
        break;
      }
      case "tool_call": {
        const card = toolCard(e.call_id, e.name);
        setText(card.querySelector(".args-text"), pretty(e.arguments));
        setCardStatus(card, "running");
        setStatus("acting");
        break;
      }
      case "tool_approval_requested":
        askApproval(toolCard(e.call_id, e.name), e.call_id);
        break;
      case "tool_approval": {
        const card = cards.get(e.call_id);
        if (card) decided(card, e.approved, e.reason);
        break;
      }
      case "tool_progress": {
        const card = cards.get(e.call_id);
        if (card) setProgress(card, e.progress, e.total, e.message);
        break;
      }
      case "tool_result": {
        const card = cards.get(e.call_id) || toolCard(e.call_id, "tool");
        setCardResult(card, e.status, e.result, e.error);
        break;
      }
      case "interrupt":
        interrupting = e.mode;
        notice((e.mode === "hard" ? "Stopping now" : "Pausing at the next step") +
               (e.reason ? " — " + e.reason : ""), "pause");
        setStatus(status);
        break;
      case "interrupted":
        endStreaming();
        interrupting = null;
        notice((e.mode === "hard" ? "Stopped" : "Paused") + " at step " + e.step +
               " — resume, send a message, or cancel", "pause");
        setStatus("interrupted");
        break;
      case "resume":
        if (e.instruction) userBubble(e.instruction, "instruction");
        notice("Resumed", "ok");
        setStatus("thinking");
        break;
      case "error":
        notice((e.retryable ? "Retrying: " : "Error: ") + e.message, e.retryable ? "warn" : "bad");
        break;
      case "done":
        endStreaming();
        interrupting = null;
        if (e.status === "cancelled") notice("Run cancelled", "");
        else if (e.status === "failed") notice("Run failed", "bad");
        setStatus(e.status === "failed" ? "error" : "done");
        break;
      default:
        break;
    }
  }

  function handle(e) {
    if (e.type === "state") {
      lastSeq = e.seq;
      logEvent(e, 1);
      applySnapshot(e);
      return;
    }
    if (e.type === "error" && e.session === "") { // for this client only: bad input, a limit
      logEvent(e, 1);
      toast(e.code + ": " + e.message);
      if (e.code === "bad_after" || e.code === "log_trimmed") lastSeq = null;
      // A refusal answers the oldest command not yet acknowledged (one connection's
      // commands are applied in order): it was not applied, and is not sent again.
      if ((e.code === "bad_state" || e.code === "bad_command") && unacked.size) {
        unacked.delete(unacked.keys().next().value);
      }
      return;
    }
    if (e.type === "ack") { // a command the session had applied already
      unacked.delete(e.command_id);
      return;
    }
    if (e.command_id) unacked.delete(e.command_id);
    if (lastSeq !== null && e.seq <= lastSeq) return; // never apply twice
    const covered = lastSeq === null ? 1 : e.seq - lastSeq;
    counters.events += covered;
    if (MERGEABLE.has(e.type) && covered > 1) counters.merged += covered - 1;
    lastSeq = e.seq;
    logEvent(e, covered);
    apply(e);
  }

  // ---------------------------------------------------------------- the connection

  function connect() {
    if (transport === "sse") connectSSE();
    else connectWS();
  }

  function reconnectLater(why) {
    attempts += 1;
    const delay = Math.min(5000, 250 * 2 ** Math.min(attempts, 5));
    setConn("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)}s` + (why || ""));
    reconnectTimer = setTimeout(connect, delay);
  }

  function connectSSE() {
    reconnectTimer = null;
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (lastSeq !== null) q.set("after", String(lastSeq));
    const url = `/sessions/${encodeURIComponent(sessionId)}/events` +
                (q.toString() ? "?" + q.toString() : "");
    setConn(attempts ? "reconnecting" : "connecting");
    const source = new EventSource(url);
    es = source;
    const onMessage = (m) => {
      if (es !== source) return;
      counters.frames += 1; // (one SSE message per event)
      let e;
      try { e = JSON.parse(m.data); } catch (_) { return; }
      handle(e);
      flushText();
      renderCounters();
    };
    source.onopen = () => {
      if (es !== source) return;
      attempts = 0;
      setConn("live");
      for (const command of unacked.values()) post(command); // resend
    };
    for (const type of EVENT_TYPES) {
      if (type !== "error") source.addEventListener(type, onMessage);
    }
    // `error` is both the server's event (a MessageEvent, with data) and the
    // EventSource's own signal that the connection dropped (a plain Event).
    source.addEventListener("error", (m) => {
      if (m.data !== undefined) { onMessage(m); return; }
      if (es !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself, with Last-Event-ID.
        setConn("reconnecting", "reconnecting");
        return;
      }
      es = null; // it gave up: open a new one, with ?after=
      reconnectLater("");
    });
  }

  function connectWS() {
    reconnectTimer = null;
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (lastSeq !== null) q.set("after", String(lastSeq));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/sessions/${encodeURIComponent(sessionId)}` +
                (q.toString() ? "?" + q.toString() : "");
    setConn(attempts ? "reconnecting" : "connecting");
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => {
      attempts = 0;
      setConn("live");
      for (const command of unacked.values()) sock.send(JSON.stringify(command)); // resend
    };
    sock.onmessage = (m) => {
      counters.frames += 1;
      let events;
      try { events = JSON.parse(m.data); } catch (_) { return; }
      for (const e of events) handle(e);
      flushText();
      renderCounters();
    };
    sock.onclose = (c) => {
      if (ws !== sock) return;
      ws = null;
      if (c.reason && /^(bad_after|log_trimmed)/.test(c.reason)) lastSeq = null;
      reconnectLater(c.code && c.code !== 1006 ? ` (${c.code}${c.reason ? ": " + c.reason : ""})` : "");
    };
  }

  // A command over HTTP (transport sse), after the ones before it.  A 202 acknowledges
  // it; a refusal (4xx but 429) is final; a 429, a 5xx or no answer keeps it for a resend.
  function post(command) {
    postQueue = postQueue.then(async () => {
      if (!unacked.has(command.id)) return; // acknowledged meanwhile
      const q = token ? "?token=" + encodeURIComponent(token) : "";
      let reply;
      try {
        reply = await fetch(`/sessions/${encodeURIComponent(sessionId)}/commands${q}`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": command.id },
          body: JSON.stringify(command),
        });
      } catch (_) {
        toast("not sent: no connection; sent again when it is back");
        return;
      }
      let body = null;
      try { body = await reply.json(); } catch (_) { /* not JSON */ }
      if (reply.status === 202) { unacked.delete(command.id); return; }
      const error = (body && body.error) || { code: "http_" + reply.status, message: reply.statusText };
      logEvent({ type: "error", seq: 0, code: error.code, message: error.message }, 1);
      toast(error.code + ": " + error.message);
      if (reply.status < 500 && reply.status !== 429) unacked.delete(command.id);
    }).catch(() => {}); // (a throw here must not stop every later command)
  }

  // Send a command with a fresh id; kept until acknowledged, resent on reconnect.
  function send(command) {
    const id = idPrefix + nextId++;
    const withId = { ...command, id };
    unacked.set(id, withId);
    while (unacked.size > UNACKED_MAX) unacked.delete(unacked.keys().next().value);
    if (transport === "sse") post(withId); // (HTTP does not need the stream to be up)
    else if (connected()) ws.send(JSON.stringify(withId));
    else toast("not connected: sent when the connection is back");
    return true;
  }

  // ---------------------------------------------------------------- controls

  const input = $("input");
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (send({ op: "user_input", text })) input.value = "";
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && (status === "thinking" || status === "acting")) {
      send({ op: "interrupt", mode: "hard", reason: "Esc" });
    }
  });
  $("btn-soft").addEventListener("click", () => send({ op: "interrupt", mode: "soft", reason: "paused from the page" }));
  $("btn-hard").addEventListener("click", () => send({ op: "interrupt", mode: "hard", reason: "stopped from the page" }));
  $("btn-resume").addEventListener("click", () => {
    const text = input.value.trim();
    if (send(text ? { op: "resume", instruction: text } : { op: "resume" })) input.value = "";
  });
  $("btn-cancel").addEventListener("click", () => send({ op: "cancel" }));

  // For tests and the curious: the page's own view of the protocol.
  window.trioAgent = {
    get lastSeq() { return lastSeq; },
    get status() { return status; },
    counters,
    sessionId,
    get unacked() { return unacked.size; },
    transport,
    drop() { // as if the network dropped
      if (ws) ws.close(4000, "dropped by the page");
      if (es) {
        es.close();
        es = null;
        reconnectLater(" (dropped by the page)");
      }
    },
  };

  updateButtons();
  connect();
})();
