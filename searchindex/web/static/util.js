// Small helpers every module of the page uses: DOM building, the API client, the status line.
export const $ = (sel) => document.querySelector(sel);

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// An id, or a moment of a video as ID@SECONDS (a liked moment): that second's frame.
export const thumb = (id, size = 256) => {
  const [image, t] = String(id).split("@");
  return `/api/images/${image}/thumbnail?size=${size}` + (t !== undefined ? `&t=${t}` : "");
};

export const plural = (n, one, many = one + "s") => `${n.toLocaleString()} ${n === 1 ? one : many}`;

// The server's messages name CLI options (they are shared with `searchindex search`); the page
// names its own fields instead.
const WORDS = [
  [/\s*\(use -k N or --min-score X[^)]*\)/, ""],
  [/--min-width/g, "Min. width"], [/--min-height/g, "Min. height"], [/--after/g, "After"],
  [/--before/g, "Before"], [/--threshold/g, "Cutoff"], [/--min-score/g, "Minimum score"], [/--mode/g, "Mode"],
  [/--sort/g, "Sort"], [/--camera/g, "Camera"], [/--tag/g, "Tag"], [/--near LAT,LON/g, "a place"],
  [/--radius/g, "Radius"], [/--offset/g, "Page"], [/-k\b/g, "Results per page"],
  [/give a text QUERY, --image PATH, or --plus TERM/, "type what you are looking for"],
];
export function pageWords(message) {
  let text = String(message || "");
  for (const [from, to] of WORDS) text = text.replace(from, to);
  return text;
}

export class ApiError extends Error {
  constructor(message, status, parameter) { super(pageWords(message)); this.status = status; this.parameter = parameter; }
}

// JSON from the API; an ApiError with the page's wording when the server says no, a TypeError
// ("offline") when it cannot be reached.
export async function getJson(url, options) {
  const r = await fetch(url, options);
  const body = r.status === 204 ? null : await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new ApiError((body && body.error) || r.statusText, r.status, body && body.parameter);
  return body;
}

export function postJson(url, data, method = "POST") {
  return getJson(url, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
}

export function offline(err) { return !(err instanceof ApiError); }

// The status line: text, and optionally one action button (Retry, Undo, Show anyway...).
export function status(text, action = null) {
  const box = $("#status");
  box.replaceChildren(text);
  if (action) box.append(" ", el("button", { type: "button", class: "status-action", onclick: action.run }, action.label));
}
