// searchindex serve: the search page. Plain JavaScript, no build step, no third-party code.
// The whole search lives in the URL (q, filters, like/unlike ids, concept), so a search can be
// bookmarked, shared, reloaded, and Back works.
"use strict";

const PAGE = 60;
const FILTERS = ["after", "before", "camera", "path", "tag", "min_width", "min_height", "mode", "threshold", "sort"];
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c);
  return e;
};
const thumb = (id, size = 256) => `/api/images/${id}/thumbnail?size=${size}`;

let state = { results: [], nextOffset: null, loading: false, generation: 0, lbIndex: -1 };

// -- the URL is the state ----------------------------------------------------------------------

function readUrl() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get("q") || "",
    image: p.getAll("image"),
    like: p.getAll("like"),
    unlike: p.getAll("unlike"),
    concept: p.get("concept") || "",
    view: p.get("view") || "",
    filters: Object.fromEntries(FILTERS.map((f) => [f, p.get(f) || ""])),
  };
}

// The search as query parameters: for the address bar (defaults left out, the open view kept)
// or for /api/search.
function toParams(s, forUrl) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  for (const i of s.image) p.append("image", i);
  if (s.concept) p.set("concept", s.concept);
  for (const i of s.like) p.append("like", i);
  for (const i of s.unlike) p.append("unlike", i);
  const defaults = forUrl ? { mode: "auto", sort: "score" } : {};
  for (const f of FILTERS) if (s.filters[f] && s.filters[f] !== defaults[f]) p.set(f, s.filters[f]);
  if (forUrl && s.view) p.set("view", s.view);
  return p;
}

function writeUrl(s, replace = false) {
  const p = toParams(s, true);
  const url = p.toString() ? `?${p}` : location.pathname;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
}

function apiParams(s, offset) {
  const p = toParams(s, false);
  p.set("k", PAGE);
  p.set("offset", offset);
  return p;
}

async function getJson(url, options) {
  const r = await fetch(url, options);
  const body = r.status === 204 ? null : await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error((body && body.error) || r.statusText);
  return body;
}

// -- searching ---------------------------------------------------------------------------------

function hasQuery(s) { return Boolean(s.q || s.image.length || s.concept); }

async function run(append = false) {
  const s = readUrl();
  syncControls(s);
  if (s.view) return showView(s.view);
  $("#view").hidden = true;
  $("#results").hidden = false;
  renderStrip(s);
  if (!hasQuery(s)) {
    state.results = []; state.nextOffset = null;
    $("#grid").replaceChildren();
    $("#more").hidden = true;
    status("Type what you are looking for and press Enter.");
    return;
  }
  const generation = ++state.generation;
  const offset = append ? state.results.length : 0;
  state.loading = true;
  if (!append) status("Searching…");
  try {
    const body = await getJson(`/api/search?${apiParams(s, offset)}`);
    if (generation !== state.generation) return; // a newer search started meanwhile
    if (!append) { state.results = []; $("#grid").replaceChildren(); }
    const start = state.results.length;
    state.results.push(...body.results);
    state.nextOffset = body.next_offset;
    renderTiles(body.results, start, s);
    $("#more").hidden = state.nextOffset === null;
    const what = s.concept ? `concept “${s.concept}”` : s.q ? `“${s.q}”` : "this image";
    status(state.results.length ? `${state.results.length} results for ${what}${state.nextOffset !== null ? " (more below)" : ""}` : body.message || "No results.");
  } catch (err) {
    if (generation === state.generation) { status(err.message); $("#grid").replaceChildren(); $("#more").hidden = true; }
  } finally {
    if (generation === state.generation) state.loading = false;
  }
}

function status(text) { $("#status").textContent = text; }

function label(r) {
  const name = r.path.split("/").pop();
  return r.caption ? `${r.caption} (${name})` : name;
}

