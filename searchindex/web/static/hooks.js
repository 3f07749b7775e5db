// Where a feature's own module plugs into the page without editing the others:
//   import { registerView, onDetail, onTiles } from "/static/hooks.js";
//   registerView("people", "People", async (box) => { ... });   // a nav button and ?view=people
//   onDetail((details, dl) => { ... });                         // add rows to the detail view's facts
//   onTiles((tiles, results) => { ... });                       // decorate tiles as they are added
//   onOpen((result) => { ... });                                // the detail view opens on a result
// A feature module is one more <script type="module"> line in index.html.
export const views = new Map();
export const detailHooks = [];
export const tileHooks = [];
export const openHooks = [];

export function registerView(name, label, render) {
  views.set(name, { label, render });
  document.dispatchEvent(new CustomEvent("searchindex:views"));
}
export function onDetail(fn) { detailHooks.push(fn); }
export function onTiles(fn) { tileHooks.push(fn); }
export function onOpen(fn) { openHooks.push(fn); }
