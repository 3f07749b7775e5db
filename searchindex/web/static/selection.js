// The bar shown while images are selected: how many, and what to do with them (download the
// originals as one zip, copy their paths, like / not like them all, add them to a saved concept,
// tag them with a label of one's own).
import { $, el, getJson, postJson, status, plural } from "./util.js";
import { readUrl, writeUrl, hasQuery } from "./url.js";
import { state, actions } from "./state.js";
import { clearSelection, tiles } from "./grid.js";
import { loadTags } from "./views.js";

function selectedIds() {
  // In the grid's order, not the order of clicking; the duplicates view has tiles of its own.
  const shown = $("#view").hidden ? tiles() : [...document.querySelectorAll("#view .tile")];
  return [...new Set(shown.map((t) => t.dataset.imageId))].filter((id) => state.selected.has(id));
}

export function renderBar() {
  const bar = $("#selection");
  const n = state.selected.size;
  bar.hidden = n === 0;
  $("#selection-count").textContent = `${plural(n, "photo")} selected`;
}

async function download() {
  const ids = selectedIds().map(Number);
  status(`Preparing a zip of ${plural(ids.length, "photo")}…`);
  try {
    const r = await fetch("/api/download", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids }) });
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.statusText);
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: "photos.zip" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    status(`Downloaded ${plural(ids.length, "photo")} as photos.zip.`);
  } catch (err) { status(`The download failed: ${err.message}`); }
}

async function copyPaths() {
  const byId = new Map(state.results.map((r) => [String(r.image_id), r.path]));
  const text = selectedIds().map((id) => byId.get(id)).filter(Boolean).join("\n") + "\n";
  try { await navigator.clipboard.writeText(text); }
  catch (err) { // no clipboard permission: the old way
    const area = el("textarea", { "aria-hidden": "true", class: "visually-hidden" });
    area.value = text; document.body.append(area); area.select(); document.execCommand("copy"); area.remove();
  }
  status(`Copied ${plural(state.selected.size, "path")}.`);
}

function likeAll(kind) {
  const ids = selectedIds();
  const s = readUrl();
  const other = kind === "like" ? "unlike" : "like";
  s[other] = s[other].filter((x) => !ids.includes(x));
  s[kind] = [...s[kind], ...ids.filter((x) => !s[kind].includes(x))];
  if (!hasQuery(s) && s.like.length) s.image = [String(parseInt(s.like[0], 10))];  // a moment (ID@S): its video
  clearSelection();
  writeUrl(s);
  actions.refresh();
}

async function addToConcept(ev) {
  ev.preventDefault();
  const name = ev.target.elements.concept.value;
  if (!name) return;
  try {
    const { concepts } = await getJson("/api/concepts");
    const c = concepts.find((x) => x.name === name);
    if (!c) throw new Error(`no concept named “${name}”`);
    const ids = selectedIds().map(Number);
    await postJson("/api/concepts", { name, query: c.query, like: [...new Set([...c.like, ...ids])], unlike: c.unlike.filter((x) => !ids.includes(x)) });
    status(`Added ${plural(ids.length, "photo")} to “${name}” as examples of it.`);
  } catch (err) { status(err.message); }
}

// A label put on the selected photos by hand: listed and filterable like the zero-shot ones.
async function tagWith(ev) {
  ev.preventDefault();
  const label = ev.target.elements.label.value.trim();
  if (!label) return;
  try {
    const { tagged } = await postJson(`/api/tags/${encodeURIComponent(label)}/images`, { ids: selectedIds().map(Number) });
    ev.target.reset();
    status(`Tagged ${plural(tagged.length, "photo")} “${label}”.`);
    loadTags(); // the tag filter lists the new label
  } catch (err) { status(err.message); }
}

export function fillConcepts(concepts) {
  const select = $("#selection-concept");
  select.replaceChildren(el("option", { value: "" }, "a saved concept…"), ...concepts.map((c) => el("option", { value: c.name }, c.name)));
  $("#selection-add").hidden = concepts.length === 0;
}

export function wireSelection() {
  $("#sel-download").addEventListener("click", download);
  $("#sel-copy").addEventListener("click", copyPaths);
  $("#sel-like").addEventListener("click", () => likeAll("like"));
  $("#sel-unlike").addEventListener("click", () => likeAll("unlike"));
  $("#sel-clear").addEventListener("click", clearSelection);
  $("#selection-add").addEventListener("submit", addToConcept);
  $("#selection-tag").addEventListener("submit", tagWith);
}
