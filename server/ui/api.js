// Talking to hermesd: the API key (kept for this tab in sessionStorage), JSON errors in OpenAI's
// shape, and the chat stream read as Server-Sent Events from fetch (EventSource cannot POST).

const KEY = "hermesd.apiKey";

export class AuthNeeded extends Error {}

export class APIError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `HTTP ${response.status}`;
}

/** fetch with the key; a 401 throws AuthNeeded, any other failure APIError with the server's message. */
export async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("authorization", "Bearer " + key);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) throw new AuthNeeded(await errorMessage(response));
  if (!response.ok) throw new APIError(await errorMessage(response), response.status);
  return response;
}

export async function getJSON(path) {
  return (await api(path)).json();
}

/** The `data:` payloads of an SSE body, one string per event, until the stream ends. */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        } // comments (": ping") and other fields carry nothing for us
      }
    }
    if (data.length) yield data.join("\n");
  } finally {
    reader.releaseLock();
  }
}

/**
 * Stream one chat completion. Calls onDelta({content, reasoning}) per chunk and returns
 * {usage, finishReason}. An error event after the stream began throws APIError.
 */
export async function streamChat(body, signal, onDelta) {
  const response = await api("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  let usage = null;
  let finishReason = null;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      continue;
    }
    if (event.error) throw new APIError(String(event.error.message || "error"), 0);
    if (event.usage) usage = event.usage;
    for (const choice of event.choices || []) {
      const delta = choice.delta || {};
      // --reasoning-field both sends the same text under two names: take one of them
      const reasoning = delta.reasoning_content ?? delta.reasoning ?? "";
      const content = delta.content ?? "";
      if (reasoning || content) onDelta({ content: String(content), reasoning: String(reasoning) });
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return { usage, finishReason };
}
