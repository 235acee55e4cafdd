// The console: sign in with a key or a scoped token, pick a user, then a notebook-like page
// on that user's session (cells, streamed outputs, files, notes, notebook download).

import { ApiError, call, Channel, credential, setCredential, tokenClaims, upload, userPath } from "./api.js";
import { AnsiWriter, el, renderBundle, renderError } from "./render.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["sign-in", "pick-user", "session"];
let page = null; // the open SessionPage

function show(view) {
  for (const name of VIEWS) $(name).hidden = name !== view;
  const signedIn = view !== "sign-in";
  $("sign-out").hidden = !signedIn;
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function hashUser() {
  return decodeURIComponent(location.hash.slice(1));
}

// --- signing in, picking a user ---------------------------------------------------------

async function start() {
  if (page) page.close();
  page = null;
  const cred = credential();
  if (!cred) return show("sign-in");
  const claims = tokenClaims(cred);
  $("who").textContent = claims ? `token for ${claims.user}` : "API key";
  const user = hashUser() || (claims && claims.user);
  if (user) return openUser(user);
  return pickUser();
}

function signOut(message) {
  if (page) page.close();
  page = null;
  setCredential(null);
  $("who").textContent = "";
  notice(message || "");
  show("sign-in");
}

async function pickUser() {
  show("pick-user");
  const list = $("user-list");
  list.replaceChildren();
  try {
    const { sessions } = await call("GET", "/api/sessions");
    for (const s of sessions) {
      const button = el("button", "user", `${s.user} (${s.state})`);
      button.type = "button";
      button.addEventListener("click", () => (location.hash = encodeURIComponent(s.user)));
      const item = el("li");
      item.append(button);
      list.append(item);
    }
  } catch (err) {
    if (err.status === 401) return signOut(`Refused: ${err.message}.`);
    notice(err.message);
  }
}

async function openUser(user) {
  try {
    await call("GET", userPath(user)); // 404: no session yet, the socket makes one
  } catch (err) {
    if (err.status === 401) return signOut(`Refused for user ${user}: ${err.message}.`);
    if (!(err instanceof ApiError) || err.status !== 404) return notice(err.message);
  }
  notice("");
  show("session");
  page = new SessionPage(user);
}

// --- one user's session -----------------------------------------------------------------

class Cell {
  constructor(id, code, container) {
    this.id = id;
    this.done = false;
    this.node = el("section", "cell");
    const head = el("div", "cell-head");
    this.prompt = el("span", "prompt", "In [ ]");
    this.status = el("span", "cell-status", "sent");
    head.append(this.prompt, this.status);
    this.code = el("pre", "cell-code", code ?? "");
    this.outputs = el("div", "outputs");
    this.node.append(head, this.code, this.outputs);
    container.append(this.node);
    this.stream = null; // the <pre> the next stream text of the same name goes to
    this.displays = new Map(); // display_id -> [element]
    this.clearPending = false;
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.node.dataset.status = kind;
  }

  add(node) {
    if (this.clearPending) this.clear();
    this.outputs.append(node);
    this.stream = null;
  }

  clear() {
    this.outputs.replaceChildren();
    this.stream = null;
    this.clearPending = false;
  }

  streamText(name, text) {
    if (this.clearPending) this.clear();
    if (!this.stream || this.stream.name !== name) {
      const pre = el("pre", `stream ${name}`);
      this.outputs.append(pre);
      this.stream = { name, writer: new AnsiWriter(pre) };
    }
    this.stream.writer.write(text);
  }

  display(event) {
    const node = renderBundle(event.data || {});
    const id = event.display_id;
    if (event.update) {
      for (const old of this.displays.get(id) || []) old.replaceChildren(node.cloneNode(true));
      return;
    }
    const box = el("div", "display");
    box.append(node);
    if (id) this.displays.set(id, [...(this.displays.get(id) || []), box]);
    this.add(box);
  }
}

class SessionPage {
  constructor(user) {
    this.user = user;
    this.cells = new Map();
    this.sources = new Map(); // execution id -> code, from the notebook and from this page
    this.filesTimer = null;
    $("session-user").textContent = user;
    $("cells").replaceChildren();
    $("uploads").replaceChildren();
    this.setState("connecting");
    this.channel = new Channel(user, {
      onEvent: (e) => this.onEvent(e),
      onState: (s) => ($("conn").textContent = s),
      onRefused: (err) => signOut(`Refused for user ${user}: ${err.message}.`),
    });
    this.load();
  }

  async load() {
    try {
      const notebook = await call("GET", userPath(this.user, "/notebook"));
      for (const cell of notebook.cells) {
        const id = cell.metadata?.kss?.id;
        if (id) this.sources.set(id, [].concat(cell.source).join(""));
      }
    } catch (err) {
      if (err.status !== 404) notice(err.message);
    }
    this.channel.connect(); // since=0: the whole session replays, then live events
    this.refreshFiles();
  }

  close() {
    this.channel.stop();
    clearTimeout(this.filesTimer);
  }

  setState(state) {
    $("state").textContent = state;
    $("state").dataset.state = state;
  }

  run(code) {
    const id = `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    this.sources.set(id, code);
    this.cellFor(id, true).setStatus("sent", "sent");
    this.channel.send({ type: "execute", id, code });
  }

  // The cell of execution `id`; a new one when `fresh` (queued, started) and the old one
  // with that id is done: ids from other clients may repeat.
  cellFor(id, fresh) {
    let cell = this.cells.get(id);
    if (!cell || (cell.done && fresh)) {
      cell = new Cell(id, this.sources.get(id) ?? "", $("cells"));
      this.cells.set(id, cell);
      cell.node.scrollIntoView({ block: "nearest" });
    }
    return cell;
  }

  onEvent(e) {
    if (e.type === "status") this.setState(e.state);
    if (e.type === "note") return this.note(e.markdown);
    if (e.type === "gap") return this.gap(e);
    if (e.type === "file") this.scheduleFiles();
    if (e.type === "rejected") {
      if (e.id && this.cells.has(e.id)) this.cells.get(e.id).setStatus(`rejected: ${e.error.message}`, "error");
      else notice(`Rejected: ${e.error.message}`);
      return;
    }
    if (!e.id) return;
    const fresh = !e.late && (e.type === "queued" || (e.type === "status" && e.state === "busy"));
    const cell = this.cellFor(e.id, fresh);
    switch (e.type) {
      case "queued":
        cell.setStatus(`queued (${e.position} ahead)`, "queued");
        break;
      case "status":
        if (e.state === "busy") cell.setStatus("running", "busy");
        break;
      case "stream":
        cell.streamText(e.name, e.text);
        break;
      case "display":
        cell.display(e);
        break;
      case "clear_output":
        if (e.wait) cell.clearPending = true;
        else cell.clear();
        break;
      case "result": {
        const box = el("div", "result");
        box.append(el("span", "prompt out", `Out[${e.execution_count ?? " "}]`), renderBundle(e.data || {}));
        cell.add(box);
        break;
      }
      case "error":
        cell.add(renderError(e));
        break;
      case "done":
        cell.done = true;
        cell.prompt.textContent = `In [${e.execution_count ?? " "}]`;
        cell.setStatus(`${e.status} · ${Math.round(e.duration_ms)} ms${e.kernel_restarted ? " · new kernel" : ""}`, e.status);
        if (!cell.code.textContent) this.fillSource(cell); // run by another client
        break;
      default:
        break;
    }
  }

  async fillSource(cell) {
    try {
      const notebook = await call("GET", userPath(this.user, "/notebook"));
      const found = notebook.cells.find((c) => c.metadata?.kss?.id === cell.id);
      if (found && !cell.code.textContent) cell.code.textContent = [].concat(found.source).join("");
    } catch {
      // the code stays unknown; its outputs are shown all the same
    }
  }

  note(markdown) {
    const box = el("section", "note");
    box.append(el("pre", "", markdown));
    $("cells").append(box);
  }

  gap(e) {
    $("cells").append(el("p", "gap", `Events ${e.from_seq}-${e.to_seq} have expired and cannot be shown.`));
  }

  // --- files ---

  scheduleFiles() {
    clearTimeout(this.filesTimer);
    this.filesTimer = setTimeout(() => this.refreshFiles(), 150);
  }

  async refreshFiles() {
    let listing;
    try {
      listing = await call("GET", userPath(this.user, "/files?links=signed"));
    } catch (err) {
      return notice(err.message);
    }
    const rows = listing.files.map((f) => {
      const row = el("li", "file");
      const link = el("a", "file-name", f.name);
      link.href = f.url; // signed: opens without a key
      link.download = f.name.split("/").pop();
      const size = el("span", "file-size", formatSize(f.size));
      const remove = el("button", "file-delete", "Delete");
      remove.type = "button";
      remove.title = `Delete ${f.name}`;
      remove.addEventListener("click", () => this.deleteFile(f.name));
      row.append(link, size, remove);
      return row;
    });
    $("file-list").replaceChildren(...rows);
  }

  async deleteFile(name) {
    try {
      await call("DELETE", userPath(this.user, `/files/${encodeURIComponent(name)}`));
    } catch (err) {
      notice(err.message);
    }
    this.refreshFiles();
  }

  async uploadAll(files) {
    await Promise.all([...files].map((file) => this.uploadOne(file)));
    this.refreshFiles();
  }

  async uploadOne(file) {
    const row = el("li", "upload");
    const bar = el("progress");
    bar.max = 1;
    bar.value = 0;
    const label = el("span", "", file.name);
    row.append(label, bar);
    $("uploads").append(row);
    try {
      await upload(this.user, file, (fraction) => (bar.value = fraction));
      row.remove();
    } catch (err) {
      bar.remove();
      row.append(el("span", "error", ` ${err.message}`));
    }
  }

  async downloadNotebook() {
    try {
      const { url } = await call("GET", userPath(this.user, "/notebook/link"));
      const a = el("a");
      a.href = url; // signed: a plain navigation, no header needed
      a.download = "";
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      notice(err.message);
    }
  }

  async addNote(markdown) {
    try {
      await call("POST", userPath(this.user, "/notes"), { markdown });
      return true;
    } catch (err) {
      notice(err.message);
      return false;
    }
  }
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// --- wiring -----------------------------------------------------------------------------

function runInput() {
  const code = $("code").value;
  if (!page || !code.trim()) return;
  page.run(code);
  $("code").value = "";
}

$("sign-in-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setCredential($("credential").value.trim());
  $("credential").value = "";
  notice("");
  start();
});
$("sign-out").addEventListener("click", () => signOut());
$("user-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $("user-name").value.trim();
  if (user) location.hash = encodeURIComponent(user);
});
window.addEventListener("hashchange", () => credential() && start());

$("code").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.shiftKey || e.ctrlKey)) {
    e.preventDefault();
    runInput();
  }
});
$("run").addEventListener("click", runInput);
$("interrupt").addEventListener("click", () => page && page.channel.send({ type: "interrupt" }));
$("restart").addEventListener("click", () => page && page.channel.send({ type: "restart" }));
$("download-notebook").addEventListener("click", () => page && page.downloadNotebook());
$("note-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const markdown = $("note").value;
  if (page && markdown.trim() && (await page.addNote(markdown))) $("note").value = "";
});

const drop = $("drop-zone");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (page && e.dataTransfer) page.uploadAll(e.dataTransfer.files);
});
$("file-input").addEventListener("change", (e) => {
  if (page) page.uploadAll(e.target.files);
  e.target.value = "";
});

start();
