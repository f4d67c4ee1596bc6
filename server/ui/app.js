// The chat page: conversations, the composer, streaming answers with their reasoning, and the
// controls around them. Model text reaches the page only through markdown.js (text nodes) or
// textContent; nothing here assigns HTML.

import { APIError, AuthNeeded, getJSON, setApiKey, streamChat } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { loadConversations, loadSettings, saveConversations, saveSettings } from "./store.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conversations: $("conversations"),
  newChat: $("new-chat"),
  model: $("model"),
  think: $("think"),
  paramsToggle: $("params-toggle"),
  params: $("params"),
  temperature: $("temperature"),
  topP: $("top_p"),
  maxTokens: $("max_tokens"),
  system: $("system"),
  stats: $("stats"),
  messages: $("messages"),
  error: $("error"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
};

const state = {
  conversations: loadConversations(),
  current: null, // the open conversation
  controller: null, // AbortController of the running answer
  settings: loadSettings(),
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, className, onClick) {
  const b = el("button", className, label);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

// -- the API key

function askForKey(message) {
  return new Promise((resolve) => {
    ui.keyDialog.querySelector("p").textContent =
      `${message} The key is kept in this tab only (sessionStorage).`;
    ui.keyInput.value = "";
    const done = () => {
      ui.keyDialog.removeEventListener("close", done);
      resolve(ui.keyDialog.returnValue === "save");
    };
    ui.keyDialog.addEventListener("close", done);
    ui.keyDialog.returnValue = "";
    ui.keyDialog.showModal();
    ui.keyInput.focus();
  });
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(ui.keyInput.value.trim());
  ui.keyDialog.close("save");
});

/** Run `call`; when the server answers 401, ask for a key and try again (until the user gives up). */
async function withKey(call) {
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof AuthNeeded)) throw err;
      if (!(await askForKey(err.message))) throw err;
    }
  }
}

// -- settings: model, think switch, parameters drawer

function readNumber(input) {
  const v = input.value.trim();
  return v === "" || Number.isNaN(Number(v)) ? undefined : Number(v);
}

function storeSettings() {
  state.settings = {
    model: ui.model.value,
    think: ui.think.checked,
    temperature: ui.temperature.value,
    top_p: ui.topP.value,
    max_tokens: ui.maxTokens.value,
    system: ui.system.value,
  };
  saveSettings(state.settings);
}

function restoreSettings() {
  const s = state.settings;
  ui.think.checked = Boolean(s.think);
  ui.temperature.value = s.temperature ?? "";
  ui.topP.value = s.top_p ?? "";
  ui.maxTokens.value = s.max_tokens ?? "";
  ui.system.value = s.system ?? "";
}

for (const input of [ui.think, ui.temperature, ui.topP, ui.maxTokens, ui.system, ui.model]) {
  input.addEventListener("change", storeSettings);
}

ui.paramsToggle.addEventListener("click", () => {
  ui.params.hidden = !ui.params.hidden;
  ui.paramsToggle.setAttribute("aria-expanded", String(!ui.params.hidden));
});

async function loadModels() {
  const listing = await withKey(() => getJSON("/v1/models"));
  const models = (listing.data || []).filter((m) => m && typeof m.id === "string");
  ui.model.replaceChildren();
  const adapters = el("optgroup");
  adapters.label = "Adapters";
  for (const m of models) {
    const option = el("option", "", m.parent ? `adapter ${m.id}` : m.id);
    option.value = m.id;
    (m.parent ? adapters : ui.model).append(option);
  }
  if (adapters.children.length) ui.model.append(adapters);
  if (models.some((m) => m.id === state.settings.model)) ui.model.value = state.settings.model;
  // the server's sampling defaults, as placeholders of the empty fields
  try {
    const props = await getJSON("/v1/props");
    const p = (props.default_generation_settings || {}).params || {};
    if (p.temperature !== undefined) ui.temperature.placeholder = String(p.temperature);
    if (p.top_p !== undefined) ui.topP.placeholder = String(p.top_p);
    if (p.n_predict !== undefined) ui.maxTokens.placeholder = String(p.n_predict);
  } catch {
    // placeholders are a nicety
  }
}

