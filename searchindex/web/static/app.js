// searchindex serve: the page's entry module. Plain JavaScript modules, no build step, no
// third-party code.  Its parts: util.js (DOM, API client, status line), url.js (the URL is the
// state), state.js, grid.js (tiles, keyboard, selecting), detail.js (the detail view),
// selection.js (the selection bar), views.js (tags, duplicates, errors) and hooks.js (where a
// feature's own module plugs in).
import { $, el, thumb, getJson, postJson, status, plural, offline } from "./util.js";
import { FILTERS, DEFAULTS, readUrl, writeUrl, toParams, browseParams, hasQuery } from "./url.js";
import { state, actions } from "./state.js";
import { renderTiles, setActive, tiles, onGridKey, selectAll, clearSelection } from "./grid.js";
import { openDetail, closeDetail, wireDetail, onDetailKey } from "./detail.js";
import { renderBar, wireSelection, fillConcepts } from "./selection.js";
import { showView, knownView, loadTags } from "./views.js";
import { views } from "./hooks.js";
import { wirePicture } from "./picture.js";

const PAGE = 60;
const MONTH_DAYS = 31;
const LABELS = { after: "After", before: "Before", camera: "Camera", path: "Folder", tag: "Tag", min_width: "Min. width",
                 min_height: "Min. height", mode: "Mode", threshold: "Cutoff", sort: "Sort" };
// The last answer for each request: Back still shows a page when the server cannot be reached.
const answers = new Map();

async function fetchPage(url, picture = null) {
  try {
    const body = picture
      ? await getJson(url, { method: "POST", headers: { "Content-Type": picture.type || "application/octet-stream" }, body: picture })
      : await getJson(url);
    answers.set(url, body);
    return { body, stale: false };
  } catch (err) {
    if (offline(err) && !picture && answers.has(url)) return { body: answers.get(url), stale: true };
    throw err;
  }
}

function describe(s) {
  if (s.picture) return `your picture (${s.picture})`;
  if (s.concept) return `concept “${s.concept}”`;
  if (s.q) return `“${s.q}”`;
  return "this image";
}

// -- one result set: a search, or the library by date ----------------------------------------------

