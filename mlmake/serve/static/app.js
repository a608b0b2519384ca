// The mlmake page: token handling, the API client, live updates (server-sent events read
// through fetch so the token travels in a header, with polling as the fallback), run history,
// which run and target are selected, a target's log, and which view (tab) is shown. Drawing lives
// beside it: the DAG in dag.js, the run tables in runs.js, the charts and params in metrics.js,
// the experiments table and chart in experiments.js.

import * as dag from "./dag.js";
import * as experiments from "./experiments.js";
import * as metrics from "./metrics.js";
import * as runs from "./runs.js";

const TOKEN_KEY = "mlmake.token";
const POLL_LIVE_MS = 15000;   // with an event stream, a slow poll only as a safety net
const POLL_MS = 2000;         // without one, poll often enough that a new run shows within seconds
const METRICS_MS = 60000;
const EXPS_MS = 60000;        // besides a refresh whenever a run finishes
const VIEWS = ["pipeline", "experiments"];
const DETAIL_CACHE = 5;       // newest runs whose targets decide which nodes show "failed"

const $ = (id) => document.getElementById(id);

class AuthError extends Error {}
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const S = {
  token: null,
  session: 0,            // bumped on logout: answers to an older session are dropped
  graph: null, graphKey: "",
  live: { running: new Set(), failed: new Set() },
  selectedNode: null,
  runs: [], runsKey: "", seenRuns: null,
  selectedRun: null, runDetail: null, selectedTarget: null,
  details: new Map(),    // run id → detail, for finished runs only (they no longer change)
  metrics: [], metricsKey: "", firstRuns: true,
  view: "pipeline",
  exps: null, expsKey: "", expSort: null, expAll: false, expPick: { x: null, y: null },
  expSelected: null, expChartStale: true, finishedKey: null,
  streaming: false, streamCtrl: null, streamRetry: 1000,
  lastPoll: 0, lastMetrics: 0, lastExps: 0, timers: [], pending: new Set(), pendingTimer: null,
};

// ---------------------------------------------------------------------------------- token
function takeTokenFromFragment() {
  // Parsed by hand, not with URLSearchParams, which would turn a "+" of the token into a space.
  const frag = location.hash.replace(/^#/, "");
  const m = /(^|&)token=([^&]*)/.exec(frag);
  if (!m) return;
  let token = m[2];
  try { token = decodeURIComponent(token); } catch { /* not percent-encoded: keep it as is */ }
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  const rest = (frag.slice(0, m.index) + frag.slice(m.index + m[0].length)).replace(/^&|&$/g, "");
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
}

function showLogin(message) {
  stop();
  S.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearData();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("legend").hidden = true;
  $("tabs").hidden = true;
  $("live").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").value = "";
  $("token-input").focus();
}

function clearData() {
  $("dag").textContent = "";
  $("dag-detail").textContent = "";
  $("runs").tBodies[0].textContent = "";
  $("run-targets").tBodies[0].textContent = "";
  $("run-meta").textContent = "";
  $("charts").textContent = "";
  $("params").tHead.textContent = "";
  $("params").tBodies[0].textContent = "";
  setLogPlaceholder("Select a target of a run to see what it printed.");
  $("exps").tHead.textContent = "";
  $("exps").tBodies[0].textContent = "";
  $("exp-chart").textContent = "";
  $("exp-detail").textContent = "";
  $("exps-cols").textContent = "";
  $("exp-count").textContent = "";
  $("project").textContent = "";
  Object.assign(S, {
    graph: null, graphKey: "", runs: [], runsKey: "", seenRuns: null, selectedRun: null,
    runDetail: null, selectedTarget: null, selectedNode: null, metrics: [],
    live: { running: new Set(), failed: new Set() },
    exps: null, expsKey: "", expSelected: null, expChartStale: true, finishedKey: null,
  });
  S.details.clear();
}

// ------------------------------------------------------------------------------------ API
async function api(path, { text = false } = {}) {
  const session = S.session;
  let r;
  try {
    r = await fetch(path, {
      headers: { Authorization: `Bearer ${S.token}`, Accept: text ? "text/plain" : "application/json" },
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "cannot reach the service");
  }
  if (session !== S.session) throw new AuthError("stale session");
  if (r.status === 401 || r.status === 403) throw new AuthError("refused");
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      const body = await r.json();
      message = body.error ? body.error + (body.detail ? `: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}` : "") : message;
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(r.status, message);
  }
  return text ? r.text() : r.json();
}

function guarded(fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      if (e instanceof AuthError) {
        if (e.message === "refused") showLogin("The service refused this token. Paste the current one.");
        return undefined;
      }
      if (e instanceof ApiError) {
        setLiveText(`service unreachable or failing (${e.message}); retrying`, true);
        return undefined;
      }
      throw e;
    }
  };
}

