// wmoe chat page: a conversation list kept in this browser (localStorage), answers streamed
// from this server's OpenAI API (/v1/chat/completions with stream: true, /v1/models). No
// framework, no build step, nothing fetched from anywhere else.
"use strict";

const KEYS = {
  conversations: "wmoe.chat.conversations",
  current: "wmoe.chat.current",
  settings: "wmoe.chat.settings",
};
// Setting name -> input id.
const FIELDS = {
  system: "system-prompt",
  temperature: "temperature",
  top_p: "top-p",
  max_tokens: "max-tokens",
  tools: "tools",
  extra: "extra",
  api_key: "api-key",
};
const UNTITLED = "New conversation";

const $ = (id) => document.getElementById(id);

let conversations = load(KEYS.conversations, []);
let currentId = localStorage.getItem(KEYS.current);
let settings = load(KEYS.settings, {});
let modelName = "";
// The running request: its AbortController and the answer it writes.
let running = null;
// Each message's view in the page (rebuilt when the conversation is shown again).
const views = new WeakMap();

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function save() {
  try {
    localStorage.setItem(KEYS.conversations, JSON.stringify(conversations));
    localStorage.setItem(KEYS.current, currentId ?? "");
  } catch (e) {
    setStatus(`Cannot keep the conversations in this browser: ${e.message}`);
  }
}

function current() {
  return conversations.find((c) => c.id === currentId);
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(text) {
  $("status").textContent = text;
}

// ---- conversations ----

/** Starts a conversation (or stays on the current one when it is still empty). */
function newConversation() {
  const c = current();
  if (!c || c.messages.length > 0) {
    const conv = { id: newId(), title: UNTITLED, created: Date.now(), messages: [] };
    conversations.unshift(conv);
    currentId = conv.id;
    save();
  }
  renderList();
  renderMessages();
  $("prompt").focus();
}

function select(id) {
  currentId = id;
  save();
  renderList();
  renderMessages();
}

function remove(id) {
  if (running && running.conversation.id === id) running.controller.abort();
  conversations = conversations.filter((c) => c.id !== id);
  if (currentId === id) currentId = conversations[0]?.id ?? null;
  save();
  if (!current()) newConversation();
  else {
    renderList();
    renderMessages();
  }
}

function renderList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of conversations) {
    const item = el("li");
    const open = el("button", "open", c.title || UNTITLED);
    open.type = "button";
    open.title = c.title || UNTITLED;
    if (c.id === currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => select(c.id));
    const del = el("button", "delete", "×");
    del.type = "button";
    del.setAttribute("aria-label", `Delete conversation: ${c.title || UNTITLED}`);
    del.addEventListener("click", () => remove(c.id));
    item.append(open, del);
    list.append(item);
  }
}

// ---- messages ----

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = current();
  if (!conv) return;
  for (const m of conv.messages) {
    const view = messageView(m);
    box.append(view.root);
    views.set(m, view);
    update(m);
  }
  box.scrollTop = box.scrollHeight;
}

function messageView(m) {
  const root = el("article", `msg ${m.role}`);
  root.append(el("div", "role", m.role === "user" ? "You" : "Assistant"));
  const reasoning = el("details", "reasoning");
  const summary = el("summary", "", "Reasoning");
  const reasoningText = el("div", "reasoning-text");
  reasoning.append(summary, reasoningText);
  const content = el("div", "content");
  const calls = el("div", "tool-calls");
  const meta = el("p", "meta");
  root.append(reasoning, content, calls, meta);
  return { root, reasoning, summary, reasoningText, content, calls, meta };
}

/** Brings a message's view (when shown) up to date with the message. */
function update(m) {
  const v = views.get(m);
  if (!v || !v.root.isConnected) return;
  const streaming = running !== null && running.answer === m;
  v.reasoning.hidden = !m.reasoning;
  v.reasoningText.textContent = m.reasoning ?? "";
  v.summary.textContent = streaming && !m.content ? "Reasoning…" : "Reasoning";
  v.content.textContent = m.content ?? "";
  v.calls.replaceChildren();
  for (const call of m.tool_calls ?? []) {
    const box = el("div", "tool-call");
    box.append(el("div", "tool-name", `Tool call: ${call.function.name}`));
    box.append(el("pre", "tool-args", prettyJson(call.function.arguments)));
    v.calls.append(box);
  }
  v.root.classList.toggle("streaming", streaming);
  v.root.classList.toggle("error", Boolean(m.error));
  v.meta.textContent = meta(m, streaming);
  const box = $("messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function meta(m, streaming) {
  if (m.role !== "assistant") return "";
  if (m.error) return `Error: ${m.error}`;
  if (streaming) return "…";
  const parts = [];
  if (m.finish) parts.push(m.finish === "stopped" ? "stopped" : `finish: ${m.finish}`);
  if (m.usage) {
    parts.push(`${m.usage.completion_tokens} tokens`);
    if (m.seconds > 0) parts.push(`${(m.usage.completion_tokens / m.seconds).toFixed(1)} tokens/s`);
  }
  return parts.join(" · ");
}

// ---- the API ----

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = (settings.api_key ?? "").trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorText(res) {
  const body = await res.json().catch(() => null);
  const message = body?.error?.message ?? `${res.status} ${res.statusText}`;
  return res.status === 401 ? `${message} (Settings → API key)` : message;
}

async function loadModel() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (!res.ok) {
      if (res.status === 401) $("settings").open = true;
      setStatus(await errorText(res));
      return;
    }
    const model = (await res.json()).data?.[0];
    modelName = model?.id ?? "";
    $("model-name").textContent = modelName;
    setStatus("");
  } catch (e) {
    setStatus(`Cannot reach the server: ${e.message}`);
  }
}

