// The pipeline as an SVG: one box per target (matrix variants grouped inside), laid out by dagre.
// A state is shown by colour, by a symbol and its words ("● stale"), and by the border's style.

const SVG = "http://www.w3.org/2000/svg";
const SANS = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
const MONO = 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace';

export const STATES = {
  uptodate: { sym: "✓", words: "up to date" },
  stale: { sym: "●", words: "stale" },
  running: { sym: "▶", words: "running" },
  failed: { sym: "✗", words: "failed" },
  unknown: { sym: "?", words: "unknown" },
};
const RANK = { uptodate: 0, unknown: 1, stale: 2, failed: 3, running: 4 };
const PAD = 10;
const CHIP_H = 19;
const MAX_CHIPS = 12;

/** Normalise the service's graph ({nodes, edges}) into targets and edges the drawing uses. */
export function normalise(graph) {
  let nodes = graph && graph.nodes ? graph.nodes : [];
  if (!Array.isArray(nodes)) nodes = Object.entries(nodes).map(([name, n]) => ({ name, ...n }));
  const targets = nodes.map((n) => {
    const name = String(n.name ?? n.id);
    return {
      name,
      base: String(n.base ?? name.split("@")[0]),
      desc: n.desc || "",
      cmd: n.cmd || "",
      deps: n.deps || [],
      outs: n.outs || [],
      after: n.after || [],
      matrix: n.matrix || null,
      state: stateOf(n),
      reasons: (n.reasons || []).map((r) => (typeof r === "string" ? r : r.message || r.kind || JSON.stringify(r))),
      running: !!n.running,
      // The service's `last` run of the target decides "failed"; null: it does not say.
      lastFailed: n.last === undefined ? null : !!(n.last && n.last.outcome === "failed"),
    };
  });
  let edges = graph && (graph.edges || graph.links);
  if (Array.isArray(edges)) {
    edges = edges.map((e) => ({ from: String(e.from ?? e.source), to: String(e.to ?? e.target), kind: e.kind || "data" }));
  } else {
    edges = inferEdges(targets);
  }
  return { targets, edges, project: graph && (graph.project || graph.name), error: graph && graph.error };
}

function stateOf(n) {
  if (n.state === "uptodate" || n.state === "up-to-date") return "uptodate";
  if (n.state === "failed" || n.state === "running" || n.state === "stale") return n.state;
  if (typeof n.stale === "boolean") return n.stale ? "stale" : "uptodate";
  return "unknown";   // no plan (the service could not work out states)
}

function inferEdges(targets) {
  // Only for a service that sends no edges: an out that is a dep (or a prefix of one) makes an edge.
  const edges = [];
  for (const t of targets) {
    for (const other of targets) {
      if (other === t) continue;
      const feeds = other.outs.some((o) => t.deps.some((d) => d === o || d.startsWith(o) || o.startsWith(d)));
      if (feeds) edges.push({ from: other.name, to: t.name, kind: "data" });
      if (t.after.includes(other.name) || t.after.includes(other.base)) edges.push({ from: other.name, to: t.name, kind: "after" });
    }
  }
  return edges;
}

/** The state shown for one target: running, then failed (last run), then the plan's state. */
export function shownState(t, live) {
  if (t.running || live.running.has(t.name)) return "running";
  if (t.state === "failed") return "failed";
  const failed = t.lastFailed === null ? live.failed.has(t.name) : t.lastFailed;
  if (t.state !== "uptodate" && failed) return "failed";
  return t.state;
}

/** Group targets by base (matrix variants under their target) and edges between groups. */
export function groups(model, live) {
  const byBase = new Map();
  for (const t of model.targets) {
    if (!byBase.has(t.base)) byBase.set(t.base, { base: t.base, variants: [] });
    byBase.get(t.base).variants.push({ ...t, shown: shownState(t, live) });
  }
  const baseOf = new Map(model.targets.map((t) => [t.name, t.base]));
  const edgeKinds = new Map();
  for (const e of model.edges) {
    const a = baseOf.get(e.from) ?? e.from.split("@")[0];
    const b = baseOf.get(e.to) ?? e.to.split("@")[0];
    if (a === b || !byBase.has(a) || !byBase.has(b)) continue;
    const key = a + "\u0000" + b;
    if (edgeKinds.get(key) !== "data") edgeKinds.set(key, e.kind === "after" ? "after" : "data");
  }
  for (const g of byBase.values()) {
    g.matrix = g.variants.length > 1 || g.variants.some((v) => v.name.includes("@"));
    g.shown = g.variants.reduce((s, v) => (RANK[v.shown] > RANK[s] ? v.shown : s), "uptodate");
    g.counts = {};
    for (const v of g.variants) g.counts[v.shown] = (g.counts[v.shown] || 0) + 1;
  }
  const edges = [...edgeKinds].map(([k, kind]) => { const [from, to] = k.split("\u0000"); return { from, to, kind }; });
  return { groups: [...byBase.values()], edges };
}

