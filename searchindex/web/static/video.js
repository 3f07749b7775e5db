// searchindex serve: videos on the search page. A video result shows the frame of its best moment with
// a duration badge; its detail view plays the file (streamed by id, with range requests) from that
// second and lists the other moments to jump to. Hooked into the page through hooks.js.
import { onOpen, onTiles } from "/static/hooks.js";

const clock = (seconds) => {
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${two(m)}:${two(r)}`;
};

const momentThumb = (r, size = 256) => `/api/images/${r.image_id}/thumbnail?size=${size}&t=${r.timestamp || 0}`;

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
  return true;
};

// Leaving the detail view stops the video.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("#lightbox");
  if (box) box.addEventListener("close", () => { const p = document.querySelector("#lb-video"); if (p) p.pause(); });
});

onTiles((tiles, results) => tiles.forEach((tile, i) => { if (results[i]) window.videoTile(tile, results[i]); }));
onOpen((result) => window.videoLightbox(result));