function renderTiles(results, start, s) {
  const grid = $("#grid");
  const frag = document.createDocumentFragment();
  results.forEach((r, n) => {
    const id = String(r.image_id);
    const liked = s.like.includes(id), unliked = s.unlike.includes(id);
    const tile = el("div", { class: "tile" + (liked ? " liked" : "") + (unliked ? " unliked" : ""), "data-image-id": id,
                             "data-index": start + n, tabindex: start + n === 0 ? "0" : "-1", role: "group", "aria-label": label(r) },
      el("img", { src: thumb(id), alt: label(r), loading: start + n < 24 ? "eager" : "lazy", decoding: "async", onclick: () => openLightbox(start + n) }),
      el("span", { class: "score", "aria-hidden": "true" }, r.score.toFixed(3)),
      el("div", { class: "acts" },
        el("button", { type: "button", class: "like", "aria-pressed": String(liked), title: "Like: more like this (l)", onclick: () => toggle("like", id) }, "Like"),
        el("button", { type: "button", class: "unlike", "aria-pressed": String(unliked), title: "Not like this (u)", onclick: () => toggle("unlike", id) }, "Not"),
        el("button", { type: "button", class: "similar", title: "More like this (m)", onclick: () => similar(id) }, "Similar")));
    window.searchindexOcr?.tile(tile, r);  // the text read in the photo (ocr.js)
    frag.append(tile);
  });
  grid.append(frag);
}

function toggle(kind, id) {
  const s = readUrl();
  const other = kind === "like" ? "unlike" : "like";
  s[other] = s[other].filter((x) => x !== id);
  s[kind] = s[kind].includes(id) ? s[kind].filter((x) => x !== id) : [...s[kind], id];
  if (!hasQuery(s) && kind === "like" && s.like.length) s.image = [s.like[0]];
  writeUrl(s);
  run();
}

function similar(id) {
  const s = readUrl();
  closeLightbox();
  writeUrl({ ...s, q: "", image: [id], like: [], unlike: [], concept: "", view: "" });
  run();
}

// -- the strip of liked / unliked examples, and concepts ------------------------------------------

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
      el("button", { type: "button", class: "concept", title: c.query || "", onclick: () => { writeUrl({ ...readUrl(), q: "", image: [], like: [], unlike: [], concept: c.name, view: "" }); run(); } }, c.name),
      el("button", { type: "button", class: "del", "aria-label": `Delete concept ${c.name}`, onclick: () => deleteConcept(c.name) }, "×"))));
  } catch (err) { status(err.message); }
}

async function saveConcept(ev) {
  ev.preventDefault();
  const s = readUrl();
  const name = ev.target.elements.name.value.trim();
  if (!name) return;
  try {
    await getJson("/api/concepts", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, query: s.q || null, like: s.like.map(Number), unlike: s.unlike.map(Number) }) });
    ev.target.reset();
    status(`Saved concept “${name}”.`);
    loadConcepts();
  } catch (err) { status(err.message); }
}

async function deleteConcept(name) {
  try { await getJson(`/api/concepts/${encodeURIComponent(name)}`, { method: "DELETE" }); loadConcepts(); } catch (err) { status(err.message); }
}

// -- filters -------------------------------------------------------------------------------------

function syncControls(s) {
  $("#q").value = s.q;
  const form = $("#filters");
  for (const f of FILTERS) form.elements[f].value = s.filters[f] || (f === "mode" ? "auto" : f === "sort" ? "score" : "");
}

async function loadTags() {
  try {
    const { tags } = await getJson("/api/tags");
    const select = $("#filters").elements.tag;
    const current = readUrl().filters.tag;
    select.replaceChildren(el("option", { value: "" }, "any"), ...tags.map((t) => el("option", { value: t.label }, `${t.label} (${t.images})`)));
    select.value = current;
    return tags;
  } catch (err) { return []; }
}

function applyFilters(ev) {
  if (ev) ev.preventDefault();
  const s = readUrl();
  const form = $("#filters");
  for (const f of FILTERS) s.filters[f] = form.elements[f].value.trim();
  s.view = "";
  writeUrl(s);
  run();
}

// -- the lightbox --------------------------------------------------------------------------------

async function openLightbox(index) {
  const r = state.results[index];
  if (!r) return;
  state.lbIndex = index;
  const box = $("#lightbox");
  $("#lb-img").src = thumb(r.image_id, 1024);
  $("#lb-img").alt = label(r);
  $("#lb-file").href = `/api/images/${r.image_id}/file`;
  const s = readUrl(), id = String(r.image_id);
  $("#lb-like").setAttribute("aria-pressed", String(s.like.includes(id)));
  $("#lb-unlike").setAttribute("aria-pressed", String(s.unlike.includes(id)));
  box.dataset.imageId = id;
  renderFacts(r, null);
  if (!box.open) box.showModal();
  try { renderFacts(r, await getJson(`/api/images/${r.image_id}`)); } catch (err) { /* the result's own facts stay */ }
}

