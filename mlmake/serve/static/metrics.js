// Metrics across commits: one uPlot line chart per metric (its name as a heading and in the
// legend), and a table of params per commit beside the charts.

const PARAMS_FILE = /\.(toml|ya?ml|json)$/i;

function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = v;
  }
  return out;
}

/** {file: {key: value}} or {"file": {...nested}} or {key: value}: a Map "file\0key" → value. */
function metricValues(m) {
  const out = new Map();
  for (const [file, v] of Object.entries(m || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(flatten(v, "", {}))) out.set(file + "\u0000" + k, x);
    } else {
      out.set("\u0000" + file, v);
    }
  }
  return out;
}

/** Params as dotted keys; a params file name as the top level is dropped when there is one file. */
function paramValues(p) {
  const files = Object.keys(p || {}).filter((k) => PARAMS_FILE.test(k) && p[k] && typeof p[k] === "object");
  if (files.length && files.length === Object.keys(p).length) {
    const out = {};
    for (const f of files) {
      for (const [k, v] of Object.entries(flatten(p[f], "", {}))) out[files.length > 1 ? `${f}:${k}` : k] = v;
    }
    return out;
  }
  return flatten(p || {}, "", {});
}

/** Normalise GET /api/metrics into commits, oldest first. */
export function normalise(data) {
  let rows = Array.isArray(data) ? data : (data && (data.commits || data.rows || data.history)) || [];
  rows = rows.map((c) => {
    const sha = String(c.commit ?? c.sha ?? c.rev ?? "");
    return {
      sha,
      short: String(c.short ?? c.short_sha ?? sha.slice(0, 7)),
      subject: String(c.subject ?? c.message ?? c.summary ?? ""),
      date: c.date ?? c.time ?? null,
      metrics: metricValues(c.metrics),
      params: paramValues(c.params),
    };
  });
  if (data && data.order === "newest") rows.reverse();
  return rows;
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(5));
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function h(tag, cls, textContent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (textContent !== undefined) e.textContent = textContent;
  return e;
}

let plots = [];
let observer = null;

function fitPlots() {
  for (const p of plots) {
    const box = p.root.parentElement;
    const w = Math.max(Math.floor(box.clientWidth), 160);
    if (Math.abs(w - p.width) > 1) p.setSize({ width: w, height: p.height });
  }
}

