// The whole search lives in the URL (q, filters, like/unlike ids, concept, view), so a search or a
// filtered timeline can be bookmarked, shared, reloaded, and Back works.
export const FILTERS = ["after", "before", "camera", "path", "tag", "min_width", "min_height", "mode", "threshold", "sort"];
// What the page uses when the URL says nothing: the adaptive cutoff is on ("threshold=none" turns it off).
export const DEFAULTS = { mode: "auto", sort: "score", threshold: "auto" };
// Filters that browsing (no query) also applies; the others only rank a search.
export const BROWSE_FILTERS = ["after", "before", "camera", "path", "tag", "min_width", "min_height"];

export function readUrl() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get("q") || "",
    image: p.getAll("image"),
    like: p.getAll("like"),
    unlike: p.getAll("unlike"),
    concept: p.get("concept") || "",
    view: p.get("view") || "",
    start: p.get("start") || "",
    picture: p.get("picture") || "",
    filters: Object.fromEntries(FILTERS.map((f) => [f, p.get(f) || ""])),
  };
}

export function hasQuery(s) { return Boolean(s.q || s.image.length || s.concept || s.picture); }

// The search as query parameters: for the address bar (defaults left out, the open view kept)
// or for the API (defaults filled in).
export function toParams(s, forUrl) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  for (const i of s.image) p.append("image", i);
  if (s.concept) p.set("concept", s.concept);
  for (const i of s.like) p.append("like", i);
  for (const i of s.unlike) p.append("unlike", i);
  for (const f of FILTERS) {
    const v = s.filters[f];
    if (forUrl) { if (v && v !== DEFAULTS[f]) p.set(f, v); }
    else {
      const value = v || DEFAULTS[f] || "";
      if (value && value !== "none") p.set(f, value);
    }
  }
  if (forUrl && s.start) p.set("start", s.start);
  if (forUrl && s.picture) p.set("picture", s.picture);
  if (forUrl && s.view) p.set("view", s.view);
  return p;
}

export function browseParams(s) {
  const p = new URLSearchParams();
  for (const f of BROWSE_FILTERS) if (s.filters[f]) p.set(f, s.filters[f]);
  return p;
}

export function writeUrl(s, replace = false) {
  const p = toParams(s, true);
  const url = p.toString() ? `?${p}` : location.pathname;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
}
