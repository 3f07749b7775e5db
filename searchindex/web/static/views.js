// The other views: tags, duplicates, files that could not be indexed, and any a feature registers
// (hooks.js).  ?view=NAME opens one; an unknown name falls back to the photos.
import { $, el, thumb, getJson, postJson, status, plural } from "./util.js";
import { readUrl, writeUrl, hasQuery } from "./url.js";
import { state, actions } from "./state.js";
import { views } from "./hooks.js";
import { paintSelection } from "./grid.js";

const GROUPS_PER_PAGE = 20;

export const BUILT_IN = ["tags", "duplicates", "errors"];
export function knownView(view) { return BUILT_IN.includes(view) || views.has(view); }

export async function loadTags() {
  try {
    const { tags } = await getJson("/api/tags");
    const select = $("#filters").elements.tag;
    const current = readUrl().filters.tag;
    select.replaceChildren(el("option", { value: "" }, "any"), ...tags.map((t) => el("option", { value: t.label }, `${t.label} (${t.images})`)));
    select.value = current;
    return tags;
  } catch (err) { return []; }
}

export async function showView(view) {
  const box = $("#view");
  box.replaceChildren(el("p", {}, "Loading…"));
  status("");
  document.title = `${view[0].toUpperCase()}${view.slice(1)} — searchindex`;
  try {
    if (view === "tags") await tagsView(box);
    else if (view === "duplicates") await duplicatesView(box);
    else if (view === "errors") await errorsView(box);
    else await views.get(view).render(box);
  } catch (err) { box.replaceChildren(el("p", {}, err.message)); }
}

async function tagsView(box) {
  const tags = await loadTags();
  const form = el("form", { class: "add-tags", onsubmit: addTags },
    el("label", {}, "Add labels ", el("input", { name: "labels", placeholder: "beach, dog, sunset", required: true })),
    el("button", { type: "submit" }, "Tag all images"));
  box.replaceChildren(el("h2", {}, "Tags"), form, tags.length ? el("ul", { class: "tag-list" }, ...tags.map((t) => el("li", {},
    el("button", { type: "button", onclick: () => { const s = readUrl(); s.view = ""; s.filters.tag = t.label; writeUrl(s); actions.refresh(); } }, `${t.label} (${t.images})`),
    el("button", { type: "button", class: "del", "aria-label": `Remove label ${t.label}`, title: `Remove label ${t.label}`, onclick: () => removeTag(t.label, t.images) }, "×"))))
    : el("p", {}, "No labels yet."));
}

async function addTags(ev) {
  ev.preventDefault();
  const labels = ev.target.elements.labels.value.split(",").map((x) => x.trim()).filter(Boolean);
  status("Tagging every image…");
  try {
    const { labels: reports } = await postJson("/api/tags", { labels });
    await showView("tags");
    status(reports.map((r) => `${r.label}: ${plural(r.tagged, "image")}`).join("; "));
  } catch (err) { status(err.message); }
}

// Removing a label throws away the work of tagging every image with it: ask first.
async function removeTag(label, images) {
  if (!window.confirm(`Remove the label “${label}” from ${plural(images, "image")}? Tagging again takes a while.`)) return;
  try {
    await getJson(`/api/tags/${encodeURIComponent(label)}`, { method: "DELETE" });
    await showView("tags");
    status(`Removed the label “${label}”.`);
  } catch (err) { status(err.message); }
}