// ----------------------------------------------------------------------------------- live
function setLiveText(text, off) {
  const el = $("live");
  el.textContent = text;
  el.classList.toggle("off", !!off);
}
function showLiveMode() {
  setLiveText(S.streaming ? "● live" : `↻ polling every ${POLL_MS / 1000} s`, !S.streaming);
}

async function stream() {
  const session = S.session;
  const ctrl = new AbortController();
  S.streamCtrl = ctrl;
  let retry = S.streamRetry;
  try {
    const r = await fetch("api/events", {
      headers: { Authorization: `Bearer ${S.token}`, Accept: "text/event-stream" },
      cache: "no-store", signal: ctrl.signal,
    });
    if (r.status === 401 || r.status === 403) { showLogin("The service refused this token. Paste the current one."); return; }
    if (!r.ok || !r.body) { retry = 60000; throw new Error(`no event stream (${r.status})`); }
    S.streaming = true;
    S.streamRetry = 1000;
    showLiveMode();
    refresh("runs", "graph", "run");   // anything that happened while not listening
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let m;
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        const chunk = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        onEventChunk(chunk);
      }
    }
  } catch (e) {
    if (ctrl.signal.aborted || session !== S.session) return;
  }
  if (session !== S.session) return;
  S.streaming = false;
  showLiveMode();
  S.streamRetry = Math.min(retry * 2, 30000);
  S.timers.push(setTimeout(() => { if (session === S.session) stream(); }, retry));
}

function onEventChunk(chunk) {
  let type = "message";
  const data = [];
  for (const line of chunk.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length && type === "message") return;
  let payload = data.join("\n");
  try { payload = JSON.parse(payload); } catch { /* keep the text */ }
  onEvent(type, payload && typeof payload === "object" ? payload : {});
}

function onEvent(type, ev) {
  if (type === "target") {
    const name = ev.target ?? ev.name;
    const what = ev.outcome ?? ev.status ?? ev.event ?? ev.kind;
    if (name) {
      if (what === "running" || what === "started") S.live.running.add(name);
      else if (what) {
        S.live.running.delete(name);
        if (what === "failed") S.live.failed.add(name); else S.live.failed.delete(name);
      }
      redrawGraph();
    }
    refresh("graph", "run");
  } else if (type === "run") {
    const id = ev.id ?? ev.run;
    if (id) upsertRun(ev);
    refresh("runs", "run", "graph");
    if (ev.status === "succeeded" || ev.status === "failed") refresh("metrics", "experiments");
  } else {
    refresh("runs", "graph", "run");
  }
}

// Show a run event at once; the history request it triggers brings the full entry.
function upsertRun(ev) {
  const id = ev.id ?? ev.run;
  const { summary, ...rest } = ev;
  const known = S.runs.find((r) => r.id === id);
  const entry = { ...(known || {}), ...rest, id };
  // An event may carry the build's raw summary rather than the history's counts.
  if (summary && typeof summary.ran === "number") entry.summary = summary;
  if (known) S.runs[S.runs.indexOf(known)] = entry;
  else if (ev.status) S.runs.unshift(entry);
  renderRuns();
}

// Coalesce bursts of events into one request per resource.
function refresh(...what) {
  for (const w of what) S.pending.add(w);
  if (S.pendingTimer) return;
  S.pendingTimer = setTimeout(async () => {
    S.pendingTimer = null;
    const todo = new Set(S.pending);
    S.pending.clear();
    const jobs = [];
    if (todo.has("runs")) jobs.push(loadRuns());
    if (todo.has("graph")) jobs.push(loadGraph());
    if (todo.has("run") && S.selectedRun) jobs.push(loadRun(S.selectedRun, false));
    if (todo.has("metrics")) jobs.push(loadMetrics());
    if (todo.has("experiments")) jobs.push(loadExperiments());
    await Promise.all(jobs);
  }, 200);
}

function tick() {
  const now = Date.now();
  if (now - S.lastPoll >= (S.streaming ? POLL_LIVE_MS : POLL_MS)) {
    S.lastPoll = now;
    refresh("runs", "graph", "run");
  }
  if (now - S.lastMetrics >= METRICS_MS) { S.lastMetrics = now; refresh("metrics"); }
  if (now - S.lastExps >= EXPS_MS) { S.lastExps = now; refresh("experiments"); }
  runs.tickDurations(document);
}

