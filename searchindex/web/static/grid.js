// The grid of tiles: rendering (with date headings when browsing), one Tab stop for the whole grid
// (roving tabindex: arrows move, Enter opens, l/u/m act on the focused tile), and selecting
// (Space, Ctrl/Shift-click, Ctrl-A).
import { $, el, thumb } from "./util.js";
import { state, actions } from "./state.js";
import { tileHooks } from "./hooks.js";

export function label(r) {
  const name = r.path.split("/").pop();
  return r.caption ? `${r.caption} (${name})` : name;
}

// One meaning for the number on a tile whatever the mode: the CLIP similarity (likes, hybrid fusion
// and reranking change the order, shown by position, never this number); word matches (text mode)
// have none.
export function shownScore(r) {
  if (r.vector_score !== undefined && r.vector_score !== null) return r.vector_score;
  if (r.text_score !== undefined && r.text_score !== null) return null;
  return r.score !== undefined && r.score !== null ? r.score : null;
}

export function tiles() { return [...document.querySelectorAll("#grid .tile")]; }

const MONTH = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "long" });
const DAY = new Intl.DateTimeFormat(undefined, { weekday: "short", year: "numeric", month: "long", day: "numeric" });

// Day headings when the first page spans under a month (a busy library), else month headings.
export function headingKey(date, byDay) { return date ? date.slice(0, byDay ? 10 : 7) : ""; }
function headingText(key) {
  if (!key) return "Date unknown";
  const [y, m, d] = key.split("-").map(Number);
  return d ? DAY.format(new Date(y, m - 1, d)) : MONTH.format(new Date(y, m - 1, 1));
}

export function renderTiles(results, start, s) {
  const grid = $("#grid");
  const frag = document.createDocumentFragment();
  let last = start > 0 ? state.results[start - 1] : null;
  results.forEach((r, n) => {
    const i = start + n;
    if (state.browsing) {
      const key = headingKey(r.date, state.byDay);
      if (!last || headingKey(last.date, state.byDay) !== key) frag.append(el("h2", { class: "date-heading", "data-key": key }, headingText(key)));
      last = r;
    }
    frag.append(tile(r, i, s));
  });
  grid.append(frag);
  for (const hook of tileHooks) hook([...grid.querySelectorAll(".tile")].slice(start), results);
  setActive(state.active, false);
}

function tile(r, i, s) {
  const id = String(r.image_id);
  const liked = s.like.includes(id), unliked = s.unlike.includes(id), selected = state.selected.has(id);
  const cls = "tile" + (liked ? " liked" : "") + (unliked ? " unliked" : "") + (selected ? " selected" : "");
  return el("div", { class: cls, "data-image-id": id, "data-index": i, tabindex: "-1", role: "group",
                     "aria-label": label(r) + (selected ? ", selected" : "") },
    el("img", { src: thumb(id), alt: label(r), loading: i < 24 ? "eager" : "lazy", decoding: "async", onclick: (ev) => clickTile(ev, i) }),
    shownScore(r) !== null ? el("span", { class: "score", "aria-hidden": "true", title: "CLIP similarity" }, shownScore(r).toFixed(3)) : null,
    el("button", { type: "button", class: "select", tabindex: "-1", "aria-pressed": String(selected),
                   "aria-label": `Select ${label(r)}`, title: "Select (Space)", onclick: () => toggleSelected(i) }, "✓"),
    el("div", { class: "acts" },
      el("button", { type: "button", class: "like", tabindex: "-1", "aria-pressed": String(liked), title: "Like: rank images like this one higher (l)", onclick: () => actions.toggle("like", id, i) }, "Like"),
      el("button", { type: "button", class: "unlike", tabindex: "-1", "aria-pressed": String(unliked), title: "Not like this: rank images like this one lower (u)", onclick: () => actions.toggle("unlike", id, i) }, "Not"),
      el("button", { type: "button", class: "similar", tabindex: "-1", title: "Search for images similar to this one (m)", onclick: () => actions.similar(id) }, "Similar")));
}

