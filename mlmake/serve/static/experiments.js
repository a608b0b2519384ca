// The Experiments view: the table of `mlmake exp show` (the work tree, the base commit and each
// experiment × metrics × params), sortable by any column, and a scatter chart of one param
// against one metric drawn as SVG, each point labelled with its experiment's name.

import { RUN_STATUS, badge, when } from "./runs.js";

const SVG = "http://www.w3.org/2000/svg";
const PINNED = { workspace: 0, baseline: 1 };   // these rows stay on top, as in `exp show`
const KIND = {
  workspace: { words: "work tree", title: "the work tree as it is now, uncommitted edits included" },
  baseline: { words: "HEAD", title: "the base commit (HEAD)" },
  experiment: { words: "", title: "an experiment" },
  queued: { words: "", title: "an experiment waiting in the queue (mlmake exp start runs it)" },
};
const SHAPE = { experiment: "circle", baseline: "diamond", workspace: "square", queued: "circle" };

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function s(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(5));
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** GET /api/experiments → {rows, params, metrics: [{path, key, id, label}], changed: {...}}. */
export function normalise(data) {
  const d = data || {};
  const metrics = (d.metrics || []).map((m) => ({ path: m.path, key: m.key }));
  const count = new Map();
  for (const m of metrics) count.set(m.key, (count.get(m.key) || 0) + 1);
  for (const m of metrics) {
    m.id = `m:${m.path}:${m.key}`;
    m.label = count.get(m.key) > 1 ? `${m.path}:${m.key}` : m.key;
  }
  const changedM = new Set((d.changed?.metrics || []).map((m) => `m:${m.path}:${m.key}`));
  return {
    rows: (d.rows || []).map((r, i) => ({ ...r, order: i })),
    params: d.params || [],
    metrics,
    changed: { params: new Set(d.changed?.params || []), metrics: changedM },
    error: d.error || null,
  };
}

/** A row's value in column `col` (undefined when it has none). */
function valueOf(row, col) {
  if (col.group === "metric") {
    const file = row.metrics && row.metrics[col.path];
    return file ? file[col.key] : undefined;
  }
  if (col.group === "param") return row.params ? row.params[col.key] : undefined;
  if (col.id === "name") return row.name;
  if (col.id === "rev") return row.rev || undefined;
  if (col.id === "status") return row.status || undefined;
  if (col.id === "created") return row.created || undefined;
  return undefined;
}

/** The columns shown: name, rev, status, created, then metrics and params (changed ones unless `all`). */
export function columns(exps, all) {
  const cols = [
    { id: "name", label: "Experiment", group: "meta" },
    { id: "rev", label: "Rev", group: "meta" },
    { id: "status", label: "Status", group: "meta" },
    { id: "created", label: "Created", group: "meta", num: true },
  ];
  for (const m of exps.metrics) {
    if (all || exps.changed.metrics.has(m.id)) {
      cols.push({ id: m.id, label: m.label, group: "metric", path: m.path, key: m.key, num: true,
        title: `metric ${m.key} in ${m.path}` });
    }
  }
  for (const p of exps.params) {
    if (all || exps.changed.params.has(p)) {
      cols.push({ id: `p:${p}`, label: p, group: "param", key: p, num: true, title: `param ${p}` });
    }
  }
  return cols;
}

/** Compare two values of a column: numbers numerically, before text; missing ones always last. */
function compare(a, b, desc) {
  const ma = a === undefined || a === null || (typeof a === "number" && !Number.isFinite(a));
  const mb = b === undefined || b === null || (typeof b === "number" && !Number.isFinite(b));
  if (ma || mb) return ma === mb ? 0 : ma ? 1 : -1;
  let c;
  if (typeof a === "number" && typeof b === "number") c = a - b;
  else if (typeof a === "number") c = -1;
  else if (typeof b === "number") c = 1;
  else c = fmt(a).localeCompare(fmt(b), undefined, { numeric: true });
  return desc ? -c : c;
}

/** The rows in the order shown: the work tree and base commit first, the rest by `sort`. */
export function sorted(exps, sort, cols) {
  const col = sort && cols.find((c) => c.id === sort.col);
  return [...exps.rows].sort((a, b) => {
    const pa = PINNED[a.kind] ?? 2;
    const pb = PINNED[b.kind] ?? 2;
    if (pa !== pb || pa < 2) return pa - pb;
    const c = col ? compare(valueOf(a, col), valueOf(b, col), sort.desc) : 0;
    return c || a.order - b.order;
  });
}