// ---------------------------------------------------------------------------------- graph
const loadGraph = guarded(async () => {
  const g = await api("api/graph");
  const key = JSON.stringify(g);
  if (key === S.graphKey) return;
  S.graphKey = key;
  S.graph = dag.normalise(g);
  // The plan is fresh: drop live marks it now covers.
  S.live.running = new Set(S.graph.targets.filter((t) => t.running).map((t) => t.name));
  if (S.graph.project) {
    $("project").textContent = S.graph.project;
    document.title = `mlmake · ${S.graph.project}`;
  }
  redrawGraph();
});

function redrawGraph() {
  if (!S.graph) return;
  $("dag-h").textContent = "Pipeline";
  if (S.graph.error) {
    const e = document.createElement("span");
    e.className = "error";
    e.textContent = ` — states unknown: ${S.graph.error}`;
    $("dag-h").appendChild(e);
  }
  dag.draw($("dag"), S.graph, S.live, S.selectedNode, selectNode);
  describeNode();
}

function selectNode(base) {
  S.selectedNode = S.selectedNode === base ? null : base;
  redrawGraph();
  const node = $("dag").querySelector(`g.node[data-target="${CSS.escape(base)}"]`);
  if (node) node.focus();
}

function describeNode() {
  const p = $("dag-detail");
  p.textContent = "";
  const parts = S.selectedNode && S.graph ? dag.describe(S.graph, S.live, S.selectedNode) : null;
  if (!parts) {
    p.textContent = "Hover a target for its state and why it is stale; click it for details. Dashed arrows: order only (after).";
    return;
  }
  for (const part of parts) {
    if (part.b) { const b = document.createElement("b"); b.textContent = part.b; p.appendChild(b); }
    else p.append(part.t);
  }
}

// ----------------------------------------------------------------------------------- runs
const loadRuns = guarded(async () => {
  const data = await api("api/runs");
  const runs = Array.isArray(data) ? data : data.runs || [];
  runs.sort((a, b) => (b.started || 0) - (a.started || 0));
  const key = JSON.stringify(runs);
  if (key !== S.runsKey) {
    S.runsKey = key;
    S.runs = runs;
    renderRuns();
    // A run that finished may have recorded an experiment (`mlmake exp run` from a terminal
    // sends the service no event: the history shows it).
    const finished = runs.filter((r) => r.status !== "queued" && r.status !== "running")
      .map((r) => `${r.id}:${r.status}`).join();
    if (S.finishedKey !== null && finished !== S.finishedKey) refresh("experiments");
    S.finishedKey = finished;
    if (S.graph && S.graph.targets.some((t) => t.lastFailed === null)) await loadFailures();
  }
  if (!S.selectedRun && runs.length && S.firstRuns !== false) selectRun(runs[0].id);
  S.firstRuns = false;
});

function renderRuns() {
  S.seenRuns = runs.drawRuns($("runs").tBodies[0], S.runs, S.selectedRun, S.seenRuns, selectRun);
  $("runs-empty").hidden = S.runs.length > 0;
}

function selectRun(id) {
  if (S.selectedRun !== id) {
    // Never leave another run's targets on show while this one loads.
    S.selectedTarget = null;
    S.runDetail = null;
    $("run-targets").tBodies[0].textContent = "";
    delete $("run-targets").dataset.run;
    $("run-meta").textContent = `loading run ${id}…`;
  }
  S.selectedRun = id;
  for (const tr of $("runs").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.runId === id);
  loadRun(id, true);
}

const loadRun = guarded(async (id, fresh) => {
  const cached = S.details.get(id);
  const r = cached || (await api(`api/runs/${encodeURIComponent(id)}`));
  if (r.status === "succeeded" || r.status === "failed") rememberDetail(id, r);
  if (S.selectedRun !== id) return;
  const before = JSON.stringify(S.runDetail);
  S.runDetail = r;
  if (fresh || before !== JSON.stringify(r)) renderRun();
  if (S.selectedTarget && (fresh || r.status === "running" || before !== JSON.stringify(r))) loadLog();
});

function rememberDetail(id, r) {
  S.details.set(id, r);
  if (S.details.size > 50) S.details.delete(S.details.keys().next().value);
}

function renderRun() {
  runs.drawRun($("run-meta"), $("run-targets"), $("run-empty"), S.runDetail, S.selectedTarget,
    selectTarget);
}

function selectTarget(name) {
  S.selectedTarget = name;
  for (const tr of $("run-targets").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.target === name);
  loadLog();
}