// The grid's single Tab stop: the active tile and its own buttons; every other tile is -1.
export function setActive(i, focus = true) {
  const all = tiles();
  if (!all.length) return;
  i = Math.max(0, Math.min(all.length - 1, i));
  state.active = i;
  all.forEach((t, n) => {
    const on = n === i ? "0" : "-1";
    if (t.getAttribute("tabindex") !== on) {
      t.setAttribute("tabindex", on);
      for (const b of t.querySelectorAll("button")) b.setAttribute("tabindex", on);
    }
  });
  if (focus) {
    all[i].focus();
    if (i >= all.length - 6 && state.next !== null && !state.loading) actions.more();
  }
}

// The tile in the row above or below whose centre is nearest (headings may sit between rows).
function vertical(i, down) {
  const all = tiles();
  const here = all[i].getBoundingClientRect();
  const cx = here.left + here.width / 2;
  let best = -1, bestTop = null, bestDx = Infinity;
  all.forEach((t, n) => {
    const r = t.getBoundingClientRect();
    if (down ? r.top <= here.top + 1 : r.top >= here.top - 1) return;
    if (bestTop !== null && (down ? r.top > bestTop + 1 : r.top < bestTop - 1)) return;
    if (bestTop === null || Math.abs(r.top - bestTop) > 1) { bestTop = r.top; bestDx = Infinity; }
    const dx = Math.abs(r.left + r.width / 2 - cx);
    if (dx < bestDx) { bestDx = dx; best = n; }
  });
  return best === -1 ? i : best;
}

// -- selecting -------------------------------------------------------------------------------------

export function toggleSelected(i, range = false) {
  const all = tiles();
  const ids = range && state.anchor !== null
    ? all.slice(Math.min(state.anchor, i), Math.max(state.anchor, i) + 1).map((t) => t.dataset.imageId)
    : [all[i].dataset.imageId];
  const on = range ? true : !state.selected.has(ids[0]);
  for (const id of ids) on ? state.selected.add(id) : state.selected.delete(id);
  if (!range) state.anchor = i;
  paintSelection();
}

export function selectAll() { for (const t of tiles()) state.selected.add(t.dataset.imageId); paintSelection(); }
export function clearSelection() { state.selected.clear(); state.anchor = null; paintSelection(); }

export function paintSelection() {
  for (const t of tiles()) {
    const on = state.selected.has(t.dataset.imageId);
    t.classList.toggle("selected", on);
    t.querySelector("button.select").setAttribute("aria-pressed", String(on));
    const name = t.querySelector("img").alt;
    t.setAttribute("aria-label", name + (on ? ", selected" : ""));
  }
  for (const t of document.querySelectorAll("#view .tile")) { // the duplicates view's copies (Esc clears them too)
    const on = state.selected.has(t.dataset.imageId), button = t.querySelector("button.select");
    t.classList.toggle("selected", on);
    if (button) button.setAttribute("aria-pressed", String(on));
  }
  if (actions.selectionChanged) actions.selectionChanged();
}

function clickTile(ev, i) {
  if (ev.shiftKey) { toggleSelected(i, true); state.anchor = i; }
  else if (ev.ctrlKey || ev.metaKey || state.selected.size) toggleSelected(i);
  else { setActive(i, false); actions.open(i); }
}

// Keys on a focused tile; true when handled.
export function onGridKey(ev, tileEl) {
  const i = Number(tileEl.dataset.index), id = tileEl.dataset.imageId;
  const onTile = ev.target === tileEl;
  if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") { setActive(i + (ev.key === "ArrowRight" ? 1 : -1)); }
  else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") { setActive(vertical(i, ev.key === "ArrowDown")); }
  else if (ev.key === "Home") setActive(0);
  else if (ev.key === "End") setActive(tiles().length - 1);
  else if (ev.key === "Enter" && onTile) actions.open(i);
  else if (ev.key === " " && onTile) toggleSelected(i, ev.shiftKey);
  else if (ev.key === "l") actions.toggle("like", id, i);
  else if (ev.key === "u") actions.toggle("unlike", id, i);
  else if (ev.key === "m") actions.similar(id);
  else return false;
  ev.preventDefault();
  return true;
}
