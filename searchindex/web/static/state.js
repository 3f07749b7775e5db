// The page's one mutable state, shared by its modules. `actions` is filled in by app.js (so the
// grid and the detail view can start a search without importing it).
export const state = {
  results: [],        // what the grid shows, in order: search results or browsed images
  browsing: false,    // true: the library by date (no query); false: search results
  next: null,         // the next page: an offset (search) or a cursor (browse); null at the end
  loading: false,
  generation: 0,      // bumped by each new result set; late answers of older ones are dropped
  lbIndex: -1,        // the image open in the detail view
  active: 0,          // the grid's one Tab stop (roving tabindex)
  selected: new Set(), // image ids (strings)
  anchor: null,       // where a shift-click range starts
  picture: null,      // the File of a search by picture (never stored)
};
export const actions = { toggle: null, similar: null, open: null, more: null, selectionChanged: null };