async function duplicatesView(box) {
  const { groups } = await getJson("/api/duplicates");
  // Best copy first, then the closest copies first.
  for (const g of groups) g.images = [g.images[0], ...g.images.slice(1).sort((a, b) => b.similarity - a.similarity)];
  state.results = groups.flatMap((g) => g.images.map((im) => ({ ...im, score: im.similarity })));
  state.next = null;
  let shown = 0, flat = 0;
  const list = el("div", {});
  const more = el("button", { type: "button", class: "more-groups" }, "More groups");
  const page = () => {
    for (const g of groups.slice(shown, shown + GROUPS_PER_PAGE)) {
      const start = flat;
      list.append(el("section", { class: "group", "aria-label": `Group ${g.group}` },
        el("h3", {}, `Group ${g.group}: ${plural(g.images.length, "image")}, best copy first`),
        el("div", { class: "grid" }, ...g.images.map((im, i) => el("div", { class: "tile", "data-image-id": im.image_id },
          el("button", { type: "button", class: "open", "aria-label": `${i === 0 ? "Best copy" : "Copy"}: ${im.path}`, onclick: (ev) => (ev.ctrlKey || ev.metaKey || state.selected.size ? toggleDuplicate(String(im.image_id)) : actions.open(start + i)) },
            el("img", { src: thumb(im.image_id), alt: "", loading: "lazy", title: `${im.width}×${im.height} ${im.path}` })),
          el("span", { class: "score" }, i === 0 ? "best" : im.similarity.toFixed(3)),
          el("button", { type: "button", class: "select", "aria-pressed": String(state.selected.has(String(im.image_id))),
                         "aria-label": `Select ${im.path}`, title: "Select", onclick: () => toggleDuplicate(String(im.image_id)) }, "✓"))))));
      flat += g.images.length;
    }
    shown += GROUPS_PER_PAGE;
    more.hidden = shown >= groups.length;
  };
  more.addEventListener("click", page);
  // Keep the best, list the rest: the other copies' paths, one a line, to review or pipe (nothing is deleted).
  const rest = groups.flatMap((g) => g.images.slice(1).map((im) => im.path));
  const listRest = el("button", { type: "button", class: "list-rest", onclick: async () => {
    const text = rest.join("\n") + "\n";
    try { await navigator.clipboard.writeText(text); status(`Copied the paths of ${plural(rest.length, "copy", "copies")} (every copy but the best); nothing was deleted.`); }
    catch (err) { status("The clipboard is not available here."); }
  } }, "Copy the paths of all but the best copies");
  // ...or move them into a folder the user names, after a confirmation (never deleted, never overwriting).
  const restIds = groups.flatMap((g) => g.images.slice(1).map((im) => im.image_id));
  const moveRest = el("button", { type: "button", class: "move-rest", onclick: () => moveCopies(restIds) }, "Move all but the best copies…");
  box.replaceChildren(el("h2", {}, `Duplicates: ${plural(groups.length, "group")}`), groups.length ? listRest : "", groups.length ? moveRest : "", list, more);
  page();
  if (!groups.length) box.append(el("p", {}, "No near-duplicates found."));
}

function toggleDuplicate(id) {
  if (state.selected.has(id)) state.selected.delete(id); else state.selected.add(id);
  paintSelection();
}

// Moving files is asked twice: which folder, then "move N files there?"; what moved is reported.
export async function moveCopies(ids) {
  const folder = window.prompt(`Move ${plural(ids.length, "file")} into which folder? (its full path; made if missing)`);
  if (!folder || !folder.trim()) return;
  if (!window.confirm(`Move ${plural(ids.length, "file")} into ${folder.trim()}? Nothing is deleted or overwritten.`)) return;
  try {
    const r = await postJson("/api/images/move", { ids, folder: folder.trim(), confirm: true });
    await showView("duplicates");
    status(`Moved ${plural(r.moved.length, "file")} into ${r.folder}` + (r.kept.length ? `; ${r.kept.length} left in place (${r.kept[0][2]}${r.kept.length > 1 ? ", …" : ""}).` : "."));
  } catch (err) { status(err.message); }
}

async function errorsView(box) {
  const { errors } = await getJson("/api/errors");
  box.replaceChildren(el("h2", {}, `Files that could not be indexed: ${errors.length}`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Path"), el("th", {}, "Reason"))),
      el("tbody", {}, ...errors.map((e) => el("tr", {}, el("td", {}, e.path), el("td", {}, e.reason))))));
}
