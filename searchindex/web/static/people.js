import { registerView, onOpen } from "/static/hooks.js";
// searchindex serve: the People view and the faces outlined in the image details.
// Plain JavaScript, no build step. It registers the "people" view and outlines the faces when the
// details of an image open, through hooks.js (see the end of this file).

window.searchindexPeople = (() => {
  const make = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) e.append(c);
    return e;
  };
  const crop = (faceId, size = 128) => `/api/faces/${faceId}/crop?size=${size}`;

  async function call(url, body) {
    const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const r = await fetch(url, options);
    if (r.status === 204) return null;
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  // A named person's photos: the search page with @"Name" in the query box (see docs/people.md).
  function searchFor(name) {
    const input = document.querySelector("#q");
    input.value = `@"${name}"`;
    const p = new URLSearchParams({ q: input.value });
    history.pushState(null, "", `?${p}`);
    window.dispatchEvent(new PopStateEvent("popstate"));
  }

  async function show(box) {
    const { people } = await call("/api/people?faces=1");
    const list = make("ul", { class: "people" }, ...people.map((p) => make("li", { class: "person" },
      make("button", { type: "button", title: p.name ? `Photos of ${p.name}` : `Person ${p.id}: ${p.count} faces`,
        onclick: () => (p.name ? searchFor(p.name) : showPerson(box, p.id)) },
        p.faces.length ? make("img", { src: crop(p.faces[0].id), alt: p.name || `person ${p.id}`, width: 96, height: 96 }) : "",
        make("span", {}, `${p.name || "Unnamed"} (${p.count})`)),
      make("button", { type: "button", class: "edit", "aria-label": `Faces of person ${p.id}`, onclick: () => showPerson(box, p.id) }, "…"))));
    box.replaceChildren(make("h2", {}, `People: ${people.length}`),
      people.length ? list : make("p", {}, "No persons yet: run `searchindex faces`."));
  }

  async function showPerson(box, id) {
    const p = await call(`/api/people/${id}`);
    const rename = make("form", { class: "name-person", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await call(`/api/people/${id}/name`, { name: ev.target.elements.name.value }); showPerson(box, id); } catch (err) { alert(err.message); }
    } }, make("label", {}, "Name ", make("input", { name: "name", value: p.name || "", required: true })), make("button", { type: "submit" }, "Save"));
    const merge = make("form", { class: "merge-person", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await call(`/api/people/${id}/merge`, { other: Number(ev.target.elements.other.value) }); showPerson(box, id); } catch (err) { alert(err.message); }
    } }, make("label", {}, "Merge person ", make("input", { name: "other", type: "number", min: 1, required: true })), make("button", { type: "submit" }, "into this one"));
    const faces = make("ul", { class: "faces" }, ...p.faces.map((f) => make("li", {},
      make("img", { src: crop(f.id), alt: `face ${f.id}`, width: 96, height: 96, title: f.path }),
      make("button", { type: "button", title: "Not this person", onclick: async () => {
        try { await call(`/api/faces/${f.id}/not`, { person: id }); showPerson(box, id); } catch (err) { alert(err.message); }
      } }, "Not them"),
      make("button", { type: "button", title: "Move to another person", onclick: async () => {
        const to = prompt("Move this face to person id (empty: a new person):");
        if (to === null) return;
        try { await call(`/api/faces/${f.id}/move`, { person: to.trim() ? Number(to) : null }); showPerson(box, id); } catch (err) { alert(err.message); }
      } }, "Move"))));
    box.replaceChildren(make("h2", {}, `${p.name || "Unnamed person"} (${p.id}): ${p.count} faces in ${p.images} photos`),
      rename, merge, make("button", { type: "button", onclick: () => show(box) }, "All people"), faces);
  }

  // Boxes over the faces of the image in the details dialog, scaled to the picture as shown.
  async function outline(result) {
    const figure = document.querySelector("#lightbox figure");
    const img = document.querySelector("#lb-img");
    if (!figure || !img) return;
    for (const old of figure.querySelectorAll(".face-box")) old.remove();
    let faces;
    try { ({ faces } = await call(`/api/images/${result.image_id}/faces`)); } catch (err) { return; }
    if (!faces.length) return;
    const names = new Map();
    for (const f of faces) if (f.person_id != null && !names.has(f.person_id)) names.set(f.person_id, null);
    const { people } = await call("/api/people?faces=0&hidden=true");
    for (const p of people) if (names.has(p.id)) names.set(p.id, p.name);
    const draw = () => {
      for (const old of figure.querySelectorAll(".face-box")) old.remove();
      const scale = img.clientWidth / result.width;
      for (const f of faces) {
        const [x, y, w, h] = f.box;
        const name = f.person_id != null ? names.get(f.person_id) || `person ${f.person_id}` : "";
        const frame = make("span", { class: "face-box", title: name }, name ? make("span", { class: "face-name" }, name) : "");
        // Through the style object, which the page's Content-Security-Policy allows (style attributes it does not).
        Object.assign(frame.style, { left: `${img.offsetLeft + x * scale}px`, top: `${img.offsetTop + y * scale}px`,
          width: `${w * scale}px`, height: `${h * scale}px` });
        figure.append(frame);
      }
    };
    if (img.complete) draw(); else img.addEventListener("load", draw, { once: true });
  }

  return { show, outline };
})();

registerView("people", "People", (box) => window.searchindexPeople.show(box));
onOpen((result) => window.searchindexPeople.outline(result));
