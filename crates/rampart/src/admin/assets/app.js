// rampart live stats page: polls /api/topology (state) and /api/history (the last 15 minutes,
// kept and computed by rampart) every second and redraws. Every value from the proxy is put
// in the page as text (never as HTML). Rates and percentiles all come from the server, so
// nothing here depends on the browser's clock or on how long the page has been open.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 600;
const CHART_H = 120;
const TOP_COMMANDS = 10;
const OVER_LAST_BOUND_US = 1000001; // p99 above the last histogram bound (1 s)
const LINE_CLASSES = 8; // .s0 ... .s7 in style.css

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k === "title") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
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
  if (us >= OVER_LAST_BOUND_US) return "> 1 s";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return +(us / 1e3).toFixed(1) + " ms";
  return Math.round(us) + " µs";
}

// A percentile is the upper bound of its histogram bucket.
function fmtPct(us) {
  if (us === null || us === undefined) return "–";
  return us >= OVER_LAST_BOUND_US ? "> 1 s" : "≤ " + fmtUs(us);
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

function key(pool, shard, node) {
  return pool + "\u0000" + shard + "\u0000" + node;
}

function last(values) {
  return values && values.length ? values[values.length - 1] : null;
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

// A round number at or above `x`: 1, 2 or 5 times a power of ten.
function niceCeil(x) {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function fmtSpan(ms) {
  const s = Math.round(ms / 1000);
  if (s >= 60) return "−" + +(s / 60).toFixed(1) + " min";
  return "−" + s + " s";
}

// How much time the charts show: what the server has kept (up to 15 minutes), at least one
// minute.
function chartSpan(t) {
  if (!t.length) return 60000;
  return Math.min(15 * 60000, Math.max(60000, t[t.length - 1] - t[0]));
}

// One chart: `lines` over the times `t` (server clock, ms), the first line drawn as the
// total. Gaps (null) break the line. The chart's data attributes say what it shows, for
// anyone reading the page's DOM.
function chart(name, what, t, lines, fmt) {
  const end = last(t) || 0;
  const span = chartSpan(t);
  const start = end - span;
  let max = 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
  // Latency on a log scale from 100 µs (the first bucket) to a power of ten, so a spike does
  // not flatten the rest; rates on a linear scale from 0.
  const log = what === "p99";
  const top = log ? Math.pow(10, Math.ceil(Math.log10(Math.max(Math.min(max, 1e6), 1000)))) : niceCeil(max);
  const bottom = log ? 100 : 0;
  const frac = log
    ? (v) => Math.log10(Math.max(Math.min(v, top), bottom) / bottom) / Math.log10(top / bottom)
    : (v) => Math.min(v, top) / top;
  const x = (ms) => ((ms - start) / span) * CHART_W;
  const y = (v) => CHART_H - frac(v) * (CHART_H - 4) - 1;
  const box = svg("svg", {
    viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none", class: "plot",
    role: "img", "aria-label": `${name} ${what} over the last ${fmtSpan(span).slice(1)}`,
  });
  const grid = log ? [1e3, 1e4, 1e5, 1e6].filter((g) => g < top) : [0.25, 0.5, 0.75].map((f) => top * f);
  for (const g of grid) {
    box.append(svg("line", { x1: 0, x2: CHART_W, y1: y(g), y2: y(g), class: "grid-line" }));
  }
  let nonzero = 0;
  lines.forEach((l, i) => {
    let d = "";
    let pen = false;
    l.values.forEach((v, j) => {
      if (v === null || v === undefined || t[j] < start) { pen = false; return; }
      if (i === 0 && v > 0) nonzero++;
      d += (pen ? "L" : "M") + x(t[j]).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) box.append(svg("path", { d, class: "line " + l.cls, "vector-effect": "non-scaling-stroke" }));
  });
  const now = last(lines[0] ? lines[0].values : []);
  return el("figure", {
    class: "chart", "data-chart": what, "data-series": name,
    "data-points": String(lines[0] ? lines[0].values.filter((v) => v !== null).length : 0),
    "data-nonzero": String(nonzero), "data-last": now === null || now === undefined ? "" : String(now),
  },
  el("figcaption", {}, el("span", { class: "what" }, what), " ", el("b", {}, fmt(now)),
    el("span", { class: "muted scale" }, "max ", fmt(max || null))),
  el("div", { class: "plot-box" }, box,
    el("span", { class: "y-top muted" }, fmt(top)),
    log ? el("span", { class: "y-bottom muted" }, fmt(bottom) + " · log scale") : null),
  el("div", { class: "x-axis muted" }, el("span", {}, fmtSpan(span)), el("span", {}, fmtSpan(span * 2 / 3)),
    el("span", {}, fmtSpan(span / 3)), el("span", {}, "now")));
}

function poolCharts(p, hist, hp, hnodes) {
  const t = hist.t_ms;
  const nodes = hnodes.map((n, i) => ({ n, cls: "s" + (i % LINE_CLASSES) }));
  const lines = (field) => [{ cls: "total", values: hp ? hp[field] : [] }]
    .concat(nodes.map(({ n, cls }) => ({ cls, values: n[field] })));
  const legend = el("div", { class: "legend" },
    el("span", { class: "key total" }, "pool"),
    ...nodes.map(({ n, cls }) => el("span", { class: "key " + cls }, n.addr)));
  return el("div", { class: "charts-wrap" },
    el("div", { class: "charts" },
      chart(p.name, "ops/s", t, lines("ops_per_s"), fmtNum),
      chart(p.name, "errors/s", t, lines("errors_per_s"), fmtNum),
      chart(p.name, "p99", t, lines("p99_us"), fmtUs)),
    legend);
}

function renderPool(p, hist) {
  const hp = hist.pools.find((x) => x.pool === p.name);
  const hnodes = hist.nodes.filter((x) => x.pool === p.name);
  const byNode = new Map(hnodes.map((n) => [key(n.pool, n.shard, n.addr), n]));
  const rows = [];
  for (const s of p.shards) {
    const shardState = s.ejected ? "EJECTED" : s.switching ? "SWITCHING" : s.writable ? "" : "NOT WRITABLE";
    rows.push(el("tr", { class: "shard" + (shardState ? " bad" : "") },
      el("th", { colSpan: 12, scope: "rowgroup" }, "shard ", s.name,
        shardState ? el("span", { class: "badge down" }, shardState) : null,
        s.reason ? el("span", { class: "muted note" }, " ", s.reason) : null,
        s.switch_state ? el("span", { class: "muted note" }, " switchover: ", s.switch_state) : null,
        s.pubsub_resubscriptions ? el("span", { class: "muted note" }, " pub/sub resubscriptions: ", String(s.pubsub_resubscriptions)) : null,
        s.circuit_open ? el("span", { class: "badge down", "data-circuit": "open" }, "CIRCUIT OPEN") : null,
        s.fail_open_misses || s.fail_open_drops ? el("span", { class: "muted note" }, " failed open: ",
          fmtNum(s.fail_open_misses), " misses, ", fmtNum(s.fail_open_drops), " dropped writes") : null,
        s.spool ? el("span", { class: s.spool.stopped ? "note" : "muted note" }, " spool: ",
          s.spool.stopped ? "STOPPED (" + s.spool.stopped + ") " : "",
          fmtNum(s.spool.entries), " waiting",
          s.spool.oldest_age_ms != null ? " (oldest " + (s.spool.oldest_age_ms / 1000).toFixed(1) + " s)" : "",
          ", ", fmtNum(s.spool.replayed), " replayed") : null)));
    for (const n of s.nodes) {
      const h = byNode.get(key(p.name, s.name, n.addr));
      const ops = h ? last(h.ops_per_s) : null;
      const errs = h ? last(h.errors_per_s) : null;
      const p99 = h ? last(h.p99_us) : null;
      const [cls, word] = status(n);
      const role = n.role + (n.seen_role !== "unknown" && n.seen_role !== n.role ? " (says " + n.seen_role + ")" : "");
      let lag = n.lag_ms === null || n.lag_ms === undefined ? "–" : fmtUs(n.lag_ms * 1000);
      if (n.stale || n.reads_stale) {
        // Reads served with the replication link down (max_stale), and since when.
        const since = n.stale_since ? new Date(n.stale_since * 1000).toLocaleTimeString() : null;
        lag = el("span", { class: n.stale ? "bad-text" : "muted", "data-stale": n.stale ? "1" : "0" },
          (n.stale ? "stale since " + since : lag) + " · " + fmtNum(n.reads_stale) + " stale reads");
      }
      const health = n.reason ? n.reason : (n.check_us ? fmtUs(n.check_us) : "");
      rows.push(el("tr", { class: "node " + cls, "data-node": n.addr, "data-state": word },
        cell("node", el("span", { class: "name" }, n.addr), n.name ? el("span", { class: "muted addr" }, " ", n.name) : null),
        cell("role", role),
        cell("status", el("span", { class: "badge " + cls }, word)),
        cell("last check", fmtAge(n.last_check_age_ms), health ? el("span", { class: "muted" }, " · ", health) : null),
        cell("conns", fmtNum(n.connections)),
        cell("ops/s", fmtNum(ops)),
        cell("err/s", errs ? el("span", { class: "bad-text" }, fmtNum(errs)) : fmtNum(errs)),
        cell("p99", fmtPct(p99)),
        cell("conn errors", fmtNum(n.errors)),
        cell("lag", lag),
        cell("ejections", fmtNum(n.ejections)),
        cell("zone", n.zone || "–")));
    }
  }
  const head = el("tr", {}, ...["node", "role", "status", "last check", "conns", "ops/s", "err/s",
    "p99", "conn errors", "lag", "ejections", "zone"].map((h) => el("th", { scope: "col" }, h)));
  // Certificates and when they expire; under 14 days is flagged.
  const certs = (p.tls_certificates || []).map((c) => {
    const days = (c.not_after * 1000 - Date.now()) / 86400000;
    return el("span", { class: days < 14 ? "bad-text note" : "muted note", "data-cert": c.role },
      " ", c.role, " ", c.subject, " expires ", new Date(c.not_after * 1000).toISOString().slice(0, 10),
      " (", Math.floor(days), " days)");
  });
  return el("section", { class: "panel pool", "data-pool": p.name },
    el("h2", {}, p.name, el("span", { class: "muted" }, " ", p.listen, p.tls_listen ? " · TLS " + p.tls_listen : "",
      " · ", p.kind, " · reads: ", p.read_policy,
      " · clients: ", fmtNum(p.client_connections), " · forward errors: ", fmtNum(p.forward_error))),
    certs.length ? el("p", { class: "certs" }, "certificates:", ...certs) : null,
    poolCharts(p, hist, hp, hnodes),
    el("div", { class: "scroll" }, el("table", { class: "grid nodes" }, el("thead", {}, head), el("tbody", {}, ...rows))));
}

function renderHeader(snap, hist) {
  const who = (id, label, value) => document.getElementById(id).replaceChildren(el("span", { class: "muted" }, label, " "), value);
  who("host", "host", hist.host);
  who("pid", "pid", String(hist.pid));
  document.getElementById("pid").setAttribute("data-pid", String(hist.pid));
  who("config", "config", hist.config || "none");
  document.getElementById("version").textContent = "v" + snap.version + " · up " + fmtNum(snap.uptime_s) + " s · " + snap.workers + " workers";
  document.title = "rampart · " + hist.host + " · pid " + hist.pid;
}

function renderSummary(snap, hist) {
  const sum = (f) => hist.pools.reduce((a, p) => a + (last(p[f]) || 0), 0);
  const p99 = hist.pools.reduce((a, p) => Math.max(a, last(p.p99_us) || 0), 0);
  const down = snap.pools.reduce((a, p) => a + p.shards.reduce((b, s) => b + s.nodes.filter((n) => !n.up).length, 0), 0);
  const errs = sum("errors_per_s");
  document.getElementById("summary").replaceChildren(
    el("div", { class: "stat" }, el("b", {}, fmtNum(sum("ops_per_s"))), "ops/s"),
    el("div", { class: "stat" + (errs > 0 ? " bad" : "") }, el("b", {}, fmtNum(errs)), "errors/s"),
    el("div", { class: "stat" }, el("b", {}, fmtPct(p99 || null)), "p99 (slowest pool)"),
    el("div", { class: "stat" }, el("b", {}, fmtNum(snap.client_connections)), "clients"),
    el("div", { class: "stat" + (down > 0 ? " bad" : "") }, el("b", {}, fmtNum(down)), "nodes down"));
}

function renderCommands(hist) {
  const all = hist.commands.rows.slice().sort((a, b) => (b.ops_per_s || 0) - (a.ops_per_s || 0) || b.calls - a.calls);
  const rows = all.slice(0, TOP_COMMANDS).map((c) =>
    el("tr", { "data-command": c.name },
      cell("command", c.name),
      cell("ops/s", fmtNum(c.ops_per_s)),
      cell("err/s", c.errors_per_s ? el("span", { class: "bad-text" }, fmtNum(c.errors_per_s)) : fmtNum(c.errors_per_s)),
      cell("p50", fmtPct(c.p50_us)),
      cell("p99", fmtPct(c.p99_us)),
      cell("calls", fmtNum(c.calls)),
      cell("errors", c.errors ? el("span", { class: "bad-text" }, fmtNum(c.errors)) : "0")));
  document.querySelector("#commands tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 7, class: "muted" }, "no commands yet"))]));
  document.getElementById("commands-note").textContent = "· " + Math.min(all.length, TOP_COMMANDS) + " of " + all.length +
    " by ops/s over the last " + fmtNum(hist.commands.window_s) + " s; calls and errors since start";
}

function renderEvents(snap) {
  const events = snap.events.slice(-100).reverse().map((e) =>
    el("li", { class: "event " + e.kind },
      el("time", { dateTime: new Date(e.at_ms).toISOString() }, fmtTime(e.at_ms)), " ",
      el("span", { class: "kind" }, e.kind.replace(/_/g, " ")), " ",
      el("span", { class: "where" }, [e.pool, e.shard, e.node].filter((x) => x).join(" / ")), " ",
      el("span", { class: "msg" }, e.message)));
  document.getElementById("events").replaceChildren(...(events.length ? events : [el("li", { class: "muted" }, "no events yet")]));
}

function delayText(f) {
  switch (f.distribution) {
    case "uniform": return f.delay_ms + "-" + (f.delay_ms + f.jitter_ms) + " ms uniform";
    case "normal": return f.delay_ms + " ± " + f.stddev_ms + " ms normal";
    case "exponential": return "mean " + f.delay_ms + " ms exponential";
    default: return f.delay_ms + " ms";
  }
}

function renderFaults(snap) {
  const faults = (snap.faults || []).map((f) =>
    el("li", { class: "event fault", "data-fault": String(f.id) },
      el("span", { class: "kind bad-text" }, f.kind + (f.kind === "delay" ? " " + delayText(f) : "") +
        (f.kind === "error" ? " " + f.error : "")), " ",
      el("span", { class: "where" }, [f.pool, f.shard, f.node, f.command].filter((x) => x).join(" / ")), " ",
      el("span", { class: "msg" }, "share " + f.share + " · " + fmtNum(f.hits) + " requests · ends in " +
        Math.ceil(f.remaining_ms / 1000) + " s (#" + f.id + ")")));
  document.getElementById("faults").replaceChildren(...faults);
  document.getElementById("faults-panel").hidden = faults.length === 0;
}

function render(snap, hist) {
  renderHeader(snap, hist);
  renderSummary(snap, hist);
  document.getElementById("pools").replaceChildren(...snap.pools.map((p) => renderPool(p, hist)));
  renderFaults(snap);
  renderEvents(snap);
  renderCommands(hist);
  const st = document.getElementById("status");
  st.textContent = "live · " + new Date(snap.now_ms).toLocaleTimeString([], { hour12: false });
  st.className = "badge up";
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function poll() {
  try {
    const [snap, hist] = await Promise.all([getJson("/api/topology"), getJson("/api/history")]);
    render(snap, hist);
  } catch (e) {
    const st = document.getElementById("status");
    st.textContent = "no answer from rampart (" + e.message + ")";
    st.className = "badge down";
  }
  setTimeout(poll, POLL_MS);
}

poll();
