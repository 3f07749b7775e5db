// Search by any picture: drop an image on the page, paste one, or choose a file.  The picture is
// sent to the server, searched with, and forgotten; the URL says "picture=NAME" only.
import { $, status } from "./util.js";
import { readUrl, writeUrl } from "./url.js";
import { state, actions } from "./state.js";

const TYPES = /^image\//;

export function searchPicture(file) {
  if (!file || !TYPES.test(file.type || "image/")) { status("That is not a picture: choose an image file."); return; }
  state.picture = file;
  const s = readUrl();
  writeUrl({ ...s, q: "", image: [], like: [], unlike: [], concept: "", view: "", start: "", picture: file.name || "pasted picture" });
  actions.refresh();
}

export function wirePicture() {
  const input = $("#picture-input");
  $("#picture-button").addEventListener("click", () => input.click());
  input.addEventListener("change", () => { if (input.files[0]) searchPicture(input.files[0]); input.value = ""; });
  document.addEventListener("dragover", (ev) => {
    if ([...ev.dataTransfer.types].includes("Files")) { ev.preventDefault(); document.body.classList.add("dropping"); }
  });
  document.addEventListener("dragleave", (ev) => { if (!ev.relatedTarget) document.body.classList.remove("dropping"); });
  document.addEventListener("drop", (ev) => {
    document.body.classList.remove("dropping");
    const file = [...(ev.dataTransfer.files || [])][0];
    if (file) { ev.preventDefault(); searchPicture(file); }
  });
  document.addEventListener("paste", (ev) => {
    const file = [...(ev.clipboardData.files || [])].find((f) => TYPES.test(f.type));
    if (file) { ev.preventDefault(); searchPicture(file); }
  });
}