let measureCtx = null;
function textWidth(text, font) {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  measureCtx.font = font;
  return measureCtx.measureText(text).width;
}

function variantLabel(v) {
  const i = v.name.indexOf("@");
  return i >= 0 ? v.name.slice(i + 1) : v.name;
}

function stateLine(g) {
  const st = STATES[g.shown];
  if (!g.matrix) {
    const n = g.variants[0].reasons.length;
    return `${st.sym} ${st.words}` + (g.shown === "stale" && n ? ` · ${n} reason${n > 1 ? "s" : ""}` : "");
  }
  const n = g.variants.length;
  const c = g.counts[g.shown] || 0;
  return g.shown === "uptodate" ? `${st.sym} ${st.words} · ${n} variants` : `${st.sym} ${c} of ${n} ${st.words}`;
}

function tooltip(v) {
  const st = STATES[v.shown];
  const lines = [`${v.name} — ${st.sym} ${st.words}`];
  if (v.desc) lines.push(v.desc);
  if (v.reasons.length && v.shown !== "uptodate") {
    lines.push("stale because:");
    for (const r of v.reasons) lines.push("  • " + r);
  }
  if (v.cmd) lines.push("$ " + v.cmd);
  return lines.join("\n");
}

function measure(g) {
  const nameW = textWidth(g.base, `700 14px ${SANS}`);
  const line = stateLine(g);
  const lineW = textWidth(line, `12px ${SANS}`);
  let w = Math.max(nameW, lineW, 96);
  g.chips = [];
  if (g.matrix) {
    const shown = g.variants.slice(0, g.variants.length > MAX_CHIPS ? MAX_CHIPS - 1 : MAX_CHIPS);
    const labels = shown.map((v) => ({ v, text: `${STATES[v.shown].sym} ${variantLabel(v)}` }));
    if (shown.length < g.variants.length) labels.push({ v: null, text: `+${g.variants.length - shown.length} more` });
    const perRow = labels.length <= 4 ? 2 : 3;
    const chipW = Math.max(...labels.map((l) => textWidth(l.text, `11.5px ${MONO}`))) + 12;
    g.chipW = chipW;
    g.perRow = perRow;
    g.chips = labels;
    w = Math.max(w, perRow * chipW + (perRow - 1) * 5);
  }
  g.stateText = line;
  g.width = Math.ceil(w + 2 * PAD);
  const rows = g.matrix ? Math.ceil(g.chips.length / g.perRow) : 0;
  g.height = 46 + (rows ? rows * (CHIP_H + 4) + 4 : 0);
}

