// The console's side of the API: REST calls with the bearer credential, uploads with
// progress, and the session WebSocket that resumes with `since` after a drop.

const CREDENTIAL = "kss.credential";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function credential() {
  return sessionStorage.getItem(CREDENTIAL);
}

export function setCredential(value) {
  if (value) sessionStorage.setItem(CREDENTIAL, value);
  else sessionStorage.removeItem(CREDENTIAL);
}

// A scoped token names its user (`kss1.<claims>.<mac>`); a key names nobody.
export function tokenClaims(value) {
  const parts = (value || "").split(".");
  if (parts.length !== 3 || parts[0] !== "kss1") return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    return { user: String(claims.u), expires: Number(claims.e) };
  } catch {
    return null;
  }
}

export function userPath(user, rest = "") {
  return `/api/sessions/${encodeURIComponent(user)}${rest}`;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, "error", `HTTP ${response.status}`);
  }
}

export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${credential()}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

// PUT one file; `onProgress(fraction)` as it goes (fetch cannot report upload progress).
export function upload(user, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", userPath(user, `/files/${encodeURIComponent(file.name)}`));
    xhr.setRequestHeader("Authorization", `Bearer ${credential()}`);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 201) resolve(body);
      else if (body && body.error) reject(new ApiError(xhr.status, body.error.code, body.error.message));
      else reject(new ApiError(xhr.status, "error", `HTTP ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the upload failed")));
    xhr.send(file);
  });
}

// The session's event stream. Every numbered event is delivered once, in order: after a
// drop the channel reconnects with `since=<last seq>` and skips anything already seen.
// Frames sent while it is down wait and go out, in order, once it is back.
export class Channel {
  constructor(user, { onEvent, onState, onRefused }) {
    this.user = user;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onRefused = onRefused;
    this.lastSeq = 0;
    this.outbox = [];
    this.ws = null;
    this.stopped = false;
    this.retry = 0;
    this.timer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = `token=${encodeURIComponent(credential())}&since=${this.lastSeq}`;
    return `${scheme}://${location.host}${userPath(this.user, "/ws")}?${query}`;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.onState(this.lastSeq ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.retry = 0;
      this.onState("connected");
      for (const frame of this.outbox.splice(0)) ws.send(frame);
    });
    ws.addEventListener("message", (e) => {
      const event = JSON.parse(e.data);
      if (typeof event.seq === "number") {
        if (event.seq <= this.lastSeq) return; // replayed twice across a reconnect
        this.lastSeq = event.seq;
      }
      this.onEvent(event);
    });
    ws.addEventListener("close", (e) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (e.code === 1001) {
        this.onState("closed"); // the session was closed: reopen when asked
        return;
      }
      if (!opened) this.checkRefused();
      this.onState("reconnecting");
      const delay = Math.min(250 * 2 ** this.retry, 5000);
      this.retry += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  // A handshake that fails says nothing to a page: ask over REST whether we are refused.
  async checkRefused() {
    try {
      await call("GET", userPath(this.user));
    } catch (err) {
      if (err.status === 401) {
        this.stop();
        this.onRefused(err);
      }
    }
  }

  send(frame) {
    const text = JSON.stringify(frame);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    else {
      this.outbox.push(text);
      if (!this.ws) this.connect();
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