/**
 * Fill the table: a header row of groups (metrics, params), one of columns (click to sort),
 * and a row per experiment. A param an experiment set with -S is bold.
 */
export function drawTable(table, exps, { all, sort, selected }, { onSort, onSelect }) {
  const cols = columns(exps, all);
  const thead = table.tHead;
  const tbody = table.tBodies[0];
  thead.textContent = "";
  tbody.textContent = "";
  const groups = thead.insertRow();
  groups.className = "groups";
  for (const [group, words] of [["meta", ""], ["metric", "metrics"], ["param", "params"]]) {
    const n = cols.filter((c) => c.group === group).length;
    if (!n) continue;
    const th = h("th", `g-${group}`, words);
    th.colSpan = n;
    th.scope = "colgroup";
    groups.appendChild(th);
  }
  const hr = thead.insertRow();
  for (const c of cols) {
    const th = h("th", `g-${c.group}` + (c.num ? " num" : "") + (c.group !== "meta" ? " mono" : ""));
    th.scope = "col";
    th.dataset.col = c.id;
    th.dataset.group = c.group;
    if (c.key) th.dataset.key = c.key;
    const active = sort && sort.col === c.id;
    th.setAttribute("aria-sort", active ? (sort.desc ? "descending" : "ascending") : "none");
    const button = h("button", "sort");
    button.type = "button";
    button.append(c.label, h("span", "arrow", active ? (sort.desc ? " ▼" : " ▲") : ""));
    button.title = `${c.title || c.label}: click to sort` + (active ? (sort.desc ? " (now descending)" : " (now ascending)") : "");
    button.addEventListener("click", () => onSort(c.id));
    th.appendChild(button);
    hr.appendChild(th);
  }
  const rows = sorted(exps, sort, cols);
  for (const r of rows) {
    const tr = tbody.insertRow();
    tr.dataset.name = r.name;
    tr.dataset.kind = r.kind;
    tr.className = "pick" + (r.name === selected ? " selected" : "") + ` k-${r.kind}`;
    tr.tabIndex = 0;
    for (const c of cols) {
      const td = tr.insertCell();
      td.dataset.col = c.id;
      const v = valueOf(r, c);
      if (c.id === "name") {
        td.className = "mono name";
        td.append(r.name);
        const kind = KIND[r.kind] || { words: r.kind, title: r.kind };
        if (kind.words) td.append(" ", h("span", "kind", kind.words));
        td.title = kind.title;
      } else if (c.id === "rev") {
        td.className = "mono";
        td.textContent = r.rev ? r.rev.slice(0, 7) : "–";
        if (r.rev) td.title = r.rev + (r.base ? `\nbase ${r.base}` : "");
      } else if (c.id === "status") {
        const st = RUN_STATUS[r.status];
        if (st) td.appendChild(badge(st.sym, r.status, st.cls)); else td.textContent = r.status || "–";
      } else if (c.id === "created") {
        td.className = "num";
        td.textContent = r.created ? when(r.created) : "–";
        if (r.created) td.title = new Date(r.created * 1000).toLocaleString();
      } else {
        td.className = "num" + (v === undefined ? " absent" : "");
        td.textContent = fmt(v);
        if (c.group === "param" && r.overrides && Object.prototype.hasOwnProperty.call(r.overrides, c.key)) {
          td.classList.add("override");
          td.title = `set with -S ${c.key}=${JSON.stringify(r.overrides[c.key])}`;
        }
      }
    }
    tr.addEventListener("click", () => onSelect(r.name));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(r.name); });
  }
  return cols;
}