async function run(append = false) {
  const s = readUrl();
  syncControls(s);
  renderChips(s);
  if (s.view && !knownView(s.view)) {
    const unknown = s.view;
    s.view = "";
    writeUrl(s, true);
    await run(append);
    status(`There is no “${unknown}” view; here are your photos.`);
    return;
  }
  for (const b of document.querySelectorAll("nav [data-view]")) b.setAttribute("aria-current", String(b.dataset.view === s.view));
  if (s.view) {
    $("#results").hidden = true; $("#teach").hidden = true; $("#view").hidden = false;
    clearSelection();
    return showView(s.view);
  }
  $("#view").hidden = true;
  $("#results").hidden = false;
  renderStrip(s);
  if (s.picture && (!state.picture || (state.picture.name || "pasted picture") !== s.picture)) {
    // A picture is never kept (not by the server, not in the URL): after a reload it is gone.
    writeUrl({ ...s, picture: "" }, true);
    await run(append);
    status("The picture is not kept after a reload: drop, paste or choose it again.");
    return;
  }
  const browsing = !hasQuery(s);
  const generation = ++state.generation;
  let url;
  if (browsing) {
    const p = browseParams(s);
    p.set("k", PAGE);
    if (append) p.set("cursor", state.next); else if (s.start) p.set("start", s.start);
    url = `/api/browse?${p}`;
  } else {
    // Examples re-rank the results and the library has no cutoff for that order (yet): none then.
    const taught = s.like.length + s.unlike.length > 0 || Boolean(s.concept);
    if (!append) state.phase = (s.filters.threshold || DEFAULTS.threshold) === "auto" && !taught ? "strong" : "all";
    const p = toParams(s, false);
    p.set("k", PAGE);
    p.set("offset", append ? state.results.length : 0);
    // Past the cutoff: the same ranking, on.  Taught: no cutoff.
    if (state.phase === "weaker" || (taught && p.get("threshold") === "auto")) p.delete("threshold");
    if (s.picture) { p.delete("picture"); p.delete("mode"); }
    url = s.picture ? `/api/search/image?${p}` : `/api/search?${p}`;
  }
  document.title = browsing ? "Photos — searchindex" : `${s.q || s.concept || s.picture || "Similar images"} — searchindex`;
  state.loading = true;
  if (!append) status(browsing ? "Loading your photos…" : "Searching…");
  try {
    const { body, stale } = await fetchPage(url, s.picture ? state.picture : null);
    if (generation !== state.generation) return; // a newer request started meanwhile
    const items = browsing ? body.images : body.results;
    if (!append) {
      state.results = []; state.active = 0; state.browsing = browsing;
      state.selected.clear(); state.anchor = null; renderBar();
      $("#grid").replaceChildren();
      window.scrollTo(0, 0); // a new result set starts at its top, whatever was scrolled before
      if (browsing) {
        const first = items[0] && items[0].date, last = items.length && items[items.length - 1].date;
        state.byDay = Boolean(first && last) && (Date.parse(first) - Date.parse(last)) / 864e5 < MONTH_DAYS;
        loadMonths(s);
      }
    }
    $("#browse-bar").hidden = !browsing;
    const start = state.results.length;
    if (!browsing && state.phase === "weaker" && start === state.strong && items.length) {
      $("#grid").append(el("h2", { class: "divider" }, state.strong ? "Weaker matches" : "Closest matches"));
    }
    state.results.push(...items);
    state.next = browsing ? body.next_cursor : body.next_offset;
    renderTiles(items, start, s);
    const note = stale ? " — the server cannot be reached: this is the page as it was." : "";
    if (browsing) {
      const more = state.next !== null ? " (more below)" : "";
      status(state.results.length ? `${plural(state.results.length, "photo")}, newest first${more}${note}` : "No photos match these filters.");
    } else if (state.phase === "strong" && state.next === null) {
      // The cutoff's end: what stands out is shown; the rest stays reachable below a divider.
      state.strong = state.results.length;
      state.phase = "weaker";
      state.next = state.strong;
      if (state.strong) status(`${plural(state.strong, "result")} for ${describe(s)} (weaker matches below)${note}`);
      else {
        await run(true);
        if (generation + 1 === state.generation && state.results.length) {
          status(`Nothing stands out for ${describe(s)}: no photo matches it clearly better than the rest. The closest matches follow.`);
        }
      }
    } else if (state.phase === "weaker") {
      status(state.results.length ? `${plural(state.strong, "result")} for ${describe(s)} (weaker matches below)${note}` : body.message || "No results.");
    } else {
      const more = state.next !== null ? " (more below)" : "";
      status(state.results.length ? `${plural(state.results.length, "result")} for ${describe(s)}${more}${note}` : body.message || "No results.");
    }
    $("#more").hidden = state.next === null;
  } catch (err) {
    if (generation !== state.generation) return;
    if (offline(err)) {
      // Keep what is shown; the request can be tried again.
      status("The server cannot be reached (is searchindex serve still running?).", { label: "Retry", run: () => run(append) });
    } else {
      status(err.message);
      if (!append) { state.results = []; $("#grid").replaceChildren(); $("#more").hidden = true; }
    }
  } finally {
    if (generation === state.generation) state.loading = false;
  }
}

async function loadMonths(s) {
  try {
    const { months } = await getJson(`/api/browse/months?${browseParams(s)}`);
    const years = new Map();
    for (const m of months) {
      const y = m.month.slice(0, 4);
      if (!years.has(y)) years.set(y, []);
      years.get(y).push(m);
    }
    const fmt = new Intl.DateTimeFormat(undefined, { month: "long" });
    $("#jump").replaceChildren(el("option", { value: "" }, "Newest"), ...[...years].map(([y, ms]) => el("optgroup", { label: y },
      el("option", { value: y }, `${y} (all)`),
      ...ms.map((m) => el("option", { value: m.month }, `${fmt.format(new Date(Number(y), Number(m.month.slice(5)) - 1, 1))} ${y} (${m.images})`)))));
    $("#jump").value = s.start;
  } catch (err) { /* the control stays as it was */ }
}

// -- liking, more like this ---------------------------------------------------------------------------

