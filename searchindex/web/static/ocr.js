import { onDetail, onTiles } from "/static/hooks.js";
// Text read in photos (searchindex ocr): the matched lines under each tile, and the lines' boxes over
// the image in the detail view with the text beside it, selectable.  Plugged in through hooks.js;
// ocr.css styles them (the page's content policy allows no inline style sheet).
"use strict";

(() => {
  function tile(node, r) {
    if (!r.ocr_text || !r.ocr_text.length) return;
    const p = document.createElement("p");
    p.className = "ocr-text";
    p.textContent = r.ocr_text.join(" · ");
    p.title = `Text in the photo: ${r.ocr_text.join("\n")}`;
    node.append(p);
  }

  // Where the picture is drawn inside the <img> box (object-fit: contain letterboxes it).
  function drawn(img) {
    const w = img.clientWidth, h = img.clientHeight, nw = img.naturalWidth || w, nh = img.naturalHeight || h;
    const scale = Math.min(w / nw, h / nh);
    return { left: img.offsetLeft + (w - nw * scale) / 2, top: img.offsetTop + (h - nh * scale) / 2, width: nw * scale, height: nh * scale };
  }

  let current = [];

  function layout() {
    const img = document.querySelector("#lb-img");
    const fig = img && img.closest("figure");
    if (!fig) return;
    fig.querySelectorAll(".ocr-layer").forEach((n) => n.remove());
    if (!current.length || !img.complete) return;
    const at = drawn(img);
    const layer = document.createElement("div");
    layer.className = "ocr-layer";
    Object.assign(layer.style, { left: `${at.left}px`, top: `${at.top}px`, width: `${at.width}px`, height: `${at.height}px` });
    for (const line of current) {
      const xs = line.box.filter((_, i) => i % 2 === 0), ys = line.box.filter((_, i) => i % 2 === 1);
      const box = document.createElement("div");
      box.className = "ocr-box";
      box.title = line.text;
      Object.assign(box.style, { left: `${Math.min(...xs) * 100}%`, top: `${Math.min(...ys) * 100}%`,
        width: `${(Math.max(...xs) - Math.min(...xs)) * 100}%`, height: `${(Math.max(...ys) - Math.min(...ys)) * 100}%` });
      layer.append(box);
    }
    fig.append(layer);
  }

  function facts(details) {
    current = (details && details.text_lines) || [];
    const img = document.querySelector("#lb-img");
    if (img) img.addEventListener("load", layout, { once: true });
    layout();
    const dl = document.querySelector("#lb-facts");
    if (dl && current.length) {
      const list = document.createElement("ol");
      list.className = "ocr-lines";
      for (const line of current) {
        const li = document.createElement("li");
        li.textContent = line.text;
        li.title = `confidence ${line.confidence.toFixed(2)}, ${line.engine}${line.angle ? `, turned ${line.angle}°` : ""}`;
        list.append(li);
      }
      const dt = document.createElement("dt");
      dt.textContent = "Text";
      const dd = document.createElement("dd");
      dd.append(list);
      dl.append(dt, dd);
    }
  }

  window.addEventListener("resize", layout);
  window.searchindexOcr = { tile, facts };
})();

onTiles((tiles, results) => tiles.forEach((node, i) => { if (results[i]) window.searchindexOcr.tile(node, results[i]); }));
onDetail((details) => window.searchindexOcr.facts(details));
