// The console's only way to keyledger: the /v1 API, called with the person's service key.
//
// The key lives in this tab's sessionStorage (gone when the tab closes), never in a
// cookie, localStorage or a URL. Requests carry it in the Authorization header, with
// credentials omitted so the browser adds nothing of its own.

const STORE = "keyledger.serviceKey";

export const session = {
  get key() {
    return sessionStorage.getItem(STORE);
  },
  signIn(key) {
    sessionStorage.setItem(STORE, key);
  },
  signOut() {
    sessionStorage.removeItem(STORE);
  },
};

/** A refusal from the API, with its stable code, message and details. */
export class ApiError extends Error {
  constructor(status, payload) {
    const error = (payload && payload.error) || {};
    super(error.message || `keyledger answered ${status}`);
    this.status = status;
    this.code = error.code || "unknown";
    this.details = error.details;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key || ""}`, ...extra };
}

/** Call the API; the parsed JSON answer, or an ApiError. */
export async function call(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { error: { code: "network", message: "keyledger cannot be reached" } });
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

export const orgPath = (org) => `/v1/orgs/${encodeURIComponent(org)}`;
export const keyPath = (org, id) => `${orgPath(org)}/keys/${encodeURIComponent(id)}`;

function parseBlock(block) {
  const message = {};
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const cut = line.indexOf(":");
    const name = cut < 0 ? line : line.slice(0, cut);
    const value = cut < 0 ? "" : line.slice(cut + 1).replace(/^ /, "");
    message[name] = name === "data" && message.data ? `${message.data}\n${value}` : value;
  }
  return message;
}

/** How long a stream may stay silent before it counts as stalled (ms). */
export function stallMilliseconds(heartbeatHeader) {
  const heartbeat = Number.parseFloat(heartbeatHeader || "");
  // Without the header, assume the server's default of 15 s heartbeats.
  const seconds = Number.isFinite(heartbeat) && heartbeat > 0 ? heartbeat : 15;
  // Two and a half beats: one late heartbeat is no stall (15 s beats: 37.5 s).
  return Math.max(2.5 * seconds, 1) * 1000;
}

/**
 * Follow an org's live events (GET /v1/orgs/{org}/events/stream) until stop() is called.
 *
 * EventSource cannot send an Authorization header, and the key must not go into a
 * URL, so the stream is read with fetch(): same header, same authorization as every
 * other call. After a drop it reconnects with Last-Event-ID, so nothing is missed.
 * A connection that goes silent (no byte, not even a heartbeat, for twice the
 * server's heartbeat interval) is taken as dropped: a lost network often never
 * fails the fetch, so without this the badge would say live over a stale table.
 * onState receives "live", "reconnecting", "refused" (403/404) or "unauthorized" (401).
 */
export function watch(org, onEvent, onState) {
  let last = null;
  let stopped = false;
  let controller = null;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function once() {
    controller = new AbortController();
    const extra = { Accept: "text/event-stream" };
    if (last !== null) extra["Last-Event-ID"] = last;
    const response = await fetch(`${orgPath(org)}/events/stream`, {
      headers: headers(extra),
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) return "unauthorized";
    if ([403, 404].includes(response.status)) return "refused";
    if (!response.ok || !response.body) return null;
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const stall = stallMilliseconds(response.headers.get("Keyledger-Heartbeat-Seconds"));
    let buffer = "";
    for (;;) {
      const aborting = controller;
      const timer = setTimeout(() => aborting.abort(), stall);
      let chunk;
      try {
        chunk = await reader.read();
      } finally {
        clearTimeout(timer);
      }
      const { value, done } = chunk;
      if (done) return null;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parseBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message.event === "close") continue;
        if (message.id) last = message.id;
        if (message.data && message.event) onEvent(JSON.parse(message.data));
      }
    }
  }

  (async () => {
    while (!stopped) {
      let refusal = null;
      try {
        refusal = await once();
      } catch {
        refusal = null;
      }
      if (stopped) return;
      if (refusal) {
        onState(refusal);
        return;
      }
      onState("reconnecting");
      await sleep(1000);
    }
  })();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