async function toggle(kind, id, index = 0, fromDetail = false) {
  const s = readUrl();
  const other = kind === "like" ? "unlike" : "like";
  s[other] = s[other].filter((x) => x !== id);
  s[kind] = s[kind].includes(id) ? s[kind].filter((x) => x !== id) : [...s[kind], id];
  if (!hasQuery(s) && kind === "like" && s.like.length) s.image = [String(parseInt(s.like[0], 10))];  // ID@S: its video
  writeUrl(s);
  await run();
  if (fromDetail && $("#lightbox").open) {
    // The detail view stays open on the same photo (focus stays in it); arrows go on from here.
    const at = state.results.findIndex((r) => String(r.image_id) === id);
    state.lbIndex = at >= 0 ? at : index - 1;
    const now = readUrl();
    $("#lb-like").setAttribute("aria-pressed", String(now.like.includes(id)));
    $("#lb-unlike").setAttribute("aria-pressed", String(now.unlike.includes(id)));
  } else {
    setActive(Math.min(index, tiles().length - 1)); // focus stays where it was in the grid
  }
}

async function similar(id) {
  const s = readUrl();
  closeDetail();
  writeUrl({ ...s, q: "", image: [id], like: [], unlike: [], concept: "", view: "", start: "", picture: "" });
  await run();
  setActive(0);
}

// -- the strip of liked / unliked examples, and concepts -------------------------------------------------

function renderStrip(s) {
  const show = s.like.length + s.unlike.length > 0;
  $("#teach").hidden = !show;
  for (const [kind, list] of [["like", "#liked"], ["unlike", "#unliked"]]) {
    $(list).replaceChildren(...s[kind].map((id) => el("li", { "data-image-id": id },
      el("img", { src: thumb(id, 128), alt: `example ${id}` }),
      el("button", { type: "button", "aria-label": `Remove example ${id}`, onclick: () => toggle(kind, id) }, "×"))));
  }
}

async function loadConcepts() {
  try {
    const { concepts } = await getJson("/api/concepts");
    $("#concepts").hidden = concepts.length === 0;
    $("#concept-list").replaceChildren(...concepts.map((c) => el("li", {},
      el("button", { type: "button", class: "concept", title: c.query || "", onclick: () => { writeUrl({ ...readUrl(), q: "", image: [], like: [], unlike: [], concept: c.name, view: "", start: "", picture: "" }); run(); } }, c.name),
      el("button", { type: "button", class: "del", "aria-label": `Delete concept ${c.name}`, title: `Delete concept ${c.name}`, onclick: () => deleteConcept(c) }, "×"))));
    fillConcepts(concepts);
  } catch (err) { status(err.message); }
}

// A concept keeps image ids: a liked moment (ID@SECONDS) is saved as its video.
const ids = (list) => [...new Set(list.map((x) => parseInt(x, 10)))];

async function saveConcept(ev) {
  ev.preventDefault();
  const s = readUrl();
  const name = ev.target.elements.name.value.trim();
  if (!name) return;
  try {
    await postJson("/api/concepts", { name, query: s.q || null, like: ids(s.like), unlike: ids(s.unlike) });
    ev.target.reset();
    status(`Saved concept “${name}”.`);
    loadConcepts();
  } catch (err) { status(err.message); }
}

// One click deletes; the notice offers to put it back as it was.
async function deleteConcept(c) {
  try {
    await getJson(`/api/concepts/${encodeURIComponent(c.name)}`, { method: "DELETE" });
    await loadConcepts();
    status(`Deleted concept “${c.name}”.`, { label: "Undo", run: async () => {
      try {
        await postJson("/api/concepts", { name: c.name, query: c.query, like: c.like, unlike: c.unlike });
        await loadConcepts();
        status(`Concept “${c.name}” is back.`);
      } catch (err) { status(err.message); }
    } });
  } catch (err) { status(err.message); }
}

// -- filters and their chips ------------------------------------------------------------------------------

function syncControls(s) {
  $("#q").value = s.q;
  const form = $("#filters");
  for (const f of FILTERS) form.elements[f].value = s.filters[f] || DEFAULTS[f] || "";
}

function activeFilters(s) {
  return FILTERS.filter((f) => s.filters[f] && s.filters[f] !== DEFAULTS[f]);
}

