// The run history and one run's targets as tables; a state is told by a symbol and its word
// as well as by colour.

export const RUN_STATUS = {
  queued: { sym: "◌", cls: "st-queued" },
  running: { sym: "▶", cls: "st-running" },
  succeeded: { sym: "✓", cls: "st-uptodate" },
  failed: { sym: "✗", cls: "st-failed" },
  cancelled: { sym: "⊘", cls: "st-failed" },
  interrupted: { sym: "⊘", cls: "st-failed" },
};
export const OUTCOME = {
  ran: { sym: "✓", words: "ran", cls: "o-ran" },
  succeeded: { sym: "✓", words: "ran", cls: "o-ran" },
  reused: { sym: "↺", words: "reused", cls: "o-reused" },
  uptodate: { sym: "=", words: "up to date", cls: "o-uptodate" },
  "up-to-date": { sym: "=", words: "up to date", cls: "o-uptodate" },
  failed: { sym: "✗", words: "failed", cls: "st-failed" },
  running: { sym: "▶", words: "running", cls: "st-running" },
  started: { sym: "▶", words: "running", cls: "st-running" },
  queued: { sym: "◌", words: "queued", cls: "st-queued" },
  pending: { sym: "◌", words: "pending", cls: "st-queued" },
  blocked: { sym: "⊘", words: "blocked", cls: "st-queued" },
  "not run": { sym: "–", words: "not run", cls: "st-queued" },
  skipped: { sym: "–", words: "skipped", cls: "o-reused" },
  cancelled: { sym: "⊘", words: "cancelled", cls: "st-failed" },
};

