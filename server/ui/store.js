// What the page remembers in this browser: conversations and settings in localStorage (nothing is
// sent anywhere but to this server's API). Stored values are read defensively: they are shown
// through the same untrusted-text path as model output.

const CONVERSATIONS = "hermesd.conversations";
const SETTINGS = "hermesd.settings";

function read(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || "null");
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page keeps working from memory
  }
}

function validMessage(m) {
  return m && (m.role === "user" || m.role === "assistant") && typeof m.content === "string";
}

export function loadConversations() {
  const list = read(CONVERSATIONS, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages))
    .map((c) => ({ ...c, title: String(c.title || ""), messages: c.messages.filter(validMessage) }));
}

export function saveConversations(list) {
  write(CONVERSATIONS, list);
}

export function loadSettings() {
  const s = read(SETTINGS, {});
  return s && typeof s === "object" ? s : {};
}

export function saveSettings(settings) {
  write(SETTINGS, settings);
}