function renderChips(s) {
  const active = activeFilters(s);
  $("#chips").hidden = active.length === 0;
  $("#chip-list").replaceChildren(...active.map((f) => el("li", {},
    el("span", {}, `${LABELS[f]}: ${s.filters[f]}`),
    el("button", { type: "button", "aria-label": `Remove filter ${LABELS[f]}: ${s.filters[f]}`, title: "Remove this filter",
                   onclick: () => { const now = readUrl(); now.filters[f] = ""; writeUrl(now); run(); } }, "×"))));
}

function applyFilters(ev) {
  if (ev) ev.preventDefault();
  const s = readUrl();
  const form = $("#filters");
  for (const f of FILTERS) s.filters[f] = form.elements[f].value.trim();
  const q = $("#q").value.trim(); // what was typed in the box counts too
  if (q !== s.q) Object.assign(s, { q, image: q ? [] : s.image, like: [], unlike: [], concept: q ? "" : s.concept });
  s.view = "";
  writeUrl(s);
  run();
}

// -- keyboard -----------------------------------------------------------------------------------------------

function onKey(ev) {
  if ($("#lightbox").open) { onDetailKey(ev); return; } // Esc closes the dialog natively
  if ($("#help").open) return;
  if (ev.target.matches("input, select, textarea")) return;
  if (ev.key === "/") { ev.preventDefault(); $("#q").focus(); $("#q").select(); return; }
  if (ev.key === "?") { $("#help").showModal(); return; }
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "a" && !$("#results").hidden) { ev.preventDefault(); selectAll(); return; }
  if (ev.key === "Escape" && state.selected.size) { clearSelection(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tile = ev.target.closest && ev.target.closest("#grid .tile");
  if (tile) onGridKey(ev, tile);
}

// -- wiring -------------------------------------------------------------------------------------------------

function navButtons() {
  const nav = $("nav");
  for (const [name, v] of views) {
    if (!nav.querySelector(`[data-view="${name}"]`)) {
      const b = el("button", { type: "button", "data-view": name }, v.label);
      b.addEventListener("click", () => { writeUrl({ ...readUrl(), view: name }); run(); });
      nav.insertBefore(b, $("#help-button"));
    }
  }
}

Object.assign(actions, {
  toggle, similar, open: openDetail, more: () => run(true), refresh: () => run(),
  selectionChanged: renderBar,
});

function start() {
  $("#search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = readUrl();
    const q = $("#q").value.trim();
    // A new text starts a new search: examples belong to the old one.
    const same = q === s.q;
    writeUrl({ ...s, q, image: q ? [] : s.image, like: same ? s.like : [], unlike: same ? s.unlike : [], concept: q ? "" : s.concept, view: "", start: "", picture: q ? "" : s.picture });
    run();
  });
  $("#filters-toggle").addEventListener("click", () => {
    const f = $("#filters");
    f.hidden = !f.hidden;
    $("#filters-toggle").setAttribute("aria-expanded", String(!f.hidden));
    if (!f.hidden) f.elements.after.focus();
  });
  $("#filters").addEventListener("submit", applyFilters);
  $("#filters-clear").addEventListener("click", () => { for (const f of FILTERS) $("#filters").elements[f].value = ""; applyFilters(); });
  $("#save-concept").addEventListener("submit", saveConcept);
  for (const b of document.querySelectorAll("nav [data-view]")) b.addEventListener("click", () => { writeUrl({ ...readUrl(), view: b.dataset.view }); run(); });
  document.addEventListener("searchindex:views", navButtons);
  navButtons();
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  $("#more").addEventListener("click", () => run(true));
  $("#jump").addEventListener("change", () => { writeUrl({ ...readUrl(), start: $("#jump").value }); run(); });
  wireDetail();
  wireSelection();
  wirePicture();
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", () => { closeDetail(); run(); });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.next !== null && !state.loading && !$("#results").hidden) run(true);
  }, { rootMargin: "600px" }).observe($("#sentinel"));
  if (new URLSearchParams(location.search).has("token")) { // the cookie is set: keep the token out of the URL bar
    const p = new URLSearchParams(location.search); p.delete("token");
    history.replaceState(null, "", p.toString() ? `?${p}` : location.pathname);
  }
  loadTags();
  loadConcepts();
  run();
  $("#q").focus();
}

// After every feature module (people.js, ...) has registered its view: DOMContentLoaded waits for
// the page's module scripts, so ?view=people opens the People view, not the photos.
if (document.readyState === "complete") start(); else document.addEventListener("DOMContentLoaded", start);