/** The request body for `conv` (its messages up to the pending answer), or throws. */
function requestBody(conv, pending) {
  const messages = [];
  const system = (settings.system ?? "").trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of conv.messages) {
    if (m === pending || (m.error && !m.content)) continue;
    const out = { role: m.role, content: m.content ?? "" };
    if (m.tool_calls?.length) out.tool_calls = m.tool_calls;
    messages.push(out);
  }
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (modelName) body.model = modelName;
  for (const [name, parse] of [
    ["temperature", Number],
    ["top_p", Number],
    ["max_tokens", (v) => Number.parseInt(v, 10)],
  ]) {
    const raw = (settings[name] ?? "").trim();
    if (raw === "") continue;
    const v = parse(raw);
    if (!Number.isFinite(v)) throw new Error(`${name} is not a number: ${raw}`);
    body[name] = v;
  }
  const tools = (settings.tools ?? "").trim();
  if (tools) {
    let list;
    try {
      list = JSON.parse(tools);
    } catch (e) {
      throw new Error(`Tools are not valid JSON: ${e.message}`);
    }
    if (!Array.isArray(list)) throw new Error("Tools must be a JSON list");
    if (list.length) body.tools = list;
  }
  const extra = (settings.extra ?? "").trim();
  if (extra) {
    let fields;
    try {
      fields = JSON.parse(extra);
    } catch (e) {
      throw new Error(`More request fields are not valid JSON: ${e.message}`);
    }
    if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
      throw new Error("More request fields must be a JSON object");
    }
    Object.assign(body, fields, { stream: true });
  }
  return body;
}

/** Calls `onData` with each `data:` payload of a server-sent event stream, up to [DONE]. */
async function readEvents(stream, onData) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart().replace(/\r$/, ""))
        .join("\n");
      if (data === "") continue;
      if (data === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

/** One stream chunk into the answer. */
function apply(answer, chunk) {
  if (chunk.error) throw new Error(chunk.error.message ?? "the server failed");
  if (chunk.usage) answer.usage = chunk.usage;
  const choice = chunk.choices?.[0];
  if (!choice) return;
  const d = choice.delta ?? {};
  if (d.reasoning_content) answer.reasoning = (answer.reasoning ?? "") + d.reasoning_content;
  if (d.content) answer.content += d.content;
  for (const t of d.tool_calls ?? []) {
    answer.tool_calls ??= [];
    const call = (answer.tool_calls[t.index ?? answer.tool_calls.length] ??= {
      id: "",
      type: "function",
      function: { name: "", arguments: "" },
    });
    if (t.id) call.id = t.id;
    if (t.function?.name) call.function.name += t.function.name;
    if (t.function?.arguments) call.function.arguments += t.function.arguments;
  }
  if (choice.finish_reason) answer.finish = choice.finish_reason;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("messages").setAttribute("aria-busy", String(busy));
  document.body.dataset.busy = String(busy);
}

async function send(text) {
  if (!current()) newConversation();
  const conv = current();
  const answer = { role: "assistant", content: "" };
  let body;
  try {
    conv.messages.push({ role: "user", content: text });
    body = requestBody(conv, answer);
  } catch (e) {
    conv.messages.pop();
    setStatus(e.message);
    return false;
  }
  if (conv.title === UNTITLED) conv.title = text.replace(/\s+/g, " ").slice(0, 60);
  conv.messages.push(answer);
  running = { controller: new AbortController(), answer, conversation: conv };
  save();
  renderList();
  renderMessages();
  setBusy(true);
  setStatus("");
  let first = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: running.controller.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    await readEvents(res.body, (chunk) => {
      apply(answer, chunk);
      if (first === null && (answer.content || answer.reasoning)) first = performance.now();
      update(answer);
    });
    answer.seconds = first === null ? 0 : (performance.now() - first) / 1000;
    if (!answer.finish) answer.finish = "stop";
  } catch (e) {
    if (e.name === "AbortError") answer.finish = "stopped";
    else {
      answer.error = e.message;
      // Close the connection, so the server ends the generation.
      running.controller.abort();
    }
  } finally {
    running = null;
    setBusy(false);
    save();
    update(answer);
  }
  return true;
}

// ---- settings and wiring ----

function initSettings() {
  for (const [name, id] of Object.entries(FIELDS)) {
    const input = $(id);
    input.value = settings[name] ?? "";
    input.addEventListener("input", () => {
      settings[name] = input.value;
      localStorage.setItem(KEYS.settings, JSON.stringify(settings));
    });
  }
  $("api-key").addEventListener("change", loadModel);
}

function init() {
  initSettings();
  $("new-chat").addEventListener("click", newConversation);
  $("stop").addEventListener("click", () => running?.controller.abort());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && running) running.controller.abort();
  });
  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const prompt = $("prompt");
    const text = prompt.value.trim();
    if (!text || running) return;
    prompt.value = "";
    if (!(await send(text))) prompt.value = text;
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  if (!current()) newConversation();
  else {
    renderList();
    renderMessages();
  }
  setBusy(false);
  loadModel();
}

init();