/** A line about the selected experiment: rev, base, what it set, when. */
export function describe(p, exps, name) {
  p.textContent = "";
  const r = name && exps.rows.find((x) => x.name === name);
  if (!r) {
    p.textContent = "Click a column to sort (the work tree and HEAD stay on top); click a row or a point to pick an experiment.";
    return;
  }
  const bits = [["", r.name]];
  if (r.rev) bits.push([" · rev ", r.rev.slice(0, 12)]);
  if (r.base) bits.push([" · base ", r.base.slice(0, 12)]);
  const set = Object.entries(r.overrides || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
  if (set) bits.push([" · set ", set]);
  if (r.status) bits.push([" · ", r.status]);
  if (r.created) bits.push([" · created ", new Date(r.created * 1000).toLocaleString()]);
  for (const [label, value] of bits) {
    p.append(label);
    p.appendChild(h("b", null, value));
  }
  if (r.rev && r.kind === "experiment") p.append(" — ", h("code", null, `mlmake exp apply ${r.name}`));
}

// ------------------------------------------------------------------------------ the chart
/** Fill the x (params) and y (numeric metrics) pickers; returns the choice kept or made. */
export function drawPickers(selX, selY, exps, want) {
  const params = exps.params;
  const metrics = exps.metrics.filter((m) => exps.rows.some((r) => isNum(r.metrics?.[m.path]?.[m.key])));
  const fill = (sel, items) => {
    sel.textContent = "";
    for (const [value, label] of items) {
      const o = h("option", null, label);
      o.value = value;
      sel.appendChild(o);
    }
    sel.disabled = items.length === 0;
  };
  fill(selX, params.map((p) => [p, p]));
  fill(selY, metrics.map((m) => [m.id, m.label]));
  // Default: the first param an experiment set with -S, else one that differs between the rows;
  // the first metric that differs.
  const set = new Set(exps.rows.flatMap((r) => Object.keys(r.overrides || {})));
  const x = params.includes(want.x) ? want.x
    : params.find((p) => set.has(p)) ?? params.find((p) => exps.changed.params.has(p)) ?? params[0] ?? null;
  const y = metrics.some((m) => m.id === want.y) ? want.y
    : (metrics.find((m) => exps.changed.metrics.has(m.id)) ?? metrics[0])?.id ?? null;
  if (x !== null) selX.value = x;
  if (y !== null) selY.value = y;
  return { x, y };
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}
/** A numeric scale padded around [lo, hi], with round ticks. */
function numScale(values, count) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) { const d = lo === 0 ? 1 : Math.abs(lo) * 0.1; lo -= d; hi += d; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const step = niceStep(hi - lo, count);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return { lo, hi, ticks, at: (v) => (v - lo) / (hi - lo), label: (v) => fmt(v) };
}
/** Text values (or a mix) as evenly spaced categories. */
function catScale(values) {
  const cats = [...new Set(values.map((v) => fmt(v)))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const n = cats.length;
  return { ticks: cats, at: (v) => (cats.indexOf(fmt(v)) + 0.5) / n, label: (v) => String(v), cats };
}

function shape(kind, x, y) {
  const which = SHAPE[kind] || "circle";
  if (which === "diamond") return s("path", { d: `M${x} ${y - 6.5}L${x + 6.5} ${y}L${x} ${y + 6.5}L${x - 6.5} ${y}Z`, class: "mark" });
  if (which === "square") return s("rect", { x: x - 5, y: y - 5, width: 10, height: 10, class: "mark" });
  return s("circle", { cx: x, cy: y, r: 5.5, class: "mark" });
}

/**
 * Draw param `x` against metric `y` (an id "m:path:key") into `box`: one point per row that has
 * both, labelled with its name; the axes' names as text. Returns the number of points drawn.
 */
export function drawChart(box, exps, x, y, selected, onSelect) {
  box.textContent = "";
  const metric = exps.metrics.find((m) => m.id === y);
  if (!exps.rows.length) return 0;
  if (x === null || !metric) {
    box.appendChild(h("p", "empty", x === null ? "No params to plot: the project has no params file."
      : "No numeric metric to plot yet: experiments record the metrics files their targets write."));
    return 0;
  }
  const pts = [];
  for (const r of exps.rows) {
    const xv = r.params ? r.params[x] : undefined;
    const yv = r.metrics?.[metric.path]?.[metric.key];
    if (xv === undefined || xv === null || !isNum(yv)) continue;
    pts.push({ row: r, xv, yv });
  }
  if (!pts.length) {
    box.appendChild(h("p", "empty", `No experiment has both ${x} and ${metric.label}.`));
    return 0;
  }
  const W = Math.max(box.clientWidth, 320);
  const H = Math.max(box.clientHeight, 220);
  const M = { l: 70, r: 24, t: 26, b: 48 };
  const iw = W - M.l - M.r;
  const ih = H - M.t - M.b;
  const numeric = pts.every((p) => isNum(p.xv));
  const sx = numeric ? numScale(pts.map((p) => p.xv), Math.max(2, Math.floor(iw / 90))) : catScale(pts.map((p) => p.xv));
  const sy = numScale(pts.map((p) => p.yv), Math.max(2, Math.floor(ih / 45)));
  const px = (v) => M.l + sx.at(v) * iw;
  const py = (v) => M.t + (1 - sy.at(v)) * ih;

  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${metric.label} against ${x}, one point per experiment` });
  svg.appendChild(s("title", {}, `${metric.label} against ${x}`));
  const grid = s("g", { class: "grid" });
  for (const t of sy.ticks) {
    const yy = py(t);
    grid.appendChild(s("line", { x1: M.l, x2: M.l + iw, y1: yy, y2: yy }));
    grid.appendChild(s("text", { x: M.l - 8, y: yy + 4, class: "tick", "text-anchor": "end" }, fmt(t)));
  }
  for (const t of sx.ticks) {
    const xx = px(t);
    grid.appendChild(s("line", { x1: xx, x2: xx, y1: M.t, y2: M.t + ih }));
    grid.appendChild(s("text", { x: xx, y: M.t + ih + 16, class: "tick", "text-anchor": "middle" }, numeric ? fmt(t) : t));
  }
  svg.appendChild(grid);
  svg.appendChild(s("rect", { x: M.l, y: M.t, width: iw, height: ih, class: "frame" }));
  svg.appendChild(s("text", { x: M.l + iw / 2, y: H - 8, class: "axis-label x-label", "text-anchor": "middle" }, x));
  svg.appendChild(s("text", { x: 0, y: 0, class: "axis-label y-label", "text-anchor": "middle",
    transform: `translate(16 ${M.t + ih / 2}) rotate(-90)` }, metric.label));

  // Points: experiments above the work tree and HEAD, the selected one on top.
  const rank = (p) => (p.row.name === selected ? 3 : p.row.kind === "experiment" ? 2 : 1);
  pts.sort((a, b) => rank(a) - rank(b));
  const placed = [];
  const layer = s("g", { class: "points" });
  for (const p of pts) {
    const cx = px(p.xv);
    const cy = py(p.yv);
    const g = s("g", { class: `point k-${p.row.kind}` + (p.row.name === selected ? " selected" : ""),
      "data-name": p.row.name, "data-kind": p.row.kind, tabindex: "0" });
    g.appendChild(s("title", {}, `${p.row.name}: ${x} = ${fmt(p.xv)}, ${metric.label} = ${fmt(p.yv)}`));
    g.appendChild(shape(p.row.kind, cx, cy));
    const label = placeLabel(p.row.name, cx, cy, placed, M.l, M.l + iw, M.t, M.t + ih);
    g.appendChild(s("text", { x: label.x, y: label.y, class: "label", "text-anchor": label.anchor }, p.row.name));
    g.addEventListener("click", () => onSelect(p.row.name));
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(p.row.name); });
    layer.appendChild(g);
  }
  svg.appendChild(layer);
  box.appendChild(svg);
  return pts.length;
}

/** A label beside its point where it overlaps no label placed before (greedy, a few tries). */
function placeLabel(text, cx, cy, placed, left, right, top, bottom) {
  const w = text.length * 7 + 4;
  const hgt = 13;
  const tries = [[0, 0], [0, -13], [0, 13], [0, -26], [0, 26], [1, 0], [1, -13], [1, 13]];
  let best = null;
  for (const [side, dy] of tries) {
    const onLeft = side === 1 || cx + 9 + w > right;
    const x0 = onLeft ? cx - 9 - w : cx + 9;
    const y0 = Math.min(Math.max(cy + dy - hgt / 2, top), bottom - hgt);
    const box = { x0, x1: x0 + w, y0, y1: y0 + hgt };
    const clash = placed.some((b) => b.x0 < box.x1 && box.x0 < b.x1 && b.y0 < box.y1 && box.y0 < b.y1);
    if (!clash || !best) best = { box, onLeft };
    if (!clash) break;
  }
  placed.push(best.box);
  return { x: best.onLeft ? best.box.x1 : best.box.x0, y: best.box.y0 + hgt - 3, anchor: best.onLeft ? "end" : "start" };
}
