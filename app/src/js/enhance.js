// Tidemark's small progressive enhancements, inlined in every page's <head> (no framework, a
// few hundred bytes compressed; the WASM app owns everything else):
// - relative times ("5 min ago") stay current while a page is open (every minute);
// - the compact timeline switch, remembered in this browser (localStorage);
// - keyboard shortcuts: "/" search, "?" the list of shortcuts, "g a" / "g p" / "g u" go to
//   Applications / Approvals / Audit;
// - a link into a folded timeline card (#e123) opens the card.
(() => {
  const ago = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s <= 44) return "just now";
    if (s <= 5399) return `${Math.floor((s + 30) / 60)} min ago`;
    if (s <= 129599) return `${Math.floor((s + 1800) / 3600)} h ago`;
    return `${Math.floor((s + 43200) / 86400)} days ago`;
  };
  const tick = () => {
    for (const t of document.querySelectorAll("time[data-rel][datetime]")) {
      const at = Date.parse(t.getAttribute("datetime"));
      const text = t.firstChild;
      if (!Number.isNaN(at) && text && text.nodeType === Node.TEXT_NODE) {
        text.nodeValue = ago(Date.now() - at);
      }
    }
  };
  setInterval(tick, 60000);

  const KEY = "tidemark.density";
  const read = () => {
    try { return localStorage.getItem(KEY) === "compact" ? "compact" : "comfortable"; } catch { return "comfortable"; }
  };
  const show = () => {
    const compact = read() === "compact";
    document.documentElement.dataset.density = compact ? "compact" : "comfortable";
    for (const b of document.querySelectorAll('[data-action="density"]')) {
      if (b.getAttribute("aria-pressed") !== String(compact)) b.setAttribute("aria-pressed", String(compact));
    }
  };
  show();

  const dialog = () => document.getElementById("shortcuts");
  const toggleShortcuts = () => {
    const d = dialog();
    if (d) d.open ? d.close() : d.showModal();
  };
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target : null;
    if (target?.closest('[data-action="density"]')) {
      try { localStorage.setItem(KEY, read() === "compact" ? "comfortable" : "compact"); } catch {}
      show();
    } else if (target?.closest('[data-action="shortcuts"]')) {
      toggleShortcuts();
    }
  });

  let g = 0;
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    const t = e.target instanceof Element ? e.target : null;
    if (t?.closest("input, textarea, select, [contenteditable]")) return;
    if (e.key === "/") {
      const search = document.querySelector('input[type="search"]');
      if (search) { e.preventDefault(); search.focus(); }
    } else if (e.key === "?") {
      e.preventDefault();
      toggleShortcuts();
    } else if (e.key === "g") {
      g = Date.now();
    } else if (Date.now() - g < 1500) {
      g = 0;
      const to = { a: "/applications", p: "/approvals", u: "/audit" }[e.key];
      if (to) {
        e.preventDefault();
        const link = document.querySelector(`nav[aria-label="Primary"] a[href="${to}"]`);
        link ? link.click() : location.assign(to);
      }
    }
  });

  const reveal = () => {
    const id = decodeURIComponent(location.hash.slice(1));
    const el = id && document.getElementById(id);
    if (!el) return;
    for (let p = el.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    el.scrollIntoView({ block: "center" });
  };
  addEventListener("hashchange", reveal);
  document.addEventListener("DOMContentLoaded", () => {
    show();
    reveal();
    // Pages the router renders later get the current density on their switch too.
    new MutationObserver(show).observe(document.body, { childList: true, subtree: true });
  });

  // Pod logs: "Follow" streams new lines (Server-Sent Events) under the ones shown.
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("[data-follow]");
    if (!b) return;
    const pre = document.querySelector('[data-testid="log-text"]');
    if (b._es) { b._es.close(); b._es = null; b.textContent = "Follow"; return; }
    const es = new EventSource(b.dataset.follow);
    b._es = es; b.textContent = "Stop";
    es.addEventListener("line", (m) => {
      if (!pre.isConnected) { es.close(); return; }
      pre.append(m.data + "\n"); pre.scrollTop = pre.scrollHeight;
    });
  });
})();