async function loadFailures() {
  // A target shows "failed" when the newest of the last few runs that built it failed it.
  const recent = S.runs.slice(0, DETAIL_CACHE);
  const failed = new Set();
  const decided = new Set();
  for (const r of recent) {
    let d = S.details.get(r.id);
    if (!d && (r.status === "succeeded" || r.status === "failed")) {
      if (!(r.summary && r.summary.failed) && r.status === "succeeded") continue;
      try { d = await api(`api/runs/${encodeURIComponent(r.id)}`); } catch (e) { if (e instanceof AuthError) throw e; continue; }
      rememberDetail(r.id, d);
    }
    for (const t of (d && d.targets) || []) {
      const name = t.target ?? t.name;
      if (decided.has(name)) continue;
      decided.add(name);
      if (t.outcome === "failed") failed.add(name);
    }
  }
  if ([...failed].join() !== [...S.live.failed].join()) {
    S.live.failed = failed;
    redrawGraph();
  }
}

// ------------------------------------------------------------------------------------ log
function setLogPlaceholder(text) {
  const pre = $("log");
  pre.textContent = "";
  const s = document.createElement("span");
  s.className = "empty";
  s.textContent = text;
  pre.appendChild(s);
}

async function loadLog() {
  const run = S.selectedRun;
  const target = S.selectedTarget;
  if (!run || !target) return;
  $("log-h").textContent = `Log — ${target}`;
  $("log").dataset.target = target;
  $("log").dataset.run = run;
  const t = ((S.runDetail && S.runDetail.targets) || []).find((x) => (x.target ?? x.name) === target);
  if (t && t.log === false) {
    // The service says there is no log: asking would only answer 404.
    setLogPlaceholder(runs.noLog(target, t.outcome));
    return;
  }
  try {
    const text = await api(`api/runs/${encodeURIComponent(run)}/log?target=${encodeURIComponent(target)}`, { text: true });
    if (S.selectedRun !== run || S.selectedTarget !== target) return;
    const pre = $("log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (text) { pre.textContent = text; } else setLogPlaceholder(`${target} printed nothing.`);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    if (e instanceof AuthError) { if (e.message === "refused") showLogin("The service refused this token. Paste the current one."); return; }
    if (S.selectedRun !== run || S.selectedTarget !== target) return;
    setLogPlaceholder(e instanceof ApiError && e.status === 404
      ? `No log recorded for ${target} in this run (a reused or up-to-date target runs no command).`
      : `Could not load the log: ${e.message}`);
  }
}

// -------------------------------------------------------------------------------- metrics
const loadMetrics = guarded(async () => {
  const data = await api("api/metrics?limit=30");
  const commits = metrics.normalise(data);
  const key = JSON.stringify(data);
  if (key === S.metricsKey) return;
  S.metricsKey = key;
  S.metrics = commits;
  metrics.drawParams($("params"), commits);   // first: the charts take the width it leaves
  metrics.drawCharts($("charts"), commits);
});

// ---------------------------------------------------------------------------- experiments
const loadExperiments = guarded(async () => {
  const data = await api("api/experiments");
  const key = JSON.stringify(data);
  if (key === S.expsKey) return;
  S.expsKey = key;
  S.exps = experiments.normalise(data);
  if (S.expSelected && !S.exps.rows.some((r) => r.name === S.expSelected)) S.expSelected = null;
  renderExps();
});

function renderExps() {
  const exps = S.exps;
  if (!exps) return;
  const n = exps.rows.filter((r) => r.kind === "experiment" || r.kind === "queued").length;
  $("exp-count").textContent = `(${n})`;
  $("exp-all").checked = S.expAll;
  if (S.expSort && !experiments.columns(exps, S.expAll).some((c) => c.id === S.expSort.col)) S.expSort = null;
  const cols = experiments.drawTable($("exps"), exps, { all: S.expAll, sort: S.expSort, selected: S.expSelected },
    { onSort: sortExps, onSelect: selectExp });
  $("exps-empty").hidden = n > 0 || !!exps.error;
  const shown = cols.filter((c) => c.group !== "meta").length;
  const total = exps.params.length + exps.metrics.length;
  $("exps-cols").textContent = exps.error || (S.expAll ? `all ${total} params and metrics`
    : `${shown} of ${total} params and metrics: those that differ`);
  $("exps-cols").classList.toggle("error", !!exps.error);
  experiments.describe($("exp-detail"), exps, S.expSelected);
  S.expPick = experiments.drawPickers($("exp-x"), $("exp-y"), exps, S.expPick);
  S.expChartStale = true;
  if (S.view === "experiments") drawExpChart();
}

function drawExpChart() {
  if (!S.exps || S.view !== "experiments") return;
  S.expChartStale = false;
  experiments.drawChart($("exp-chart"), S.exps, S.expPick.x, S.expPick.y, S.expSelected, selectExp);
}

function sortExps(col) {
  const desc = S.expSort && S.expSort.col === col ? !S.expSort.desc : false;
  S.expSort = { col, desc };
  renderExps();
  const th = $("exps").querySelector(`thead th[data-col="${CSS.escape(col)}"] button`);
  if (th) th.focus();
}

function selectExp(name) {
  S.expSelected = S.expSelected === name ? null : name;
  renderExps();
}

// ---------------------------------------------------------------------------------- views
function viewFromFragment() {
  const m = /(^|&)view=([a-z]+)/.exec(location.hash.replace(/^#/, ""));
  return m && VIEWS.includes(m[2]) ? m[2] : null;
}

function showView(name, { focus = false } = {}) {
  S.view = VIEWS.includes(name) ? name : "pipeline";
  for (const v of VIEWS) {
    const tab = $(`tab-${v}`);
    const on = v === S.view;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${v}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  $("legend").hidden = S.view !== "pipeline" || $("app").hidden;
  const hash = S.view === "pipeline" ? "" : `#view=${S.view}`;
  if (location.hash !== hash) history.replaceState(null, "", location.pathname + location.search + hash);
  if (S.view === "experiments") {
    if (S.expChartStale) drawExpChart();
    if (S.exps) refresh("experiments");
  } else if (S.view === "pipeline") {
    redrawGraph();
  }
}

// ---------------------------------------------------------------------------------- start
function stop() {
  S.session += 1;
  if (S.streamCtrl) S.streamCtrl.abort();
  S.streamCtrl = null;
  S.streaming = false;
  for (const t of S.timers) { clearTimeout(t); clearInterval(t); }
  S.timers = [];
  if (S.pendingTimer) clearTimeout(S.pendingTimer);
  S.pendingTimer = null;
  S.pending.clear();
}

async function start() {
  stop();
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("tabs").hidden = false;
  S.firstRuns = true;
  S.metricsKey = "";
  S.expsKey = "";
  showView(viewFromFragment() || S.view);
  describeNode();
  const session = S.session;
  // The graph answers first: a refused token shows the prompt before anything else is asked.
  await loadGraph();
  if (session !== S.session) return;
  S.lastPoll = S.lastMetrics = S.lastExps = Date.now();
  await Promise.all([loadRuns(), loadMetrics(), loadExperiments()]);
  if (session !== S.session) return;
  showLiveMode();
  stream();
  S.timers.push(setInterval(tick, 1000));
}

function init() {
  takeTokenFromFragment();
  S.token = sessionStorage.getItem(TOKEN_KEY);
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    S.token = t;
    $("login-error").textContent = "";
    start();
  });
  $("logout").addEventListener("click", () => showLogin("Token forgotten. Paste one to continue."));
  for (const v of VIEWS) {
    const tab = $(`tab-${v}`);
    tab.addEventListener("click", () => showView(v));
    tab.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
      if (!step) return;
      ev.preventDefault();
      showView(VIEWS[(VIEWS.indexOf(S.view) + step + VIEWS.length) % VIEWS.length], { focus: true });
    });
  }
  $("exp-all").addEventListener("change", () => { S.expAll = $("exp-all").checked; renderExps(); });
  $("exp-x").addEventListener("change", () => { S.expPick = { ...S.expPick, x: $("exp-x").value }; drawExpChart(); });
  $("exp-y").addEventListener("change", () => { S.expPick = { ...S.expPick, y: $("exp-y").value }; drawExpChart(); });
  window.addEventListener("hashchange", () => {
    const view = viewFromFragment();
    if (view && view !== S.view && !$("app").hidden) showView(view);
    if (!/token=/.test(location.hash)) return;
    takeTokenFromFragment();
    S.token = sessionStorage.getItem(TOKEN_KEY);
    if (S.token) start();
  });
  // Redraw the DAG when its panel changes size (the window, or the page leaving the prompt).
  let resizeTimer = null;
  let size = "";
  new ResizeObserver(([entry]) => {
    const now = `${Math.round(entry.contentRect.width)}x${Math.round(entry.contentRect.height)}`;
    if (now === size) return;
    size = now;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(redrawGraph, 100);
  }).observe($("dag"));
  let chartTimer = null;
  let chartSize = "";
  new ResizeObserver(([entry]) => {
    const now = `${Math.round(entry.contentRect.width)}x${Math.round(entry.contentRect.height)}`;
    if (now === chartSize) return;
    chartSize = now;
    clearTimeout(chartTimer);
    chartTimer = setTimeout(drawExpChart, 100);
  }).observe($("exp-chart"));
  if (S.token) start(); else showLogin();
}

init();