function layout(gs, edges, rankdir) {
  const g = new window.dagre.graphlib.Graph();
  g.setGraph({ rankdir, nodesep: 22, ranksep: rankdir === "LR" ? 44 : 36, edgesep: 12, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of gs) g.setNode(n.base, { width: n.width, height: n.height });
  for (const e of edges) g.setEdge(e.from, e.to);
  window.dagre.layout(g);
  const info = g.graph();
  return { g, width: info.width || 0, height: info.height || 0 };
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, cls, content) {
  const t = el("text", { x, y, class: cls }, parent);
  t.textContent = content;
  return t;
}

function edgePath(points) {
  const p = points.filter((q) => Number.isFinite(q.x) && Number.isFinite(q.y));
  if (!p.length) return "";
  let d = `M${p[0].x},${p[0].y}`;
  for (let i = 1; i < p.length - 1; i++) {
    const mx = (p[i].x + p[i + 1].x) / 2;
    const my = (p[i].y + p[i + 1].y) / 2;
    d += ` Q${p[i].x},${p[i].y} ${mx},${my}`;
  }
  const last = p[p.length - 1];
  d += ` L${last.x},${last.y}`;
  return d;
}

/**
 * Draw the DAG into `container`, fitted to its size; `onSelect(base)` on click or Enter.
 * Returns nothing; the caller redraws when the graph, the live state or the size changes.
 */
export function draw(container, model, live, selected, onSelect) {
  const { groups: gs, edges } = groups(model, live);
  container.textContent = "";
  if (!gs.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "The Mlfile declares no targets.";
    container.appendChild(p);
    return;
  }
  for (const g of gs) measure(g);
  const availW = Math.max(container.clientWidth - 4, 200);
  const availH = Math.max(container.clientHeight - 4, 160);
  const fit = (l) => Math.min(availW / l.width, availH / l.height);
  let best = layout(gs, edges, "LR");
  if (fit(best) < 1 && gs.length <= 300) {
    const tb = layout(gs, edges, "TB");
    if (fit(tb) > fit(best) + 0.05) best = tb;
  }
  // Shrink to fit, but not below a scale at which labels stop being readable (scroll instead);
  // a small graph is drawn a little larger to use the panel.
  const scale = Math.min(Math.max(fit(best), 0.7), 1.3);
  const svg = el("svg", {
    width: Math.ceil(best.width * scale), height: Math.ceil(best.height * scale),
    viewBox: `0 0 ${Math.ceil(best.width)} ${Math.ceil(best.height)}`,
    role: "group", "aria-label": "Pipeline: targets and their dependencies",
  });
  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a94a3" }, marker);

  for (const e of best.g.edges()) {
    const kind = edges.find((x) => x.from === e.v && x.to === e.w)?.kind || "data";
    const path = el("path", { d: edgePath(best.g.edge(e).points || []), class: `edge ${kind}`, "marker-end": "url(#arrow)" }, svg);
    const t = el("title", {}, path);
    t.textContent = `${e.v} → ${e.w}` + (kind === "after" ? " (order only)" : "");
  }

  for (const g of gs) {
    const n = best.g.node(g.base);
    const x = n.x - g.width / 2;
    const y = n.y - g.height / 2;
    const node = el("g", {
      class: `node n-${g.shown}` + (selected === g.base ? " selected" : ""),
      transform: `translate(${x},${y})`, tabindex: 0, role: "button",
      "data-target": g.base, "data-state": g.shown,
      "aria-label": `${g.base}: ${stateLine(g)}`,
    }, svg);
    const title = el("title", {}, node);
    title.textContent = g.matrix
      ? [`${g.base} — ${stateLine(g)}`, ...g.variants.map((v) => tooltip(v))].join("\n\n")
      : tooltip(g.variants[0]);
    el("rect", { class: "box", width: g.width, height: g.height, rx: 7, ry: 7 }, node);
    if (g.shown === "failed") el("rect", { class: "inner", x: 4, y: 4, width: g.width - 8, height: g.height - 8, rx: 4, ry: 4 }, node);
    text(node, PAD, 21, "name", g.base);
    text(node, PAD, 38, "state", g.stateText);
    g.chips.forEach((c, i) => {
      const cx = PAD + (i % g.perRow) * (g.chipW + 5);
      const cy = 46 + Math.floor(i / g.perRow) * (CHIP_H + 4);
      const chip = el("g", { transform: `translate(${cx},${cy})`, "data-target": c.v ? c.v.name : "", "data-state": c.v ? c.v.shown : "" }, node);
      if (c.v) el("title", {}, chip).textContent = tooltip(c.v);
      el("rect", { class: "chipbox", width: g.chipW, height: CHIP_H, rx: 3, ry: 3 }, chip);
      text(chip, 6, 13.5, "chip" + (c.v ? ` c-${c.v.shown}` : ""), c.text);
    });
    const pick = () => onSelect(g.base);
    node.addEventListener("click", pick);
    node.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); } });
  }
  container.appendChild(svg);
}

/** One line about a selected target: what it is and why it is stale. */
export function describe(model, live, base) {
  const vs = model.targets.filter((t) => t.base === base);
  if (!vs.length) return null;
  const parts = [];
  const desc = vs[0].desc;
  const stale = vs.map((v) => ({ v, s: shownState(v, live) })).filter((x) => x.s !== "uptodate");
  parts.push({ b: base });
  if (desc) parts.push({ t: " — " + desc });
  if (!stale.length) parts.push({ t: `. ${STATES.uptodate.sym} up to date.` });
  for (const { v, s } of stale) {
    const why = v.reasons.length ? ": " + v.reasons.join("; ") : "";
    parts.push({ t: ` ${vs.length > 1 ? v.name + " " : ""}${STATES[s].sym} ${STATES[s].words}${why}.` });
  }
  if (vs[0].cmd && vs.length === 1) parts.push({ t: " $ " + vs[0].cmd });
  return parts;
}
