// rampart live stats page: polls /api/topology every second and redraws. Every value from
// the proxy is put in the page as text (never as HTML).
"use strict";

const POLL_MS = 1000;
let prev = null; // the previous snapshot, for rates

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtUs(us) {
  if (us === null || us === undefined) return "–";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(1) + " ms";
  return Math.round(us) + " µs";
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return "never";
  if (ms < 1000) return ms + " ms ago";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s ago";
  return Math.round(ms / 60000) + " min ago";
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// The value below which a share q of the counts fall: the upper bound of that bucket
// (the last bucket, +Inf, reports its lower bound with a ">").
function percentile(buckets, bounds, q) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i];
    if (seen >= q * total) {
      if (bounds[i] === null) return { us: bounds[i - 1] || 0, over: true };
      return { us: bounds[i], over: false };
    }
  }
  return null;
}

function fmtPct(p) {
  if (!p) return "–";
  return (p.over ? "> " : "≤ ") + fmtUs(p.us);
}

function diff(a, b) {
  return a.map((x, i) => x - ((b && b[i]) || 0));
}

function key(pool, shard, node) {
  return pool + "\u0000" + shard + "\u0000" + node;
}

function index(snap) {
  const nodes = new Map();
  const cmds = new Map();
  if (snap) {
    for (const p of snap.pools)
      for (const s of p.shards)
        for (const n of s.nodes) nodes.set(key(p.name, s.name, n.addr), n);
    for (const c of snap.commands) cmds.set(c.name, c);
  }
  return { nodes, cmds };
}

// The node's state as the proxy decided it (one word per state); the page only colours it.
const STATUS = {
  up: ["up", "UP"],
  down: ["down", "DOWN"],
  ejected: ["down", "EJECTED"],
  maintenance: ["maint", "MAINT"],
  out: ["warn", "OUT"],
};

function status(n) {
  return STATUS[n.status] || ["warn", String(n.status).toUpperCase()];
}

function cell(label, ...content) {
  return el("td", { "data-label": label }, ...content);
}

