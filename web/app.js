// bitplan dashboard: hand-written, no dependencies, served by `bitplan serve`; works offline.
// Views (hash routes): #/ supernets, #/supernets/ID, #/plans/ID, #/fleet-plans/ID.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");
const tooltip = $("#tooltip");
const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("bitplan.token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("bitplan.token", tokenInput.value));

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
  get fields() { return (this.body && this.body.error && this.body.error.fields) || []; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (tokenInput.value) headers["Authorization"] = `Bearer ${tokenInput.value}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

// ---------------------------------------------------------------------------------------------
// Formatting and DOM helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = {
  bytes(b) {
    if (b === null || b === undefined) return "";
    const u = ["B", "KiB", "MiB", "GiB"]; let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 2 : 0)} ${u[i]}`;
  },
  count(n) {
    if (n === null || n === undefined) return "";
    for (const [v, s] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (n >= v) return (n / v).toFixed(2) + s;
    return String(n);
  },
  sci: (v) => (v === null || v === undefined ? "" : Number(v).toExponential(3)),
  fixed: (d) => (v) => (v === null || v === undefined ? "" : Number(v).toFixed(d)),
  pct: (v) => (v === null || v === undefined ? "" : (100 * v).toFixed(2) + "%"),
};
const bitsString = (bits) => Object.values(bits || {}).map((b) => (b < 10 ? String(b) : `(${b})`)).join("");
/// Replaces an element's children, skipping absent ones (null, undefined, false).
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
const pill = (s) => h("span", { class: `pill ${s}` }, s);

function crumbs(...parts) {
  const nav = $("#crumbs");
  put(nav, );
  parts.forEach((p, i) => {
    if (i) nav.append(h("span", { class: "sep" }, "›"));
    nav.append(p.href ? h("a", { href: p.href }, p.label) : h("span", {}, p.label));
  });
}

function showError(e) {
  put(view, h("div", { class: "card bad" }, e.message || String(e)));
}

// ---------------------------------------------------------------------------------------------
// Routing

let cleanup = [];
async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  tooltip.hidden = true;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  try {
    if (parts[0] === "supernets" && parts[1]) await supernetView(parts[1]);
    else if (parts[0] === "plans" && parts[1]) await planView(parts[1]);
    else if (parts[0] === "fleet-plans" && parts[1]) await fleetPlanView(parts[1]);
    else await homeView();
  } catch (e) {
    showError(e);
  }
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------------------------
// Supernets

async function homeView() {
  crumbs({ label: "Supernets" });
  const { supernets } = await api("GET", "/v1/supernets");
  const rows = supernets.map((s) =>
    h("tr", { "data-id": s.id },
      h("td", {}, h("a", { href: `#/supernets/${s.id}` }, s.name)),
      h("td", { class: "num" }, s.layers),
      h("td", { class: "num" }, fmt.count(s.params)),
      h("td", {}, s.model ? fmt.bytes(s.model.bytes) : h("span", { class: "muted" }, "none")),
      h("td", {}, s.validation ? `${s.validation.samples} samples` : h("span", { class: "muted" }, "none")),
      h("td", { class: "num" }, s.plans),
      h("td", { class: "muted" }, s.created_at.slice(0, 19).replace("T", " "))));
  put(view, 
    h("h1", {}, "Supernets"),
    supernets.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["name", "layers", "params", "model", "validation", "plans", "created"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No supernets yet: POST a manifest to /v1/supernets, or start the server with --demo."));
}

async function supernetView(id) {
  const [s, { plans }, { fleet_plans }, { fleets }] = await Promise.all([
    api("GET", `/v1/supernets/${id}`),
    api("GET", `/v1/supernets/${id}/plans`),
    api("GET", `/v1/supernets/${id}/fleet-plans`),
    api("GET", "/v1/fleets"),
  ]);
  crumbs({ label: "Supernets", href: "#/" }, { label: s.name });
  const layers = s.manifest.layers;
  const layerRows = layers.map((l, i) =>
    h("tr", { "data-layer": l.name },
      h("td", {}, l.name),
      h("td", { class: "num" }, fmt.count(l.params)),
      h("td", { class: "num" }, fmt.count(l.macs)),
      h("td", { class: "num" }, l.hessian_trace === undefined ? "—" : fmt.sci(l.hessian_trace)),
      h("td", {}, sensitivityCell(layers, i, s.manifest.bits)),
      h("td", { class: "bits" }, (l.bits || []).join(",")),
      h("td", {}, l.pin ?? ""),
      h("td", {}, l.tie ?? ""),
      h("td", { class: "muted" }, l.sensitivity ? "measured sensitivity" : l.perturbation ? "measured error" : l.hessian_trace === undefined ? "none yet: measure sensitivity" : "proxy")));
  const planRows = plans.map((p) =>
    h("tr", {},
      h("td", {}, h("a", { href: `#/plans/${p.id}` }, p.id.slice(0, 18) + "…")),
      h("td", {}, pill(p.status)),
      h("td", {}, describeRequest(p.request)),
      h("td", { class: "num" }, p.candidate_count),
      h("td", {}, p.chosen_candidate_id ? "★" : ""),
      h("td", { class: "muted" }, p.created_at.slice(0, 19).replace("T", " "))));
  const fleetRows = fleet_plans.map((f) =>
    h("tr", {},
      h("td", {}, h("a", { href: `#/fleet-plans/${f.id}` }, f.fleet)),
      h("td", {}, pill(f.status)),
      h("td", {}, f.passed === null ? "" : f.passed ? h("span", { class: "good" }, "every device passes") : h("span", { class: "bad" }, "some devices fail")),
      h("td", { class: "muted" }, f.created_at.slice(0, 19).replace("T", " "))));
  put(view, 
    h("h1", {}, s.name, " ", h("span", { class: "muted" }, `${s.layers} layers, ${fmt.count(s.params)} weights, bits ${s.manifest.bits.join(",")}`)),
    h("div", { class: "card" }, h("h2", { style: "margin-top:0" }, "New plan"), planForm(id)),
    h("h2", {}, `Plans (${plans.length})`),
    plans.length ? h("table", {}, h("thead", {}, h("tr", {}, ["plan", "status", "request", "candidates", "chosen", "created"].map((c) => h("th", {}, c)))), h("tbody", {}, planRows)) : h("p", { class: "muted" }, "No plans yet."),
    h("h2", {}, "Fleet plans"),
    fleetForm(id, fleets),
    fleet_plans.length ? h("table", {}, h("thead", {}, h("tr", {}, ["fleet", "status", "gate", "created"].map((c) => h("th", {}, c)))), h("tbody", {}, fleetRows)) : null,
    h("h2", {}, "Layers"),
    h("div", { class: "scroll" }, h("table", { id: "layers" }, h("thead", {}, h("tr", {}, ["layer", "params", "MACs", "trace", sensitivityHeader(s.manifest), "bits", "pin", "tie", "Ω from"].map((c) => h("th", {}, c)))), h("tbody", {}, layerRows))));
}

function sensitivityHeader(m) {
  return m.sensitivity_metric ? `measured sensitivity by bit-width (${m.sensitivity_metric}, log, ${m.bits.join(" ")})` : "sensitivity (trace per weight, log)";
}

// A layer's sensitivity on a log scale shared by every layer: one bar per bit-width (highest first)
// when measured, else one bar of its trace per weight (a negative estimate drawn as the smallest).
function sensitivityCell(layers, i, bits) {
  const l = layers[i];
  const log = (v) => Math.log10(Math.max(v, 1e-30));
  if (l.sensitivity) {
    const all = layers.flatMap((x) => Object.values(x.sensitivity || {})).filter((v) => v > 0).map(log);
    const lo = Math.min(...all), hi = Math.max(...all);
    const height = (v) => (v > 0 && hi > lo ? 2 + 18 * (log(v) - lo) / (hi - lo) : 2).toFixed(0);
    return h("span", { class: "sens-bits" }, ...bits.map((b) => {
      const v = l.sensitivity[String(b)];
      return v === undefined
        ? h("span", { class: "sens-bit absent", title: `${b} bits: not allowed` })
        : h("span", { class: "sens-bit", style: `height:${height(v)}px`, title: `${b} bits: ${fmt.sci(v)}` });
    }));
  }
  // The scale comes from positive estimates; one that is not (the planner prices it by its rule,
  // never as free) is drawn as the shortest bar.
  const perWeight = layers.map((x) => ((x.hessian_trace ?? 0) > 0 ? log(x.hessian_trace / x.params) : null));
  const known = perWeight.filter((v) => v !== null);
  const lo = Math.min(...known), hi = Math.max(...known);
  const width = perWeight[i] === null ? 6 : 6 + 94 * (hi > lo ? (perWeight[i] - lo) / (hi - lo) : 1);
  const title = perWeight[i] === null ? "trace estimate not positive: priced by the trust rule" : `trace per weight ${fmt.sci(l.hessian_trace / l.params)}`;
  return h("span", { class: "bar", style: `width:${width.toFixed(0)}px`, title });
}

function describeRequest(r) {
  const parts = Object.entries(r.budgets || {}).map(([k, v]) => `${k.replace("max_", "")} ≤ ${k === "max_avg_bits" ? v : fmt.count(v)}`);
  if (r.pareto) parts.push(`front on ${r.pareto}${r.points ? ` (${r.points} points)` : ""}`);
  if (r.paper_pool) parts.push("paper pool");
  if (r.sweep) parts.push(`sweep ${r.sweep.cost} ×${r.sweep.points}`);
  if (r.device) parts.push(`device ${r.device.name}`);
  if (r.mip_gap) parts.push(`within ${r.mip_gap} of the optimum`);
  return parts.join(", ") || "unbudgeted optimum";
}

/// The plan form: budgets and pools; the server's validation errors appear next to their field.
function planForm(supernetId) {
  const field = (name, label, input) =>
    h("label", {}, label, input, h("span", { class: "err", "data-for": name }));
  const num = (name, placeholder) => h("input", { type: "number", name, step: "any", min: "0", placeholder });
  const form = h("form", { class: "plan", novalidate: true },
    field("budgets.max_size_bytes", "max size (bytes)", num("budgets.max_size_bytes", "e.g. 20000")),
    field("budgets.max_bops", "max BOPs", num("budgets.max_bops", "")),
    field("budgets.max_avg_bits", "max average bits", num("budgets.max_avg_bits", "e.g. 4")),
    field("budgets.max_latency_ms", "max latency (ms, needs a device)", num("budgets.max_latency_ms", "")),
    field("pareto", "Pareto front on", h("select", { name: "pareto" }, h("option", { value: "" }, "— single solve —"), ["size", "bops", "latency"].map((c) => h("option", { value: c }, c)))),
    field("points", "front points (blank = all)", num("points", "")),
    field("paper_pool", "paper's pool", h("input", { type: "checkbox", name: "paper_pool" })),
    field("device", "device profile JSON (optional)", h("textarea", { name: "device", rows: 2, placeholder: '{"name": "npu", "roofline": {...}}' })),
    field("time_limit_s", "time limit per solve (s)", num("time_limit_s", "10")),
    field("mip_gap", "optimality gap (blank = prove the optimum)", num("mip_gap", "e.g. 1e-4")),
    h("div", {}, h("button", { type: "submit" }, "Plan"), h("div", { class: "err", "data-for": "" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelectorAll(".err").forEach((e) => (e.textContent = ""));
    form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
    const body = { budgets: {} };
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.name.startsWith("budgets.") && el.value !== "") body.budgets[el.name.slice(8)] = Number(el.value);
      else if (el.name === "pareto" && el.value) body.pareto = el.value;
      else if (["points", "time_limit_s", "mip_gap"].includes(el.name) && el.value !== "") body[el.name] = Number(el.value);
      else if (el.name === "paper_pool" && el.checked) body.paper_pool = true;
      else if (el.name === "device" && el.value.trim()) {
        try { body.device = JSON.parse(el.value); } catch (e) { return markField(form, "device", `not JSON: ${e.message}`); }
      }
    }
    try {
      const plan = await api("POST", `/v1/supernets/${supernetId}/plans`, body);
      location.hash = `#/plans/${plan.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const infeasible = e.body && e.body.error && e.body.error.details && e.body.error.details.infeasible;
      if (e.fields.length) e.fields.forEach((f) => markField(form, f.path, f.reason));
      else if (infeasible) {
        // Each budget that cannot be met, next to its field, with the smallest achievable value.
        for (const b of infeasible.budgets.filter((b) => !b.achievable_alone || b.min_under_other_budgets > b.limit)) {
          markField(form, `budgets.${b.budget}`, `cannot be met: smallest achievable ${Number(b.min_achievable.toPrecision(6))}` +
            (b.min_under_other_budgets !== null && b.min_under_other_budgets !== b.min_achievable ? ` (${Number(b.min_under_other_budgets.toPrecision(6))} under the other budgets)` : ""));
        }
        markField(form, "", e.message);
      } else markField(form, "", e.message);
    }
  });
  return form;
}

/// Puts an error next to the field its path names (or the closest enclosing one).
function markField(form, path, reason) {
  let name = path;
  while (name && !form.querySelector(`[data-for="${CSS.escape(name)}"]`)) name = name.replace(/[.[][^.[]*$/, "");
  const slot = form.querySelector(`[data-for="${CSS.escape(name)}"]`) || form.querySelector('[data-for=""]');
  slot.textContent = name === path || !path ? reason : `${path}: ${reason}`;
  const input = form.elements[name];
  if (input && input.classList) input.classList.add("invalid");
}

function fleetForm(supernetId, fleets) {
  if (!fleets.length) return h("p", { class: "muted" }, "No fleets yet: POST a fleet file to /v1/fleets.");
  const form = h("form", { class: "toolbar" },
    h("select", { name: "fleet_id" }, fleets.map((f) => h("option", { value: f.id }, `${f.name} (${f.devices.length} devices)`))),
    h("label", {}, h("input", { type: "checkbox", name: "evaluate" }), " measure"),
    h("label", {}, "min accuracy ", h("input", { type: "number", name: "min_accuracy", step: "any", min: "0", max: "1", style: "width:80px" })),
    h("button", { type: "submit" }, "Plan the fleet"),
    h("span", { class: "err bad" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { fleet_id: form.elements.fleet_id.value, evaluate: form.elements.evaluate.checked };
    if (form.elements.min_accuracy.value !== "") body.min_accuracy = Number(form.elements.min_accuracy.value);
    try {
      const fp = await api("POST", `/v1/supernets/${supernetId}/fleet-plans`, body);
      location.hash = `#/fleet-plans/${fp.id}`;
    } catch (e) {
      form.querySelector(".err").textContent = e.fields.length ? e.fields.map((f) => `${f.path}: ${f.reason}`).join("; ") : e.message;
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// Jobs: live progress over server-sent events

function followJob(jobId, onChange) {
  const es = new EventSource(`/v1/jobs/${jobId}/events`);
  const handle = (ev) => onChange(JSON.parse(ev.data), ev.type === "done");
  es.addEventListener("progress", handle);
  es.addEventListener("done", (ev) => { es.close(); handle(ev); });
  es.addEventListener("error", () => { /* the browser reconnects; the next event carries the state */ });
  cleanup.push(() => es.close());
  return es;
}

function progressBar(job) {
  const pct = job.progress.total ? (100 * job.progress.done) / job.progress.total : 0;
  return h("span", { class: "job", "data-job": job.id },
    h("span", { class: "progress" }, h("div", { style: `width:${pct.toFixed(1)}%` })), " ",
    pill(job.status), " ", h("span", { class: "muted" }, job.progress.message));
}

// ---------------------------------------------------------------------------------------------
// Plan page: chart, table, heatmap, actions

const COLUMNS = [
  { key: "rank", label: "#", num: true, get: (c) => c.rank + 1 },
  { key: "omega", label: "Ω", num: true, get: (c) => c.omega, fmt: fmt.sci },
  { key: "size_bytes", label: "size", num: true, get: (c) => c.size_bytes, fmt: fmt.bytes },
  { key: "bops", label: "BOPs", num: true, get: (c) => c.bops, fmt: fmt.count },
  { key: "avg_bits", label: "avg bits", num: true, get: (c) => c.avg_bits, fmt: fmt.fixed(3) },
  { key: "latency_ms", label: "latency ms", num: true, get: (c) => c.latency_ms, fmt: fmt.fixed(4), optional: true },
  { key: "accuracy", label: "accuracy", num: true, get: (c) => c.metrics && c.metrics.accuracy, fmt: fmt.pct },
  { key: "agreement_fp32", label: "agree fp32", num: true, get: (c) => c.metrics && c.metrics.agreement_fp32, fmt: fmt.pct },
  { key: "sources", label: "from", get: (c) => c.sources.join("+") },
  { key: "bits", label: "bits (manifest order)", get: (c) => bitsString(c.bits), cls: "bits" },
];
const AXES = {
  size_bytes: { label: "size", get: (c) => c.size_bytes, fmt: fmt.bytes },
  bops: { label: "BOPs", get: (c) => c.bops, fmt: fmt.count },
  avg_bits: { label: "average bits", get: (c) => c.avg_bits, fmt: fmt.fixed(2) },
  latency_ms: { label: "latency (ms)", get: (c) => c.latency_ms, fmt: fmt.fixed(3) },
  omega: { label: "predicted Ω (log)", get: (c) => c.omega, fmt: fmt.sci, log: true, better: "low" },
  accuracy: { label: "measured accuracy", get: (c) => c.metrics && c.metrics.accuracy, fmt: fmt.pct, better: "high" },
  agreement_fp32: { label: "agreement with fp32", get: (c) => c.metrics && c.metrics.agreement_fp32, fmt: fmt.pct, better: "high" },
};

async function planView(id) {
  const plan = await api("GET", `/v1/plans/${id}`);
  const supernet = await api("GET", `/v1/supernets/${plan.supernet_id}`);
  crumbs({ label: "Supernets", href: "#/" }, { label: supernet.name, href: `#/supernets/${supernet.id}` }, { label: `plan ${id.slice(0, 14)}…` });
  const state = {
    plan, supernet, candidates: [], selected: null, compare: new Set(), evalSel: new Set(),
    sort: { key: "rank", asc: true }, filter: { evaluated: "", maxOmega: "", minAccuracy: "", text: "" },
    x: plan.request.pareto === "bops" ? "bops" : plan.request.pareto === "latency" ? "latency_ms" : "size_bytes", y: "omega",
  };
  const header = h("div", { class: "card" });
  const chartBox = h("div", { class: "chart" });
  const tableBox = h("div");
  const heatBox = h("div");
  const compareBox = h("div");
  const jobBox = h("span");
  put(view, h("h1", {}, `Plan on ${supernet.name}`), header,
    h("div", { class: "grid" }, h("div", {}, chartBox), h("div", {}, h("h2", { style: "margin-top:0" }, "Compare"), compareBox)),
    h("h2", {}, "Candidates"), tableBox, h("h2", {}, "Bit-widths per layer (rows: layers, columns: candidates in table order)"), heatBox);

  const reload = async () => {
    const [p, page] = await Promise.all([api("GET", `/v1/plans/${id}`), api("GET", `/v1/plans/${id}/candidates?limit=10000`)]);
    state.plan = p;
    state.candidates = page.candidates;
    renderAll();
  };
  const renderAll = () => {
    renderHeader();
    renderChart(state, chartBox, select);
    renderTable(state, tableBox, select, actions);
    renderHeatmap(state, heatBox);
    renderCompare(state, compareBox);
  };
  const select = (cid, scroll) => {
    state.selected = cid;
    document.querySelectorAll("tr.highlight").forEach((r) => r.classList.remove("highlight"));
    document.querySelectorAll("circle.point.selected").forEach((c) => c.classList.remove("selected"));
    const row = tableBox.querySelector(`tr[data-id="${cid}"]`);
    if (row) { row.classList.add("highlight"); if (scroll) row.scrollIntoView({ block: "nearest" }); }
    const pt = chartBox.querySelector(`circle.point[data-id="${cid}"]`);
    if (pt) pt.classList.add("selected");
  };
  const runJob = (job) => {
    const update = (j, done) => {
      put(jobBox, progressBar(j));
      if (done || j.progress.done !== (update.last || 0)) { update.last = j.progress.done; reload(); }
    };
    update(job, false);
    followJob(job.id, update);
  };
  const actions = {
    choose: async (cid) => {
      await api("PUT", `/v1/plans/${id}/choice`, { candidate_id: state.plan.chosen_candidate_id === cid ? null : cid });
      await reload();
      select(cid);
    },
    evaluate: async (ids) => runJob(await api("POST", `/v1/plans/${id}/evaluations`, ids ? { candidate_ids: ids } : {})),
  };
  // What the solver proved about the plan's candidates (the result's status).
  const SOLVER_NOTES = {
    optimal: "proven optimal",
    within_gap: "proven within the requested mip_gap of the optimum",
    time_limit: "some solves stopped at the time limit (see a candidate's solve gap)",
  };
  const renderHeader = () => {
    const p = state.plan, r = p.result || {};
    const evaluated = state.candidates.filter((c) => c.metrics).length;
    put(header, 
      h("div", { class: "toolbar" },
        pill(p.status), h("span", {}, describeRequest(p.request)),
        r.engine ? h("span", { class: "muted" }, `${r.solves} solve(s) in ${Number(r.solve_time_ms).toFixed(2)} ms (${r.engine})`) : null,
        r.status && r.status !== "infeasible" ? h("span", { class: r.status === "optimal" ? "muted" : "bad", "data-solver": r.status }, SOLVER_NOTES[r.status] || r.status) : null,
        h("span", { class: "muted" }, `${state.candidates.length} candidates, ${evaluated} measured`),
        p.chosen_candidate_id ? h("span", { class: "good" }, `★ chosen: rank ${(state.candidates.find((c) => c.id === p.chosen_candidate_id) || {}).rank + 1}`) : null),
      h("div", { class: "toolbar" },
        h("button", { onclick: () => actions.evaluate([...state.evalSel]), disabled: !state.evalSel.size || !supernet.model || !supernet.validation, "data-action": "evaluate-selected" }, `Evaluate selected (${state.evalSel.size})`),
        h("button", { class: "ghost", onclick: () => actions.evaluate(null), disabled: !supernet.model || !supernet.validation || p.status !== "ready" }, "Evaluate all"),
        !supernet.model || !supernet.validation ? h("span", { class: "muted" }, "upload the model and validation set to measure") : null,
        jobBox),
      p.result && p.result.infeasible ? h("p", { class: "bad" }, p.result.infeasible.message) : null);
  };
  if (plan.job_id && ["pending", "running"].includes(plan.status)) runJob(await api("GET", `/v1/jobs/${plan.job_id}`));
  await reload();
  const stale = (await api("GET", `/v1/jobs?status=running&supernet_id=${plan.supernet_id}`)).jobs.find((j) => j.plan_id === id && j.kind === "evaluate");
  if (stale) runJob(stale);
}

function visibleCandidates(state) {
  const f = state.filter;
  let list = state.candidates.filter((c) =>
    (f.evaluated === "" || (f.evaluated === "yes") === !!c.metrics) &&
    (f.maxOmega === "" || c.omega <= Number(f.maxOmega)) &&
    (f.minAccuracy === "" || (c.metrics && c.metrics.accuracy >= Number(f.minAccuracy))) &&
    (f.text === "" || bitsString(c.bits).includes(f.text)));
  const col = COLUMNS.find((c) => c.key === state.sort.key);
  const dir = state.sort.asc ? 1 : -1;
  list = list.slice().sort((a, b) => {
    const va = col.get(a), vb = col.get(b);
    if (va === vb) return a.rank - b.rank;
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    return (va < vb ? -1 : 1) * dir;
  });
  return list;
}

function renderTable(state, box, select, actions) {
  const hasLatency = state.candidates.some((c) => c.latency_ms !== null);
  const cols = COLUMNS.filter((c) => !c.optional || hasLatency);
  const f = state.filter;
  const rerender = () => { renderTable(state, box, select, actions); renderHeatmap(state, box.nextElementSibling.nextElementSibling); };
  const filterBar = h("div", { class: "toolbar" },
    h("label", {}, "measured ", h("select", { onchange: (e) => { f.evaluated = e.target.value; rerender(); } },
      [["", "all"], ["yes", "measured"], ["no", "not measured"]].map(([v, l]) => h("option", { value: v, selected: f.evaluated === v }, l)))),
    h("label", {}, "Ω ≤ ", h("input", { type: "number", step: "any", value: f.maxOmega, style: "width:110px", onchange: (e) => { f.maxOmega = e.target.value; rerender(); } })),
    h("label", {}, "accuracy ≥ ", h("input", { type: "number", step: "any", value: f.minAccuracy, style: "width:80px", onchange: (e) => { f.minAccuracy = e.target.value; rerender(); } })),
    h("label", {}, "bits contain ", h("input", { type: "text", value: f.text, style: "width:90px", onchange: (e) => { f.text = e.target.value; rerender(); } })));
  const list = visibleCandidates(state);
  const chosen = state.plan.chosen_candidate_id;
  const head = h("tr", {}, h("th", { title: "select for evaluation" }, "eval"), h("th", { title: "pick two to compare" }, "cmp"),
    cols.map((c) => h("th", {
      class: `${c.num ? "num " : ""}sortable${state.sort.key === c.key ? " sorted" + (state.sort.asc ? " asc" : "") : ""}`,
      "data-key": c.key,
      onclick: () => { state.sort = { key: c.key, asc: state.sort.key === c.key ? !state.sort.asc : true }; rerender(); },
    }, c.label)), h("th", {}, ""));
  const rows = list.map((c) => h("tr", {
    "data-id": c.id,
    class: [c.id === state.selected ? "highlight" : "", c.id === chosen ? "chosen" : ""].join(" ").trim() || null,
    onclick: (e) => { if (!["INPUT", "BUTTON", "A"].includes(e.target.tagName)) select(c.id, false); },
  },
    h("td", {}, h("input", { type: "checkbox", checked: state.evalSel.has(c.id), disabled: !!c.metrics, onchange: (e) => { e.target.checked ? state.evalSel.add(c.id) : state.evalSel.delete(c.id); renderHeaderButtons(state); } })),
    h("td", {}, h("input", { type: "checkbox", checked: state.compare.has(c.id), onchange: (e) => {
      if (e.target.checked) { state.compare.add(c.id); if (state.compare.size > 2) state.compare.delete(state.compare.values().next().value); } else state.compare.delete(c.id);
      rerender(); renderCompare(state, document.querySelector(".grid > div:last-child > div"));
    } })),
    cols.map((col) => {
      const v = col.get(c);
      return h("td", { class: [col.num ? "num" : "", col.cls || ""].join(" ").trim() || null }, col.fmt ? col.fmt(v) : String(v ?? ""));
    }),
    h("td", {},
      h("button", { class: c.id === chosen ? "" : "ghost", "data-action": "choose", onclick: () => actions.choose(c.id) }, c.id === chosen ? "★ chosen" : "Mark chosen"), " ",
      h("a", { href: `/v1/candidates/${c.id}/config`, download: `${c.id}.bits.json` }, "JSON"), " ",
      state.supernet.model ? h("a", { href: `/v1/candidates/${c.id}/model.onnx`, download: `${c.id}.qdq.onnx` }, "ONNX") : null)));
  put(box, filterBar, h("div", { class: "scroll" }, h("table", { id: "candidates" }, h("thead", {}, head), h("tbody", {}, rows))),
    h("p", { class: "muted" }, `${list.length} of ${state.candidates.length} shown`));
}

function renderHeaderButtons(state) {
  const b = document.querySelector('button[data-action="evaluate-selected"]');
  if (b) { b.textContent = `Evaluate selected (${state.evalSel.size})`; b.disabled = !state.evalSel.size || !state.supernet.model || !state.supernet.validation; }
}

/// The Pareto chart: one point per candidate; filled = measured, hollow = not yet; the line is the
/// front of the drawn points (lower x and better y).
function renderChart(state, box, select) {
  const hasLatency = state.candidates.some((c) => c.latency_ms !== null);
  const xs = ["size_bytes", "bops", "avg_bits"].concat(hasLatency ? ["latency_ms"] : []);
  const controls = h("div", { class: "toolbar" },
    h("label", {}, "x ", h("select", { id: "x-axis", onchange: (e) => { state.x = e.target.value; renderChart(state, box, select); } }, xs.map((k) => h("option", { value: k, selected: state.x === k }, AXES[k].label)))),
    h("label", {}, "y ", h("select", { id: "y-axis", onchange: (e) => { state.y = e.target.value; renderChart(state, box, select); } }, ["omega", "accuracy", "agreement_fp32"].map((k) => h("option", { value: k, selected: state.y === k }, AXES[k].label)))));
  const X = AXES[state.x], Y = AXES[state.y];
  const pts = state.candidates.map((c) => ({ c, x: X.get(c), y: Y.get(c) })).filter((p) => p.x !== null && p.x !== undefined && p.y !== null && p.y !== undefined && (!Y.log || p.y > 0));
  const W = 800, H = 380, L = 70, R = 40, T = 14, B = 40;
  const svgNS = "http://www.w3.org/2000/svg";
  const el = (tag, attrs) => { const e = document.createElementNS(svgNS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", id: "pareto" });
  if (!pts.length) {
    const t = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }); t.textContent = Y.better === "high" ? "no measured candidates yet: evaluate some" : "no candidates"; svg.append(t);
    put(box, controls, svg);
    return;
  }
  const tf = (v) => (Y.log ? Math.log10(v) : v);
  let [x0, x1] = [Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x))];
  let [y0, y1] = [Math.min(...pts.map((p) => tf(p.y))), Math.max(...pts.map((p) => tf(p.y)))];
  if (x1 === x0) { x0 -= 1; x1 += 1; } if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const px = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const py = (v) => T + (1 - (tf(v) - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const gx = x0 + ((x1 - x0) * i) / 4, gy = y0 + ((y1 - y0) * i) / 4;
    svg.append(el("line", { class: "gridline", x1: px(gx), x2: px(gx), y1: T, y2: H - B }));
    svg.append(el("line", { class: "gridline", x1: L, x2: W - R, y1: py(Y.log ? 10 ** gy : gy), y2: py(Y.log ? 10 ** gy : gy) }));
    const tx = el("text", { x: px(gx), y: H - B + 14, "text-anchor": "middle" }); tx.textContent = X.fmt(gx); svg.append(tx);
    const ty = el("text", { x: L - 6, y: py(Y.log ? 10 ** gy : gy) + 4, "text-anchor": "end" }); ty.textContent = Y.fmt(Y.log ? 10 ** gy : gy); svg.append(ty);
  }
  svg.append(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }), el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  const xl = el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }); xl.textContent = X.label; svg.append(xl);
  const yl = el("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, "text-anchor": "middle" }); yl.textContent = Y.label; svg.append(yl);
  // The front of the drawn points: by increasing x, keep each point better in y than all before it.
  const better = Y.better === "high" ? (a, b) => a > b : (a, b) => a < b;
  const front = [];
  for (const p of pts.slice().sort((a, b) => a.x - b.x || (better(a.y, b.y) ? -1 : 1))) if (!front.length || better(p.y, front[front.length - 1].y)) front.push(p);
  svg.append(el("polyline", { class: "front", points: front.map((p) => `${px(p.x)},${py(p.y)}`).join(" ") }));
  const chosen = state.plan.chosen_candidate_id;
  // Smaller dots when there are many, so hollow (not measured) ones stay recognisable.
  const radius = pts.length > 400 ? 2.5 : pts.length > 100 ? 3.5 : 4.5;
  for (const p of pts) {
    const cls = ["point", p.c.metrics ? "evaluated" : "pending", p.c.id === state.selected ? "selected" : "", p.c.id === chosen ? "chosen" : ""].join(" ");
    const dot = el("circle", { class: cls, cx: px(p.x), cy: py(p.y), r: radius, "data-id": p.c.id });
    dot.addEventListener("mouseenter", (e) => {
      const m = p.c.metrics;
      tooltip.innerHTML = "";
      tooltip.append(`#${p.c.rank + 1}  Ω ${fmt.sci(p.c.omega)}`, h("br"), `size ${fmt.bytes(p.c.size_bytes)}, BOPs ${fmt.count(p.c.bops)}, avg ${p.c.avg_bits.toFixed(3)} bits`,
        p.c.latency_ms !== null ? h("span", {}, h("br"), `latency ${p.c.latency_ms.toFixed(4)} ms`) : "",
        h("br"), m ? `accuracy ${fmt.pct(m.accuracy)}, agreement ${fmt.pct(m.agreement_fp32)}` : "not measured yet", h("br"), `bits ${bitsString(p.c.bits)}`);
      tooltip.hidden = false; tooltip.style.left = `${e.clientX + 12}px`; tooltip.style.top = `${e.clientY + 12}px`;
    });
    dot.addEventListener("mouseleave", () => (tooltip.hidden = true));
    dot.addEventListener("click", () => select(p.c.id, true));
    svg.append(dot);
  }
  put(box, controls, svg,
    h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--accent)" }), "measured"), h("span", {}, h("i", {}), "not measured"),
      h("span", {}, `${pts.length} points`), h("span", {}, "line: front of the drawn points")));
}

/// Layers × candidates, coloured by bit-width (darker = more bits); a canvas keeps it fast with
/// thousands of candidates.
function renderHeatmap(state, box) {
  const layers = state.supernet.manifest.layers.map((l) => l.name);
  const list = visibleCandidates(state).slice(0, 2000);
  const bitsAll = state.supernet.manifest.bits;
  const [bmin, bmax] = [Math.min(...bitsAll), Math.max(...bitsAll)];
  const cw = Math.max(3, Math.min(14, Math.floor(900 / Math.max(1, list.length)))), ch = 14, left = 150;
  const canvas = h("canvas", { width: left + cw * list.length + 10, height: ch * layers.length + 8, id: "heatmap" });
  const ctx = canvas.getContext("2d");
  ctx.font = "11px system-ui"; ctx.fillStyle = "#6b7385"; ctx.textBaseline = "middle";
  layers.forEach((n, i) => ctx.fillText(n.length > 22 ? "…" + n.slice(-21) : n, 4, 4 + ch * i + ch / 2));
  list.forEach((c, j) => {
    Object.values(c.bits).forEach((b, i) => {
      const t = bmax > bmin ? (b - bmin) / (bmax - bmin) : 1;
      ctx.fillStyle = `hsl(220, 70%, ${88 - 58 * t}%)`;
      ctx.fillRect(left + cw * j, 4 + ch * i, cw - (cw > 4 ? 1 : 0), ch - 1);
      if (cw >= 12) { ctx.fillStyle = t > 0.5 ? "#fff" : "#1d2330"; ctx.fillText(String(b), left + cw * j + 3, 4 + ch * i + ch / 2); }
    });
  });
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((e.clientX - r.left - left) / cw), i = Math.floor((e.clientY - r.top - 4) / ch);
    const c = list[j];
    if (!c || i < 0 || i >= layers.length) { tooltip.hidden = true; return; }
    tooltip.textContent = `#${c.rank + 1} ${layers[i]}: ${Object.values(c.bits)[i]} bits`;
    tooltip.hidden = false; tooltip.style.left = `${e.clientX + 12}px`; tooltip.style.top = `${e.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => (tooltip.hidden = true));
  put(box, h("div", { class: "heatmap" }, canvas),
    h("div", { class: "legend" }, bitsAll.slice().sort((a, b) => a - b).map((b) => h("span", {}, h("i", { style: `background:hsl(220,70%,${88 - 58 * ((b - bmin) / Math.max(1, bmax - bmin))}%);border-color:transparent` }), `${b} bits`)),
      list.length < state.candidates.length ? h("span", {}, `first ${list.length} of the table's order`) : null));
}

function renderCompare(state, box) {
  if (!box) return;
  const pick = [...state.compare].map((id) => state.candidates.find((c) => c.id === id)).filter(Boolean);
  if (pick.length < 2) {
    put(box, h("p", { class: "muted" }, "Tick two candidates in the cmp column to compare them layer by layer."));
    return;
  }
  const [a, b] = pick;
  const layers = Object.keys(a.bits);
  const rows = layers.map((n) => h("tr", {}, h("td", {}, n), h("td", { class: a.bits[n] !== b.bits[n] ? "num changed" : "num" }, a.bits[n]), h("td", { class: a.bits[n] !== b.bits[n] ? "num changed" : "num" }, b.bits[n])));
  const line = (label, f, get) => h("tr", {}, h("th", {}, label), h("td", { class: "num" }, f(get(a))), h("td", { class: "num" }, f(get(b))));
  put(box, h("div", { class: "scroll", style: "max-height:380px" }, h("table", { class: "diff" },
    h("thead", {}, h("tr", {}, h("th", {}, "layer"), h("th", { class: "num" }, `#${a.rank + 1}`), h("th", { class: "num" }, `#${b.rank + 1}`))),
    h("tbody", {}, line("Ω", fmt.sci, (c) => c.omega), line("size", fmt.bytes, (c) => c.size_bytes), line("BOPs", fmt.count, (c) => c.bops),
      line("accuracy", fmt.pct, (c) => c.metrics && c.metrics.accuracy), rows))),
    h("p", { class: "muted" }, `${layers.filter((n) => a.bits[n] !== b.bits[n]).length} of ${layers.length} layers differ`));
}

// ---------------------------------------------------------------------------------------------
// Fleet plans

async function fleetPlanView(id) {
  const fp = await api("GET", `/v1/fleet-plans/${id}`);
  const supernet = await api("GET", `/v1/supernets/${fp.supernet_id}`);
  crumbs({ label: "Supernets", href: "#/" }, { label: supernet.name, href: `#/supernets/${supernet.id}` }, { label: `fleet ${fp.fleet}` });
  const jobBox = h("span");
  if (fp.job_id && ["pending", "running"].includes(fp.status)) {
    followJob(fp.job_id, (j, done) => { put(jobBox, progressBar(j)); if (done) route(); });
  }
  const rows = ((fp.result && fp.result.devices) || []).map((d) => h("tr", { "data-device": d.device },
    h("td", {}, d.device), h("td", {}, pill(d.status)), h("td", {}, d.cost),
    h("td", { class: "num" }, fmt.sci(d.omega)), h("td", { class: "num" }, fmt.bytes(d.size_bytes)), h("td", { class: "num" }, fmt.count(d.bops)),
    h("td", { class: "num" }, fmt.fixed(4)(d.latency_ms)), h("td", { class: "num" }, d.metrics ? fmt.pct(d.metrics.accuracy) : ""),
    h("td", {}, d.meets_gate === null || d.meets_gate === undefined ? "" : d.meets_gate ? h("span", { class: "good" }, "pass") : h("span", { class: "bad" }, "fail")),
    h("td", { class: "bits" }, d.bits ? bitsString(d.bits) : "—"),
    h("td", { class: "muted", style: "white-space:normal" }, d.reason || (d.infeasible && d.infeasible.message) || "")));
  put(view, 
    h("h1", {}, `Fleet ${fp.fleet} on ${supernet.name}`),
    h("div", { class: "card toolbar" }, pill(fp.status), fp.passed === null ? null : fp.passed ? h("span", { class: "good" }, "every device has a plan and passes") : h("span", { class: "bad" }, "some devices fail"),
      fp.result ? h("span", { class: "muted" }, `${fp.result.devices.length} devices, ${fp.result.problems} distinct problems, ${fp.result.solves} solves in ${Number(fp.result.time_ms).toFixed(1)} ms`) : null,
      fp.result ? h("a", { href: `/v1/fleet-plans/${id}?format=csv`, download: `${fp.fleet}.csv` }, "CSV") : null, jobBox),
    h("table", { id: "fleet" }, h("thead", {}, h("tr", {}, ["device", "status", "cost", "Ω", "size", "BOPs", "latency ms", "accuracy", "gate", "bits", "note"].map((c) => h("th", {}, c)))), h("tbody", {}, rows)));
}

route();
