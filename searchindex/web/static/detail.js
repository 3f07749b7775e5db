// The detail view (a modal dialog): the picture, its facts, like / not like / more like this, and
// moving through the results with the arrow keys.
import { $, el, thumb, getJson, postJson, status } from "./util.js";
import { readUrl } from "./url.js";
import { state, actions } from "./state.js";
import { label, setActive, shownScore } from "./grid.js";
import { detailHooks, openHooks } from "./hooks.js";

export async function openDetail(index) {
  const r = state.results[index];
  if (!r) return;
  state.lbIndex = index;
  const box = $("#lightbox");
  const img = $("#lb-img");
  img.hidden = false;
  img.src = thumb(r.image_id, 1024);
  img.alt = label(r);
  $("#lb-missing").hidden = true;
  $("#lb-file").hidden = false;
  $("#lb-file").href = `/api/images/${r.image_id}/file`;
  const s = readUrl(), id = String(r.image_id);
  $("#lb-like").setAttribute("aria-pressed", String(s.like.includes(id)));
  $("#lb-unlike").setAttribute("aria-pressed", String(s.unlike.includes(id)));
  box.dataset.imageId = id;
  renderFacts(r, null);
  for (const hook of openHooks) hook(r);
  if (!box.open) box.showModal();
  try {
    const details = await getJson(`/api/images/${r.image_id}`);
    if (box.dataset.imageId === id) {
      renderFacts(r, details);
      if (details.file_problem) showMissing(id, details.file_problem);
    }
  } catch (err) { /* the result's own facts stay */ }
}

function chips(values) {
  return el("ul", { class: "chips" }, ...values.map((v) => el("li", {}, v)));
}

export function renderFacts(r, details) {
  const d = details || r;
  const place = d.gps_lat != null ? `${d.gps_lat.toFixed(5)}, ${d.gps_lon.toFixed(5)}` : "";
  const rows = [
    ["Similarity", shownScore(r) !== null ? shownScore(r).toFixed(3) + (r.rank ? ` (rank ${r.rank})` : "") : r.rank ? `rank ${r.rank}` : ""],
    ["Date taken", d.taken_at ? d.taken_at.replace("T", " ") + (d.taken_offset || "") : ""],
    ["Camera", [d.camera_make, d.camera_model].filter(Boolean).join(" ") + (d.lens ? ` · ${d.lens}` : "")],
    ["Place", place],
    ["Size", d.size ? `${d.width} × ${d.height} px, ${(d.size / 1024).toFixed(0)} KB, ${d.format}` : `${d.width} × ${d.height} px`],
    ["Path", d.path],
    ["Caption", d.caption || ""],
    // Each keyword (and tag) on its own: "a, b" joined into one string read as one keyword.
    ["Keywords", (d.keywords || []).length ? chips(d.keywords) : ""],
    ["Tags", (d.tags || []).length ? chips(d.tags) : ""],
  ];
  const dl = $("#lb-facts");
  dl.replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  if (details) for (const hook of detailHooks) hook(details, dl);
}

export function closeDetail() { const box = $("#lightbox"); if (box.open) box.close(); }

export function moveDetail(step) {
  const next = state.lbIndex + step;
  if (next >= 0 && next < state.results.length) openDetail(next);
  else if (next >= state.results.length && state.next !== null) actions.more().then(() => openDetail(next));
}

// The picture's file is gone or changed: say so instead of a grey cross, and offer to remove a gone one.
function showMissing(id, problem) {
  $("#lb-img").hidden = true;
  const note = $("#lb-missing");
  note.hidden = false;
  const gone = problem.startsWith("cannot open");
  note.replaceChildren(
    el("p", { class: "missing-title" }, gone ? "This photo's file is missing: it was moved or deleted since it was indexed."
                                             : "This photo's file has changed since it was indexed."),
    gone ? el("button", { type: "button", onclick: () => forget(id) }, "Remove it from the index")
         : el("p", {}, "Indexing its folder again brings the index in line."));
  $("#lb-file").hidden = true;
}

async function forget(id) {
  try {
    await postJson("/api/images/forget", { ids: [Number(id)] });
    closeDetail();
    await actions.refresh();
    status("Removed from the index (no file was touched).");
  } catch (err) { status(err.message); }
}

export function wireDetail() {
  $("#lb-prev").addEventListener("click", () => moveDetail(-1));
  $("#lb-next").addEventListener("click", () => moveDetail(1));
  $("#lb-close").addEventListener("click", closeDetail);
  $("#lb-like").addEventListener("click", () => actions.toggle("like", $("#lightbox").dataset.imageId, state.lbIndex, true));
  $("#lb-unlike").addEventListener("click", () => actions.toggle("unlike", $("#lightbox").dataset.imageId, state.lbIndex, true));
  $("#lb-similar").addEventListener("click", () => actions.similar($("#lightbox").dataset.imageId));
  $("#lightbox").addEventListener("close", () => {
    const t = document.querySelector(`#grid .tile[data-index="${state.lbIndex}"]`);
    if (t) setActive(state.lbIndex);
  });
}

export function onDetailKey(ev) {
  const box = $("#lightbox");
  if (ev.key === "ArrowRight") { ev.preventDefault(); moveDetail(1); }
  else if (ev.key === "ArrowLeft") { ev.preventDefault(); moveDetail(-1); }
  else if (ev.key === "l") actions.toggle("like", box.dataset.imageId, state.lbIndex, true);
  else if (ev.key === "u") actions.toggle("unlike", box.dataset.imageId, state.lbIndex, true);
  else if (ev.key === "m") actions.similar(box.dataset.imageId);
}