// Run ids may start with a timestamp shared by many runs: show their distinctive end.
function short(id) {
  if (id.length <= 10) return id;
  const tail = id.split(/[-_.:]/).pop();
  return "…" + (tail.length >= 4 ? tail.slice(-8) : id.slice(-8));
}
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const t = Math.round(s);
  if (t < 3600) return `${Math.floor(t / 60)}m ${String(t % 60).padStart(2, "0")}s`;
  return `${Math.floor(t / 3600)}h ${String(Math.floor((t % 3600) / 60)).padStart(2, "0")}m`;
}
export function when(unix) {
  if (!unix) return "–";
  const d = new Date(unix * 1000);
  const now = new Date();
  const hms = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  if (d.toDateString() === now.toDateString()) return hms;
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hms.slice(0, 5);
}
function runSeconds(r) {
  if (r.status === "running" && r.started) return Date.now() / 1000 - r.started;
  if (r.duration !== undefined && r.duration !== null) return r.duration;
  if (r.started && r.finished) return r.finished - r.started;
  return null;
}
function cell(tr, content, cls, title) {
  const td = tr.insertCell();
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  if (cls) td.className = cls;
  if (title) td.title = title;
  return td;
}
export function badge(sym, words, cls) {
  const b = document.createElement("span");
  b.className = `badge ${cls}`;
  const s = document.createElement("span");
  s.className = "sym";
  s.textContent = sym;
  b.append(s, ` ${words}`);
  return b;
}
/** A run id: its distinctive end shown, the full id on hover and copied by the button. */
function runId(id) {
  const wrap = document.createElement("span");
  wrap.className = "runid";
  const text = document.createElement("span");
  text.className = "id-short";
  text.textContent = short(id);
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.appendChild(copyIcon());
  copy.title = `copy the run id ${id}`;
  copy.setAttribute("aria-label", `copy run id ${id}`);
  copy.dataset.copy = id;
  copy.addEventListener("click", (ev) => {
    ev.stopPropagation();
    copyText(id).then(() => {
      copy.textContent = "✓";
      copy.dataset.copied = "";
      setTimeout(() => { copy.textContent = ""; copy.appendChild(copyIcon()); delete copy.dataset.copied; }, 1200);
    });
  });
  copy.addEventListener("keydown", (ev) => ev.stopPropagation());
  wrap.append(text, copy);
  return wrap;
}
/** Two overlapping sheets: drawn, so no font needs the glyph. */
function copyIcon() {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 12 12");
  svg.setAttribute("width", "11");
  svg.setAttribute("height", "11");
  svg.setAttribute("aria-hidden", "true");
  for (const [x, y] of [[1, 1], [4, 4]]) {
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("x", x); r.setAttribute("y", y);
    r.setAttribute("width", "7"); r.setAttribute("height", "7"); r.setAttribute("rx", "1");
    r.setAttribute("fill", x === 4 ? "#fff" : "none");
    r.setAttribute("stroke", "currentColor"); r.setAttribute("stroke-width", "1.2");
    svg.appendChild(r);
  }
  return svg;
}
function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  try { document.execCommand("copy"); } finally { area.remove(); }
  return Promise.resolve();
}
/** A run's param overrides as `key=value, …` (null when it has none). */
export function overrides(r) {
  return r.params && Object.keys(r.params).length
    ? Object.entries(r.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ") : null;
}
/** A commit, short, with "+" when the run was made on a work tree with uncommitted changes. */
function commitText(r) {
  return r.commit ? r.commit.slice(0, 7) + (r.dirty ? "+" : "") : "–";
}
/**
 * The data sources a run used, as `path@hash` with 8 characters of the content hash, when its
 * record carries them (null otherwise).
 */
export function dataVersions(r) {
  const data = r && r.data;
  if (!data || typeof data !== "object") return null;
  const out = Object.entries(data).filter(([, h]) => h)
    .map(([path, h]) => ({ path, hash: String(h), text: `${path}@${String(h).replace(/^[a-z0-9]+:/i, "").slice(0, 8)}` }));
  return out.length ? out : null;
}
/** One element per data source of `versions`, each `path@shorthash` with the full hash on hover. */
function dataElement(versions, cls) {
  const wrap = document.createElement("span");
  wrap.className = cls;
  versions.forEach((v, i) => {
    if (i) wrap.append(", ");
    const s = document.createElement("span");
    s.className = "dv";
    s.dataset.path = v.path;
    s.textContent = v.text;
    s.title = `${v.path}: content hash ${v.hash}`;
    wrap.appendChild(s);
  });
  return wrap;
}
function commitTitle(r) {
  if (!r.commit) return undefined;
  return r.commit + (r.dirty ? "\nbuilt from a work tree with uncommitted changes to tracked files" : "");
}
function count(n, failed) {
  if (n === undefined || n === null) return ["–", "zero"];
  return [String(n), n === 0 ? "zero" : failed ? "nonzero-failed" : ""];
}


/** Durations of running runs tick every second without a request. */
export function tickDurations(root) {
  const now = Date.now() / 1000;
  for (const td of root.querySelectorAll("td[data-running-since]")) {
    td.textContent = duration(now - Number(td.dataset.runningSince));
  }
}

/** What the log panel says for a target the service has no log of. */
export function noLog(target, outcome) {
  const why = outcome === "reused" ? "it was reused from the cache"
    : outcome === "uptodate" ? "it was up to date"
      : `its outcome is ${(OUTCOME[outcome] || { words: outcome }).words}`;
  return `${target} has no log in this run: ${why}.`;
}

/**
 * Fill the history table, newest first; rows not in `seen` (ids shown before) are highlighted.
 * Returns the ids now shown, for the next call.
 */
export function drawRuns(tbody, list, selected, seen, onSelect) {
  const first = seen === null;
  const now = new Set();
  tbody.textContent = "";
  for (const r of list) {
    const tr = tbody.insertRow();
    tr.className = "pick" + (r.id === selected ? " selected" : "") + (!first && !seen.has(r.id) ? " new-row" : "");
    tr.dataset.runId = r.id;
    tr.dataset.status = r.status || "";
    tr.tabIndex = 0;
    const st = RUN_STATUS[r.status] || { sym: "?", cls: "st-queued" };
    const idCell = cell(tr, runId(String(r.id)), "mono", String(r.id));
    idCell.dataset.id = String(r.id);
    cell(tr, badge(st.sym, r.status || "unknown", st.cls));
    const trig = document.createElement("span");
    trig.className = "clip trig";
    trig.textContent = r.trigger || "–";
    const over = overrides(r);
    const trigTd = cell(tr, trig, "trigger", (r.trigger || "") + (r.endpoint ? ` (endpoint ${r.endpoint})` : "")
      + (over ? `\nparams ${over}` : ""));
    if (over) {
      const o = document.createElement("span");
      o.className = "overrides clip";
      o.textContent = over;
      trigTd.append(document.createElement("br"), o);
    }
    const commitTd = cell(tr, commitText(r), "mono commit", commitTitle(r));
    if (r.dirty) commitTd.dataset.dirty = "";
    const data = dataVersions(r);
    if (data) {
      commitTd.title = (commitTd.title ? commitTd.title + "\n" : "") + "data " + data.map((v) => `${v.path}@${v.hash}`).join(", ");
      commitTd.append(document.createElement("br"), dataElement(data, "data-versions clip"));
    }
    cell(tr, when(r.started), null, r.started ? new Date(r.started * 1000).toLocaleString() : undefined);
    const took = cell(tr, duration(runSeconds(r)), "num");
    if (r.status === "running" && r.started) took.dataset.runningSince = r.started;
    const sum = r.summary || {};
    for (const [k, failed] of [["ran", false], ["reused", false], ["failed", true]]) {
      const [txt, cls] = count(sum[k], failed);
      cell(tr, txt, `num ${cls}`);
    }
    tr.addEventListener("click", () => onSelect(r.id));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(r.id); });
    now.add(r.id);
  }
  return now;
}