function renderFacts(r, details) {
  const d = details || r;
  const place = d.gps_lat != null ? `${d.gps_lat.toFixed(5)}, ${d.gps_lon.toFixed(5)}` : "";
  const rows = [
    ["Score", r.score.toFixed(3) + (r.rank ? ` (rank ${r.rank})` : "")],
    ["Date taken", d.taken_at ? d.taken_at.replace("T", " ") + (d.taken_offset || "") : ""],
    ["Camera", [d.camera_make, d.camera_model].filter(Boolean).join(" ") + (d.lens ? ` · ${d.lens}` : "")],
    ["Place", place],
    ["Size", `${d.width} × ${d.height} px, ${(d.size / 1024).toFixed(0)} KB, ${d.format}`],
    ["Path", d.path],
    ["Caption", d.caption || ""],
    ["Keywords", (d.keywords || []).join(", ")],
    ["Tags", (d.tags || []).join(", ")],
  ];
  $("#lb-facts").replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  window.searchindexOcr?.facts(details);  // text boxes over the image (ocr.js)
}

function closeLightbox() { const box = $("#lightbox"); if (box.open) box.close(); }

function moveLightbox(step) {
  const next = state.lbIndex + step;
  if (next >= 0 && next < state.results.length) openLightbox(next);
  else if (next >= state.results.length && state.nextOffset !== null) run(true).then(() => openLightbox(next));
}

// -- other views: tags, duplicates, errors -------------------------------------------------------

async function showView(view) {
  $("#results").hidden = true;
  $("#teach").hidden = true;
  const box = $("#view");
  box.hidden = false;
  box.replaceChildren(el("p", {}, "Loading…"));
  status("");
  try {
    if (view === "tags") {
      const tags = await loadTags();
      const form = el("form", { class: "add-tags", onsubmit: addTags },
        el("label", {}, "Add labels ", el("input", { name: "labels", placeholder: "beach, dog, sunset", required: true })),
        el("button", { type: "submit" }, "Tag all images"));
      box.replaceChildren(el("h2", {}, "Tags"), form, tags.length ? el("ul", { class: "tag-list" }, ...tags.map((t) => el("li", {},
        el("button", { type: "button", onclick: () => { const s = readUrl(); s.view = ""; s.filters.tag = t.label; if (!hasQuery(s)) s.q = t.label; writeUrl(s); run(); } }, `${t.label} (${t.images})`),
        el("button", { type: "button", class: "del", "aria-label": `Remove label ${t.label}`, onclick: () => removeTag(t.label) }, "×"))))
        : el("p", {}, "No labels yet."));
    } else if (view === "duplicates") {
      const { groups } = await getJson("/api/duplicates");
      box.replaceChildren(el("h2", {}, `Duplicates: ${groups.length} groups`), ...groups.map((g) => el("div", { class: "group" },
        el("h3", {}, `Group ${g.group}: ${g.images.length} images, best copy first`),
        el("div", { class: "grid" }, ...g.images.map((im, i) => el("div", { class: "tile", "data-image-id": im.image_id },
          el("img", { src: thumb(im.image_id), alt: `${i === 0 ? "best copy" : "copy"}: ${im.path}`, title: `${im.width}×${im.height} ${im.path}` }),
          el("span", { class: "score" }, i === 0 ? "best" : im.similarity.toFixed(3))))))));
      if (!groups.length) box.append(el("p", {}, "No near-duplicates found."));
    } else if (view === "errors") {
      const { errors } = await getJson("/api/errors");
      box.replaceChildren(el("h2", {}, `Files that could not be indexed: ${errors.length}`),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Path"), el("th", {}, "Reason"))),
          el("tbody", {}, ...errors.map((e) => el("tr", {}, el("td", {}, e.path), el("td", {}, e.reason))))));
    }
  } catch (err) { box.replaceChildren(el("p", {}, err.message)); }
}