function renderPool(p, dt, before) {
  const rows = [];
  for (const s of p.shards) {
    const shardState = s.ejected ? "EJECTED" : s.switching ? "SWITCHING" : s.writable ? "" : "NOT WRITABLE";
    rows.push(el("tr", { class: "shard" + (shardState ? " bad" : "") },
      el("th", { colSpan: 11, scope: "rowgroup" }, "shard ", s.name,
        shardState ? el("span", { class: "badge down" }, shardState) : null,
        s.reason ? el("span", { class: "muted note" }, " ", s.reason) : null,
        s.switch_state ? el("span", { class: "muted note" }, " switchover: ", s.switch_state) : null)));
    for (const n of s.nodes) {
      const old = before.nodes.get(key(p.name, s.name, n.addr));
      const ops = old && dt > 0 ? (n.requests - old.requests) / dt : null;
      const errs = old && dt > 0 ? (n.errors - old.errors) / dt : null;
      const [cls, word] = status(n);
      const role = n.role + (n.seen_role !== "unknown" && n.seen_role !== n.role ? " (says " + n.seen_role + ")" : "");
      const lag = n.lag_ms === null || n.lag_ms === undefined ? "–" : fmtUs(n.lag_ms * 1000);
      const health = n.reason ? n.reason : (n.check_us ? fmtUs(n.check_us) : "");
      rows.push(el("tr", { class: "node " + cls, "data-node": n.addr, "data-state": word },
        cell("node", el("span", { class: "name" }, n.addr), n.name ? el("span", { class: "muted addr" }, " ", n.name) : null),
        cell("role", role),
        cell("status", el("span", { class: "badge " + cls }, word)),
        cell("last check", fmtAge(n.last_check_age_ms), health ? el("span", { class: "muted" }, " · ", health) : null),
        cell("conns", fmtNum(n.connections)),
        cell("ops/s", fmtNum(ops)),
        cell("err/s", errs ? el("span", { class: "bad-text" }, fmtNum(errs)) : fmtNum(errs)),
        cell("errors", fmtNum(n.errors)),
        cell("lag", lag),
        cell("ejections", fmtNum(n.ejections)),
        cell("zone", n.zone || "–")));
    }
  }
  const head = el("tr", {}, ...["node", "role", "status", "last check", "conns", "ops/s", "err/s",
    "errors", "lag", "ejections", "zone"].map((h) => el("th", { scope: "col" }, h)));
  return el("section", { class: "panel pool", "data-pool": p.name },
    el("h2", {}, p.name, el("span", { class: "muted" }, " ", p.listen, " · ", p.kind, " · reads: ", p.read_policy,
      " · clients: ", fmtNum(p.client_connections), " · forward errors: ", fmtNum(p.forward_error))),
    el("table", { class: "grid nodes" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function render(snap) {
  const now = Date.now();
  const dt = prev ? (snap._at - prev._at) / 1000 : 0;
  const before = index(prev);
  document.getElementById("version").textContent = "v" + snap.version + " · up " + fmtNum(snap.uptime_s) + " s · " + snap.workers + " workers";

  const bounds = snap.latency_buckets_us;
  const allNow = snap.commands.reduce((acc, c) => acc.map((x, i) => x + c.buckets[i]), bounds.map(() => 0));
  const allPrev = prev ? prev.commands.reduce((acc, c) => acc.map((x, i) => x + c.buckets[i]), bounds.map(() => 0)) : null;
  const win = allPrev ? diff(allNow, allPrev) : allNow;
  const reqRate = prev && dt > 0 ? (snap.requests - prev.requests) / dt : null;
  const summary = document.getElementById("summary");
  summary.replaceChildren(
    el("div", { class: "stat" }, el("b", {}, fmtNum(reqRate)), "ops/s"),
    el("div", { class: "stat" }, el("b", {}, fmtNum(snap.client_connections)), "clients"),
    el("div", { class: "stat" }, el("b", {}, fmtPct(percentile(win, bounds, 0.5))), "p50"),
    el("div", { class: "stat" }, el("b", {}, fmtPct(percentile(win, bounds, 0.99))), "p99"),
    el("div", { class: "stat" }, el("b", {}, fmtNum(snap.pools.reduce((a, p) => a + p.shards.reduce((b, s) => b + s.nodes.filter((n) => !n.up).length, 0), 0))), "nodes down"));

  document.getElementById("pools").replaceChildren(...snap.pools.map((p) => renderPool(p, dt, before)));

  const cmdRows = snap.commands.slice().sort((a, b) => b.calls - a.calls).map((c) => {
    const old = before.cmds.get(c.name);
    const w = old ? diff(c.buckets, old.buckets) : c.buckets;
    const ops = old && dt > 0 ? (c.calls - old.calls) / dt : null;
    return el("tr", {}, cell("command", c.name), cell("calls", fmtNum(c.calls)), cell("ops/s", fmtNum(ops)),
      cell("p50", fmtPct(percentile(w, bounds, 0.5))), cell("p99", fmtPct(percentile(w, bounds, 0.99))));
  });
  document.querySelector("#commands tbody").replaceChildren(...cmdRows);

  const events = snap.events.slice(-100).reverse().map((e) =>
    el("li", { class: "event " + e.kind },
      el("time", { dateTime: new Date(e.at_ms).toISOString() }, fmtTime(e.at_ms)), " ",
      el("span", { class: "kind" }, e.kind.replace(/_/g, " ")), " ",
      el("span", { class: "where" }, [e.pool, e.shard, e.node].filter((x) => x).join(" / ")), " ",
      el("span", { class: "msg" }, e.message)));
  document.getElementById("events").replaceChildren(...(events.length ? events : [el("li", { class: "muted" }, "no events yet")]));
  const st = document.getElementById("status");
  st.textContent = "live · " + new Date(now).toLocaleTimeString([], { hour12: false });
  st.className = "badge up";
}

async function poll() {
  try {
    const r = await fetch("/api/topology", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const snap = await r.json();
    snap._at = performance.now();
    render(snap);
    prev = snap;
  } catch (e) {
    const st = document.getElementById("status");
    st.textContent = "no answer from rampart (" + e.message + ")";
    st.className = "badge down";
  }
  setTimeout(poll, POLL_MS);
}

poll();