/** Draw one chart per numeric metric into `container`. */
export function drawCharts(container, commits) {
  for (const p of plots) p.destroy();
  plots = [];
  container.textContent = "";
  if (!observer && window.ResizeObserver) {
    // The charts' column changes width when the params table beside it fills or the window
    // resizes: follow it, a frame later (never inside the observer's own callback).
    observer = new ResizeObserver(() => requestAnimationFrame(fitPlots));
    observer.observe(container);
  }
  const keys = [];
  const seen = new Set();
  for (const c of commits) {
    for (const [k, v] of c.metrics) if (typeof v === "number" && !seen.has(k)) { seen.add(k); keys.push(k); }
  }
  if (!keys.length) {
    container.appendChild(h("p", "empty", commits.length
      ? "No numeric metrics in these commits yet: commit the metrics files your targets write."
      : "No commits with metrics yet."));
    return;
  }
  const names = keys.map((k) => k.split("\u0000"));
  const dup = new Map();
  for (const [, key] of names) dup.set(key, (dup.get(key) || 0) + 1);
  const xs = commits.map((_, i) => i);
  const labels = commits.map((c) => c.short);
  keys.forEach((k, i) => {
    const [file, key] = names[i];
    const box = h("figure", "chart");
    box.dataset.metric = key;
    const caption = h("figcaption");
    const title = h("h3", null, key);
    title.title = file ? `${key} in ${file}` : key;
    caption.appendChild(title);
    if (file) caption.appendChild(h("span", "file", file));
    box.appendChild(caption);
    const plotDiv = h("div");
    box.appendChild(plotDiv);
    container.appendChild(box);
    const ys = commits.map((c) => { const v = c.metrics.get(k); return typeof v === "number" ? v : null; });
    const width = Math.max(plotDiv.clientWidth || box.clientWidth || 260, 200);
    const label = dup.get(key) > 1 && file ? `${key} (${file})` : key;
    const opts = {
      width, height: 100,
      legend: { show: true, live: true },
      cursor: { points: { size: 8 }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: () => [-0.25, Math.max(commits.length - 1, 0) + 0.25] } },
      axes: [
        {
          font: "11px DejaVu Sans, sans-serif", size: 26, gap: 3, space: 46,
          incrs: [1, 2, 5, 10, 20, 50, 100],
          values: (u, splits) => splits.map((s) => (Number.isInteger(s) && labels[s] !== undefined ? labels[s] : "")),
          grid: { stroke: "#eef0f3" }, ticks: { stroke: "#c9d0d9", size: 4 },
        },
        {
          font: "11px DejaVu Sans, sans-serif", size: 50, gap: 3,
          grid: { stroke: "#eef0f3" }, ticks: { stroke: "#c9d0d9", size: 4 },
        },
      ],
      series: [
        // With no point under the cursor a legend says nothing rather than "—".
        { label: "commit", value: (u, v) => (v === null || v === undefined ? "" : `${labels[v] ?? ""} ${commits[v]?.subject ?? ""}`.slice(0, 36)) },
        { label, stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.07)", spanGaps: true,
          points: { show: true, size: 6, fill: "#1f5fbf" },
          value: (u, v, si, i) => (i === null || i === undefined || v === null || v === undefined ? "" : `${fmt(v)} at ${labels[i]}`) },
      ],
    };
    plots.push(new window.uPlot(opts, [xs, ys], plotDiv));
  });
}

/**
 * Fill the params table: one row per param, one column per commit (oldest to newest, as on the
 * charts' x axis), a value that changed from the commit before marked in bold with "Δ".
 */
export function drawParams(table, commits) {
  const box = table.parentElement;
  // The table opens at its first column (the oldest commit, beside the param names); a
  // redraw while runs progress keeps wherever the reader scrolled to.
  const keepLeft = box && table.dataset.drawn ? box.scrollLeft : 0;
  table.dataset.drawn = "1";
  const thead = table.tHead;
  const tbody = table.tBodies[0];
  thead.textContent = "";
  tbody.textContent = "";
  const keys = [];
  for (const c of commits) for (const k of Object.keys(c.params)) if (!keys.includes(k)) keys.push(k);
  const hr = thead.insertRow();
  const corner = h("th", null, "param");
  corner.scope = "col";
  hr.appendChild(corner);
  for (const c of commits) {
    const th = h("th", "mono num", c.short);
    th.scope = "col";
    th.title = `${c.short} ${c.subject}` + (c.date ? `\n${c.date}` : "");
    th.dataset.commit = c.sha;
    hr.appendChild(th);
  }
  if (!keys.length) {
    const td = tbody.insertRow().insertCell();
    td.colSpan = 1 + commits.length;
    td.className = "empty";
    td.textContent = commits.length ? "No params in these commits." : "No commits yet.";
    return;
  }
  for (const k of keys) {
    const tr = tbody.insertRow();
    tr.dataset.param = k;
    const th = h("th", "mono", k);
    th.scope = "row";
    tr.appendChild(th);
    commits.forEach((c, i) => {
      const td = tr.insertCell();
      td.className = "num";
      td.textContent = fmt(c.params[k]);
      const prev = commits[i - 1];
      if (prev && JSON.stringify(prev.params[k]) !== JSON.stringify(c.params[k])) {
        td.classList.add("changed");
        td.title = `${k} changed from ${fmt(prev.params[k])} in ${c.short}`;
      }
    });
  }
  if (box) box.scrollLeft = keepLeft;
}
