// searchindex serve: videos on the search page. A video result shows the frame of its best moment with
// a duration badge; its detail view plays the file (streamed by id, with range requests) from that
// second, lists the other moments to jump to, and likes (or not) the moment being played: the URL
// keeps it as like=ID@SECONDS, which searches with that moment's frame. Hooked in through hooks.js.
import { onOpen, onTiles } from "/static/hooks.js";
import { readUrl, writeUrl, hasQuery } from "/static/url.js";
import { state, actions } from "/static/state.js";

const clock = (seconds) => {
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${two(m)}:${two(r)}`;
};

const momentThumb = (r, size = 256) => `/api/images/${r.image_id}/thumbnail?size=${size}&t=${r.timestamp || 0}`;

// A moment as the URL and the API spell it: the video's id and the second, to a tenth.
const momentOf = (id, seconds) => `${id}@${Math.round(seconds * 10) / 10}`;
const momentParts = (m) => { const [id, t] = String(m).split("@"); return [id, Number(t)]; };
// The liked (or not) moment of video `id` within a second of `seconds`, if any.
const momentNear = (list, id, seconds) => list.find((m) => {
  const [mid, t] = momentParts(m);
  return String(m).includes("@") && mid === String(id) && Math.abs(t - seconds) < 1;
});

// Like (or not) the moment being played; the same button again at that moment takes it back.
async function toggleMoment(kind, r, player) {
  const s = readUrl(), other = kind === "like" ? "unlike" : "like";
  const at = player.currentTime;
  const there = momentNear(s[kind], r.image_id, at);
  s[other] = s[other].filter((m) => m !== momentNear(s[other], r.image_id, at));
  s[kind] = there ? s[kind].filter((m) => m !== there) : [...s[kind], momentOf(r.image_id, at)];
  // With no query, the first liked example is the query (a moment by its video, which `image` takes).
  if (!hasQuery(s) && kind === "like" && s.like.length) s.image = [String(parseInt(s.like[0], 10))];
  writeUrl(s);
  const index = state.lbIndex;
  await actions.refresh();
  const still = state.results.findIndex((x) => x.image_id === r.image_id);
  state.lbIndex = still >= 0 ? still : index - 1;  // the detail view stays on the video; arrows go on from here
  pressMoments(r, player);
}

// The moment buttons say whether the moment being played is liked (or not) already.
function pressMoments(r, player) {
  const s = readUrl();
  for (const [sel, kind] of [["#lb-like-moment", "like"], ["#lb-unlike-moment", "unlike"]]) {
    const b = document.querySelector(sel);
    if (b) b.setAttribute("aria-pressed", String(Boolean(momentNear(s[kind], r.image_id, player.currentTime))));
  }
}

// "Like this moment" / "Not this moment" beside the detail view's Like / Not like (videos only).
function momentButtons(r, player) {
  const actionsBar = document.querySelector("#lightbox .lb-actions");
  for (const [sel, kind, text, title] of [
    ["#lb-like-moment", "like", "Like this moment", "Rank pictures like the frame being played higher"],
    ["#lb-unlike-moment", "unlike", "Not this moment", "Rank pictures like the frame being played lower"]]) {
    let b = document.querySelector(sel);
    if (!b) {
      b = document.createElement("button");
      b.type = "button";
      b.id = sel.slice(1);
      b.textContent = text;
      b.title = title;
      actionsBar.insertBefore(b, document.querySelector("#lb-similar"));
    }
    b.hidden = false;
    b.onclick = () => toggleMoment(kind, r, player);
  }
  player.ontimeupdate = () => pressMoments(r, player);
  pressMoments(r, player);
}

// A video tile: the frame of its best moment, and its length and that moment on a badge.
window.videoTile = (tile, r) => {
  if (r.format !== "video") return;
  tile.classList.add("video");
  const img = tile.querySelector("img");
  if (img) img.src = momentThumb(r);
  const badge = document.createElement("span");
  badge.className = "duration";
  badge.textContent = (r.timestamp != null ? `@ ${clock(r.timestamp)} · ` : "") + clock(r.duration || 0);
  tile.append(badge);
};

// The detail view of a video: a <video> playing from the matched second, and the other moments.
// Returns true when it took over the view (the image stays hidden while a video shows).
window.videoLightbox = (r) => {
  const figure = document.querySelector("#lightbox figure");
  const img = document.querySelector("#lb-img");
  let player = document.querySelector("#lb-video");
  let moments = document.querySelector("#lb-moments");
  if (r.format !== "video") {
    if (player) { player.pause(); player.remove(); }
    if (moments) moments.remove();
    for (const b of document.querySelectorAll("#lb-like-moment, #lb-unlike-moment")) b.hidden = true;
    img.hidden = false;
    return false;
  }
  img.hidden = true;
  document.querySelector("#lb-file").href = `/api/images/${r.image_id}/video`;  // plays in a tab (the file route sends bytes)
  if (!player) {
    player = document.createElement("video");
    player.id = "lb-video";
    player.controls = true;
    player.preload = "metadata";
    figure.append(player);
  }
  const start = r.timestamp || 0;
  player.poster = momentThumb(r, 1024);
  player.src = `/api/images/${r.image_id}/video#t=${start}`;
  player.addEventListener("loadedmetadata", () => { player.currentTime = start; }, { once: true });
  if (!moments) {
    moments = document.createElement("ul");
    moments.id = "lb-moments";
    moments.setAttribute("aria-label", "Moments");
    figure.append(moments);
  }
  const seek = (t) => { player.currentTime = t; player.play().catch(() => {}); };
  moments.replaceChildren(...[start, ...(r.moments || [])].map((t, i) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = (i === 0 ? "Best @ " : "@ ") + clock(t);
    b.addEventListener("click", () => seek(t));
    li.append(b);
    return li;
  }));
  momentButtons(r, player);
  return true;
};

// Leaving the detail view stops the video.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("#lightbox");
  if (box) box.addEventListener("close", () => { const p = document.querySelector("#lb-video"); if (p) p.pause(); });
});

onTiles((tiles, results) => tiles.forEach((tile, i) => { if (results[i]) window.videoTile(tile, results[i]); }));
onOpen((result) => window.videoLightbox(result));