async function addTags(ev) {
  ev.preventDefault();
  const labels = ev.target.elements.labels.value.split(",").map((x) => x.trim()).filter(Boolean);
  status("Tagging every image…");
  try {
    const { labels: reports } = await getJson("/api/tags", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ labels }) });
    await showView("tags");
    status(reports.map((r) => `${r.label}: ${r.tagged} images`).join("; "));
  } catch (err) { status(err.message); }
}

async function removeTag(label) {
  try { await getJson(`/api/tags/${encodeURIComponent(label)}`, { method: "DELETE" }); showView("tags"); } catch (err) { status(err.message); }
}

// -- keyboard --------------------------------------------------------------------------------------

function tiles() { return [...document.querySelectorAll("#grid .tile")]; }

function focusTile(i) {
  const all = tiles();
  if (!all.length) return;
  i = Math.max(0, Math.min(all.length - 1, i));
  all.forEach((t, n) => t.setAttribute("tabindex", n === i ? "0" : "-1"));
  all[i].focus();
  if (i >= all.length - 6 && state.nextOffset !== null && !state.loading) run(true);
}

function columns() {
  const all = tiles();
  if (all.length < 2) return 1;
  const top = all[0].offsetTop;
  const n = all.findIndex((t) => t.offsetTop !== top);
  return n === -1 ? all.length : n;
}

function onKey(ev) {
  const typing = ev.target.matches("input, select, textarea");
  const box = $("#lightbox");
  if (box.open) {
    if (ev.key === "ArrowRight") { ev.preventDefault(); moveLightbox(1); }
    else if (ev.key === "ArrowLeft") { ev.preventDefault(); moveLightbox(-1); }
    else if (ev.key === "l") toggleFromLightbox("like");
    else if (ev.key === "u") toggleFromLightbox("unlike");
    else if (ev.key === "m") similar(box.dataset.imageId);
    return; // Esc closes the dialog natively
  }
  if (typing) return;
  if (ev.key === "/") { ev.preventDefault(); $("#q").focus(); $("#q").select(); return; }
  if (ev.key === "?") { $("#help").showModal(); return; }
  const tile = ev.target.closest && ev.target.closest("#grid .tile");
  if (!tile) return;
  const i = Number(tile.dataset.index), id = tile.dataset.imageId;
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
  if (ev.key in moves) { ev.preventDefault(); focusTile(i + moves[ev.key]); }
  else if (ev.key === "Enter" && ev.target === tile) { ev.preventDefault(); openLightbox(i); }
  else if (ev.key === "l") toggle("like", id);
  else if (ev.key === "u") toggle("unlike", id);
  else if (ev.key === "m") similar(id);
}

function toggleFromLightbox(kind) {
  const id = $("#lightbox").dataset.imageId;
  closeLightbox();
  toggle(kind, id);
}

// -- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = readUrl();
    const q = $("#q").value.trim();
    // A new text starts a new search: examples belong to the old one.
    const same = q === s.q;
    writeUrl({ ...s, q, image: q ? [] : s.image, like: same ? s.like : [], unlike: same ? s.unlike : [], concept: q ? "" : s.concept, view: "" });
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
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  $("#more").addEventListener("click", () => run(true));
  $("#lb-prev").addEventListener("click", () => moveLightbox(-1));
  $("#lb-next").addEventListener("click", () => moveLightbox(1));
  $("#lb-close").addEventListener("click", closeLightbox);
  $("#lb-like").addEventListener("click", () => toggleFromLightbox("like"));
  $("#lb-unlike").addEventListener("click", () => toggleFromLightbox("unlike"));
  $("#lb-similar").addEventListener("click", () => similar($("#lightbox").dataset.imageId));
  $("#lightbox").addEventListener("close", () => { const t = document.querySelector(`#grid .tile[data-index="${state.lbIndex}"]`); if (t) focusTile(state.lbIndex); });
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", () => { closeLightbox(); run(); });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.nextOffset !== null && !state.loading && !$("#results").hidden) run(true);
  }, { rootMargin: "600px" }).observe($("#sentinel"));
  if (new URLSearchParams(location.search).has("token")) { // the cookie is set: keep the token out of the URL bar
    const p = new URLSearchParams(location.search); p.delete("token");
    history.replaceState(null, "", p.toString() ? `?${p}` : location.pathname);
  }
  loadTags();
  loadConcepts();
  run();
  $("#q").focus();
});
