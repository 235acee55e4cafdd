// Outputs to DOM: ANSI-coloured text, sanitised HTML, images, errors. Everything from a
// kernel goes in as text (`textContent`) or through DOMPurify; nothing is ever run.

import DOMPurify from "./vendor/purify.es.mjs";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ANSI SGR colours to spans with classes (no inline styles: the CSP forbids them). State
// carries over from one write to the next, as a terminal's does.
const CSI = /\x1b\[([0-9;]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/g;

export class AnsiWriter {
  constructor(target) {
    this.target = target;
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.underline = false;
  }

  write(text) {
    let last = 0;
    for (const match of text.matchAll(CSI)) {
      this.put(text.slice(last, match.index));
      last = match.index + match[0].length;
      if (match[2] === "m") this.apply(match[1]);
    }
    this.put(text.slice(last));
  }

  apply(params) {
    const codes = params === "" ? [0] : params.split(";").map(Number);
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) {
        this.fg = this.bg = null;
        this.bold = this.underline = false;
      } else if (c === 1) this.bold = true;
      else if (c === 22) this.bold = false;
      else if (c === 4) this.underline = true;
      else if (c === 24) this.underline = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = c - 40;
      else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
      else if (c === 49) this.bg = null;
      else if (c === 38 || c === 48) {
        // 256 colours: the first 16 have classes; true colour is dropped
        if (codes[i + 1] === 5) {
          const n = codes[i + 2];
          if (n < 16) this[c === 38 ? "fg" : "bg"] = n;
          i += 2;
        } else if (codes[i + 1] === 2) i += 4;
      }
    }
  }

  put(text) {
    if (!text) return;
    if (this.fg === null && this.bg === null && !this.bold && !this.underline) {
      this.target.append(text);
      return;
    }
    const span = el("span", "", text);
    if (this.fg !== null) span.classList.add(`ansi-fg-${this.fg}`);
    if (this.bg !== null) span.classList.add(`ansi-bg-${this.bg}`);
    if (this.bold) span.classList.add("ansi-bold");
    if (this.underline) span.classList.add("ansi-underline");
    this.target.append(span);
  }
}

export function ansiBlock(text, className) {
  const pre = el("pre", className);
  new AnsiWriter(pre).write(text);
  return pre;
}

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

// HTML from a kernel (a DataFrame's table): scripts, handlers, forms and styles removed.
// The strict CSP would block scripts and inline styles anyway; this keeps them out of the
// page altogether.
export function sanitizedHtml(html) {
  const box = el("div", "html-output");
  box.append(
    DOMPurify.sanitize(html, {
      RETURN_DOM_FRAGMENT: true,
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe"],
      FORBID_ATTR: ["style"],
    }),
  );
  return box;
}

function image(src, alt) {
  const img = el("img", "image-output");
  img.alt = alt;
  img.src = src;
  return img;
}

const text = (value) => (Array.isArray(value) ? value.join("") : String(value));

// One mime bundle, in the order Jupyter prefers; never JavaScript.
export function renderBundle(data) {
  const alt = data["text/plain"] ? text(data["text/plain"]).slice(0, 200) : "output";
  if (data["text/html"] !== undefined) return sanitizedHtml(text(data["text/html"]));
  if (data["image/svg+xml"] !== undefined) {
    // As an image: an SVG in <img> cannot run script or reach the page.
    const svg = text(data["image/svg+xml"]);
    return image(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, alt);
  }
  for (const type of ["image/png", "image/jpeg", "image/gif"]) {
    if (data[type] !== undefined) return image(`data:${type};base64,${text(data[type]).trim()}`, alt);
  }
  if (data["text/markdown"] !== undefined) return el("pre", "markdown-output", text(data["text/markdown"]));
  if (data["text/plain"] !== undefined) return ansiBlock(text(data["text/plain"]), "text-output");
  return el("pre", "text-output", `[${Object.keys(data).join(", ")}]`);
}

export function renderError(event) {
  const box = el("div", "error-output");
  const traceback = (event.traceback || []).join("\n");
  box.append(ansiBlock(traceback || `${event.ename}: ${event.evalue}`, "traceback"));
  return box;
}