/** Show run `r`: a line about it and a table of its targets with outcome and duration. */
export function drawRun(meta, table, empty, r, selectedTarget, onSelect) {
  meta.textContent = "";
  const tbody = table.tBodies[0];
  tbody.textContent = "";
  if (!r) { empty.hidden = false; return; }
  const st = RUN_STATUS[r.status] || { sym: "?" };
  const bits = [
    ["run ", String(r.id)], [" · ", `${st.sym} ${r.status}`], [" · trigger ", r.trigger || "–"],
  ];
  if (r.endpoint) bits.push([" · endpoint ", r.endpoint]);
  if (r.commit) bits.push([" · commit ", commitText(r)]);
  const data = dataVersions(r);
  if (data) bits.push([" · data ", dataElement(data, "data-versions")]);
  const params = overrides(r);
  if (params) bits.push([" · params ", params]);
  bits.push([" · took ", duration(runSeconds(r))]);
  for (const [label, value] of bits) {
    meta.append(label);
    const b = document.createElement("b");
    if (value instanceof Node) b.appendChild(value); else b.textContent = value;
    meta.appendChild(b);
  }
  if (r.message || r.error) {
    const e = document.createElement("span");
    e.className = "error";
    e.textContent = ` — ${r.message || r.error}`;
    meta.appendChild(e);
  }
  const targets = r.targets || [];
  table.dataset.run = r.id;
  empty.hidden = targets.length > 0;
  empty.textContent = r.status === "queued" ? "Queued: no target has started yet." : "This run recorded no targets.";
  for (const t of targets) {
    const name = t.target ?? t.name;
    const tr = tbody.insertRow();
    tr.className = "pick" + (name === selectedTarget ? " selected" : "");
    tr.dataset.target = name;
    tr.dataset.outcome = t.outcome || "";
    if (t.log === false) tr.dataset.nolog = "";
    tr.tabIndex = 0;
    cell(tr, name, "mono");
    const o = OUTCOME[t.outcome] || { sym: "?", words: t.outcome || "unknown", cls: "o-reused" };
    cell(tr, badge(o.sym, o.words, o.cls), null, t.message || undefined);
    cell(tr, duration(t.duration), "num");
    tr.addEventListener("click", () => onSelect(name));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(name); });
  }
}
