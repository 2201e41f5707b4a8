// bitplan dashboard: hand-written, no dependencies, served by `bitplan serve`; works offline.
// Views (hash routes): #/ supernets, #/supernets/ID, #/plans/ID[/CANDIDATE], #/fleet-plans/ID,
// #/searches/ID. This file holds the helpers, the routing, the supernet and fleet pages; plan.js
// the plan page, search.js the search page, chart.js the canvas chart for large fronts. They load
// in that order after this one; the first view is routed once all are in.
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
  window.scrollTo(0, 0);
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  try {
    if (parts[0] === "supernets" && parts[1]) await supernetView(parts[1]);
    else if (parts[0] === "plans" && parts[1]) await planView(parts[1], parts[2]);
    else if (parts[0] === "searches" && parts[1]) await searchView(parts[1]);
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
  const [s, { plans }, { fleet_plans }, { fleets }, { searches }] = await Promise.all([
    api("GET", `/v1/supernets/${id}`),
    api("GET", `/v1/supernets/${id}/plans`),
    api("GET", `/v1/supernets/${id}/fleet-plans`),
    api("GET", "/v1/fleets"),
    api("GET", `/v1/supernets/${id}/searches`),
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
    h("h2", {}, "Searches: plan, measure, refit, re-plan"),
    searchSection(s, searches),
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
  if (r.search_id) return `the points of search ${r.search_id.slice(0, 16)}… on ${r.pareto} (Ω: the search's objective after its last measurement)`;
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

window.addEventListener("DOMContentLoaded", route);