async function loadModelsUntilReady() {
  for (;;) {
    try {
      await loadModels();
      showError("");
      return;
    } catch (err) {
      if (err instanceof APIError && err.status === 503) {
        showError(`${err.message}; trying again…`);
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      showError(err.message);
      return;
    }
  }
}

// -- conversations

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function persist() {
  saveConversations(state.conversations);
  renderSidebar();
}

function openConversation(conversation) {
  state.current = conversation;
  renderMessages();
  renderSidebar();
}

function startConversation() {
  const conversation = { id: newId(), title: "", updated: Date.now(), messages: [] };
  state.conversations.unshift(conversation);
  openConversation(conversation);
  return conversation;
}

function renderSidebar() {
  ui.conversations.replaceChildren(
    ...state.conversations.map((c) => {
      const li = el("li", c === state.current ? "current" : "");
      li.append(
        button(c.title || "New chat", "open", () => {
          if (!state.controller) openConversation(c);
        }),
        button("×", "delete", () => {
          if (state.controller && c === state.current) return;
          state.conversations = state.conversations.filter((x) => x !== c);
          if (c === state.current) state.current = null;
          persist();
          renderMessages();
        }),
      );
      li.lastChild.setAttribute("aria-label", "Delete conversation");
      return li;
    }),
  );
}

ui.newChat.addEventListener("click", () => {
  if (!state.controller) startConversation();
});

// -- messages

function statsText(stats) {
  if (!stats) return "";
  // decode speed: the tokens after the first one, over the time since the first one arrived
  const rate =
    stats.tokens > 1 && stats.seconds > 0
      ? ` · ${((stats.tokens - 1) / stats.seconds).toFixed(1)} tokens/s`
      : "";
  const count = `${stats.approx ? "≈" : ""}${stats.tokens} token${stats.tokens === 1 ? "" : "s"}`;
  return `${count}${rate}${stats.stopped ? " · stopped" : ""}`;
}

/** The view of one assistant message, updated in place while it streams. */
function assistantView(message, index) {
  const box = el("div", "msg assistant");
  const reasoning = el("details", "reasoning");
  reasoning.append(el("summary", "", "Reasoning"), el("div", "reasoning-text"));
  const content = el("div", "content");
  const footer = el("div", "actions");
  const stats = el("span", "msg-stats");
  footer.append(
    button("Regenerate", "regenerate", () => regenerate(index)),
    stats,
  );
  box.append(reasoning, content, footer);
  const update = () => {
    reasoning.hidden = !message.reasoning;
    reasoning.lastChild.textContent = message.reasoning || "";
    content.replaceChildren(renderMarkdown(message.content));
    stats.textContent = statsText(message.stats);
  };
  update();
  return { box, update, reasoning };
}

function userView(message, index) {
  const box = el("div", "msg user");
  const content = el("div", "content", message.content);
  const footer = el("div", "actions");
  footer.append(button("Edit", "edit", () => editMessage(box, index)));
  box.append(content, footer);
  return box;
}

function renderMessages() {
  const messages = state.current ? state.current.messages : [];
  ui.messages.replaceChildren(
    ...messages.map((m, i) => (m.role === "user" ? userView(m, i) : assistantView(m, i).box)),
  );
}

function editMessage(box, index) {
  if (state.controller) return;
  const original = state.current.messages[index].content;
  const area = el("textarea", "edit-area");
  area.value = original;
  const save = button("Save and send", "save", () => {
    const text = area.value.trim();
    if (!text) return;
    state.current.messages = state.current.messages.slice(0, index);
    state.current.messages.push({ role: "user", content: text });
    persist();
    renderMessages();
    generate();
  });
  const cancel = button("Cancel", "cancel", () => renderMessages());
  const actions = el("div", "actions");
  actions.append(save, cancel);
  box.replaceChildren(area, actions);
  area.focus();
}

function regenerate(index) {
  if (state.controller) return;
  state.current.messages = state.current.messages.slice(0, index);
  renderMessages();
  generate();
}

// -- sending and streaming

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function requestBody() {
  const history = state.current.messages.map((m) => ({ role: m.role, content: m.content }));
  const system = ui.system.value.trim();
  const body = {
    model: ui.model.value || undefined,
    messages: system ? [{ role: "system", content: system }, ...history] : history,
    think: ui.think.checked,
  };
  const temperature = readNumber(ui.temperature);
  const topP = readNumber(ui.topP);
  const maxTokens = readNumber(ui.maxTokens);
  if (temperature !== undefined) body.temperature = temperature;
  if (topP !== undefined) body.top_p = topP;
  if (maxTokens !== undefined) body.max_tokens = Math.trunc(maxTokens);
  return body;
}

async function generate() {
  const conversation = state.current;
  const body = requestBody();
  const message = { role: "assistant", content: "", reasoning: "" };
  conversation.messages.push(message);
  const view = assistantView(message, conversation.messages.length - 1);
  view.reasoning.open = true;
  ui.messages.append(view.box);
  view.box.classList.add("streaming");
  showError("");
  setBusy(true);
  const controller = new AbortController();
  state.controller = controller;
  let deltas = 0;
  let first = 0; // when the first delta arrived
  let last = 0; // and the latest one
  let pending = false;
  const paint = () => {
    pending = false;
    view.update();
    ui.stats.textContent = statsText(message.stats);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  const onDelta = ({ content, reasoning }) => {
    last = performance.now();
    if (!first) first = last;
    deltas += 1;
    if (content && !message.content) view.reasoning.open = false; // the answer begins: fold it
    message.content += content;
    message.reasoning += reasoning;
    message.stats = { tokens: deltas, seconds: (last - first) / 1000, approx: true };
    if (!pending) {
      pending = true;
      requestAnimationFrame(paint);
    }
  };
  try {
    const { usage } = await withKey(() => streamChat(body, controller.signal, onDelta));
    if (usage && typeof usage.completion_tokens === "number") {
      message.stats = { tokens: usage.completion_tokens, seconds: (last - first) / 1000 };
    }
  } catch (err) {
    if (controller.signal.aborted) {
      message.stats = { ...(message.stats || { tokens: 0, seconds: 0, approx: true }), stopped: true };
    } else {
      showError(err.message || String(err));
    }
  } finally {
    state.controller = null;
    setBusy(false);
    view.box.classList.remove("streaming");
    if (!message.content && !message.reasoning && !message.stats) {
      conversation.messages.pop(); // nothing came back: drop the empty answer
    }
    conversation.updated = Date.now();
    persist();
    if (conversation === state.current) renderMessages();
    ui.stats.textContent = statsText(message.stats);
  }
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || state.controller) return;
  const conversation = state.current || startConversation();
  if (!conversation.title) conversation.title = text.slice(0, 60);
  conversation.messages.push({ role: "user", content: text });
  ui.prompt.value = "";
  persist();
  renderMessages();
  generate();
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
});

// -- start

restoreSettings();
if (state.conversations.length) openConversation(state.conversations[0]);
else renderSidebar();
loadModelsUntilReady();
