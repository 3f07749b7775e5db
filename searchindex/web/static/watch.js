// searchindex serve --watch: tell the open page when new photos have been indexed.
// Asks /api/watch every few seconds; "N new photos" reloads the same search (it lives in the URL)
// and puts the page back where it was scrolled to.
"use strict";

(() => {
  const KEY = "searchindex.scrollY";
  const EVERY_MS = 4000;
  let seen = null; // photos added when the page loaded
  let notice = null;

  function show(n) {
    if (!notice) {
      notice = document.createElement("button");
      notice.id = "watch-notice";
      notice.type = "button";
      // Styled here (CSSOM, allowed by the page's CSP) to keep app.css untouched.
      Object.assign(notice.style, { position: "fixed", bottom: "1rem", left: "50%", transform: "translateX(-50%)",
        zIndex: "10", padding: "0.5rem 1rem", borderRadius: "1rem", border: "none", cursor: "pointer",
        background: "#1a73e8", color: "#fff", font: "inherit", boxShadow: "0 2px 6px rgba(0,0,0,.3)" });
      notice.addEventListener("click", () => {
        sessionStorage.setItem(KEY, String(window.scrollY));
        location.reload();
      });
      document.body.append(notice);
    }
    notice.textContent = `${n} new photo${n === 1 ? "" : "s"} — show`;
    notice.hidden = false;
  }

  async function poll() {
    try {
      const r = await fetch("/api/watch", { credentials: "same-origin" });
      if (!r.ok) return;
      const s = await r.json();
      if (!s.watching && seen === null) return; // not served with --watch: stop asking
      if (seen === null) seen = s.added;
      else if (s.added > seen) show(s.added - seen);
    } catch (e) { /* the server restarting: ask again later */ }
    setTimeout(poll, EVERY_MS);
  }

  function restoreScroll() {
    const y = Number(sessionStorage.getItem(KEY));
    sessionStorage.removeItem(KEY);
    if (!y) return;
    const until = Date.now() + 8000; // the grid loads page by page as it is scrolled down
    const step = () => {
      window.scrollTo(0, y);
      if (Math.abs(window.scrollY - y) > 2 && Date.now() < until) setTimeout(step, 150);
    };
    step();
  }

  document.addEventListener("DOMContentLoaded", () => { restoreScroll(); poll(); });
})();
