// bitplan dashboard: the plan page (#/plans/ID[/CANDIDATE]): the front (SVG, or a canvas past
// SVG_POINTS), the candidates' table (rendering the rows in view past VIRTUAL_ROWS), the bit-width
// heatmap, the layer-by-layer comparison, and the choose, export and evaluate actions.
"use strict";

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

/// Every candidate of a plan, `bits` as lists in manifest order: the pages `expected` candidates
/// fill, in parallel, then any the plan gained meanwhile.
async function allCandidates(planId, expected) {
  const PAGE = 10000;
  const url = (offset) => `/v1/plans/${planId}/candidates?limit=${PAGE}&offset=${offset}&bits=list`;
  const offsets = [0];
  for (let o = PAGE; o < expected; o += PAGE) offsets.push(o);
  const pages = await Promise.all(offsets.map((o) => api("GET", url(o))));
  for (let o = offsets[offsets.length - 1] + PAGE; o < pages[0].total; o += PAGE) pages.push(await api("GET", url(o)));
  return [].concat(...pages.map((r) => r.candidates));
}

async function planView(id, candidateId) {
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

  // One reload at a time; progress ticks meanwhile ask for one more after it, so the page ends
  // on the newest state without fetching every page per tick.
  let loading = null, again = false;
  const reload = async () => {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      let failed = null;
      do {
        again = false;
        try {
          const [p, candidates] = await Promise.all([api("GET", `/v1/plans/${id}`), allCandidates(id, state.plan.candidate_count)]);
          state.plan = p;
          state.candidates = candidates;
          renderAll();
          failed = null;
        } catch (e) {
          failed = e; // a later pass may still succeed
        }
      } while (again);
      if (failed) throw failed;
    })();
    try { await loading; } finally { loading = null; }
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
    if (scroll && state.reveal) state.reveal(cid);
    const row = tableBox.querySelector(`tr[data-id="${cid}"]`);
    if (row) { row.classList.add("highlight"); if (scroll) row.scrollIntoView({ block: "nearest" }); }
    const pt = chartBox.querySelector(`circle.point[data-id="${cid}"]`);
    if (pt) pt.classList.add("selected");
    const canvas = chartBox.querySelector("canvas.scatter");
    if (canvas) canvas.chart.show();
  };
  const runJob = (job) => {
    const update = (j, done) => {
      put(jobBox, progressBar(j));
      if (done || j.progress.done !== (update.last || 0)) { update.last = j.progress.done; reload().catch(showError); }
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
    search: "measured and predicted points of a search",
  };
  const renderHeader = () => {
    const p = state.plan, r = p.result || {};
    const evaluated = state.candidates.filter((c) => c.metrics).length;
    put(header, 
      h("div", { class: "toolbar" },
        pill(p.status), h("span", {}, describeRequest(p.request)),
        p.request.search_id ? h("a", { href: `#/searches/${p.request.search_id}` }, "back to the search") : null,
        r.engine && r.engine !== "search" ? h("span", { class: "muted" }, `${r.solves} solve(s) in ${Number(r.solve_time_ms).toFixed(2)} ms (${r.engine})`) : null,
        r.status && r.status !== "infeasible" ? h("span", { class: ["optimal", "search"].includes(r.status) ? "muted" : "bad", "data-solver": r.status }, SOLVER_NOTES[r.status] || r.status) : null,
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
  if (candidateId) select(candidateId, true);
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
  const rowOf = (c) => h("tr", {
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
      state.supernet.model ? h("a", { href: `/v1/candidates/${c.id}/model.onnx`, download: `${c.id}.qdq.onnx` }, "ONNX") : null));
  const tbody = h("tbody");
  const scroll = h("div", { class: "scroll" }, h("table", { id: "candidates" }, h("thead", {}, head), tbody));
  // A rebuilt table (a tick, a sort) keeps the place it was scrolled to.
  const previous = box.querySelector(".scroll");
  const kept = previous ? previous.scrollTop : 0;
  put(box, filterBar, scroll, h("p", { class: "muted" }, `${list.length} of ${state.candidates.length} shown`));
  if (list.length <= VIRTUAL_ROWS) {
    tbody.append(...list.map(rowOf));
    scroll.scrollTop = kept;
    state.reveal = null;
    return;
  }
  // Long lists render only the rows in view (and a margin), between two spacers as tall as the
  // rows they stand for; the row height is measured once the first rows are in the page.
  let rowHeight = 30, first = -1;
  const spacer = (rows) => h("tr", { class: "spacer" }, h("td", { colspan: cols.length + 3, style: `height:${rows * rowHeight}px` }));
  const paint = () => {
    const top = Math.max(0, Math.floor(scroll.scrollTop / rowHeight) - 10);
    if (top === first) return;
    first = top;
    const end = Math.min(list.length, top + Math.ceil(scroll.clientHeight / rowHeight) + 20);
    put(tbody, spacer(top), list.slice(top, end).map(rowOf), spacer(list.length - end));
  };
  paint();
  const measured = tbody.rows[1] && tbody.rows[1].getBoundingClientRect().height;
  if (measured) rowHeight = measured;
  // The spacers give the table its full height: the kept place can be scrolled to now.
  first = -1;
  paint();
  scroll.scrollTop = kept;
  first = -1;
  paint();
  scroll.addEventListener("scroll", () => requestAnimationFrame(paint));
  state.reveal = (cid) => {
    const i = list.findIndex((c) => c.id === cid);
    if (i < 0) return;
    scroll.scrollTop = Math.max(0, i * rowHeight - scroll.clientHeight / 2);
    first = -1;
    paint();
  };
}

/// Rows past this many render only while in view.
const VIRTUAL_ROWS = 1000;

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
  // The front of the drawn points: by increasing x, keep each point better in y than all before it.
  const better = Y.better === "high" ? (a, b) => a > b : (a, b) => a < b;
  const front = [];
  for (const p of pts.slice().sort((a, b) => a.x - b.x || (better(a.y, b.y) ? -1 : 1))) if (!front.length || better(p.y, front[front.length - 1].y)) front.push(p);
  const chosen = state.plan.chosen_candidate_id;
  if (pts.length > SVG_POINTS) {
    const canvas = scatterChart({
      id: "pareto-canvas",
      x: { label: X.label, fmt: X.fmt }, y: { label: Y.label, fmt: Y.fmt, log: Y.log },
      series: [
        { name: "front", points: front, color: "#2f6fdf", line: true, radius: 0 },
        { name: "not measured", points: pts.filter((p) => !p.c.metrics), color: "#9db8ef" },
        { name: "measured", points: pts.filter((p) => p.c.metrics), color: "#2f6fdf" },
      ],
      rings: [{ color: "#1f8a4c", test: (p) => p.c.id === chosen }, { color: "#e0a000", test: (p) => p.c.id === state.selected }],
      tip: (p) => candidateTip(p.c),
      click: (p) => select(p.c.id, true),
    });
    put(box, controls, canvas,
      h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:var(--accent)" }), "measured"), h("span", {}, h("i", { style: "background:#9db8ef;border-color:#9db8ef" }), "not measured"),
        h("span", {}, `${pts.length} points`), h("span", {}, "line: front of the drawn points; drag to pan, wheel to zoom, double-click to reset")));
    return;
  }
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
  svg.append(el("polyline", { class: "front", points: front.map((p) => `${px(p.x)},${py(p.y)}`).join(" ") }));
  // Smaller dots when there are many, so hollow (not measured) ones stay recognisable.
  const radius = pts.length > 400 ? 2.5 : pts.length > 100 ? 3.5 : 4.5;
  for (const p of pts) {
    const cls = ["point", p.c.metrics ? "evaluated" : "pending", p.c.id === state.selected ? "selected" : "", p.c.id === chosen ? "chosen" : ""].join(" ");
    const dot = el("circle", { class: cls, cx: px(p.x), cy: py(p.y), r: radius, "data-id": p.c.id });
    dot.addEventListener("mouseenter", (e) => {
      put(tooltip, candidateTip(p.c));
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

/// Points past this many are drawn on a canvas rather than as SVG nodes.
const SVG_POINTS = 2000;

/// What hovering a candidate shows.
function candidateTip(c) {
  const m = c.metrics;
  return [`#${c.rank + 1}  Ω ${fmt.sci(c.omega)}`, h("br"), `size ${fmt.bytes(c.size_bytes)}, BOPs ${fmt.count(c.bops)}, avg ${c.avg_bits.toFixed(3)} bits`,
    c.latency_ms !== null ? h("span", {}, h("br"), `latency ${c.latency_ms.toFixed(4)} ms`) : "",
    h("br"), m ? `accuracy ${fmt.pct(m.accuracy)}, agreement ${fmt.pct(m.agreement_fp32)}` : "not measured yet", h("br"), `bits ${bitsString(c.bits)}`];
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
    c.bits.forEach((b, i) => {
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
    tooltip.textContent = `#${c.rank + 1} ${layers[i]}: ${c.bits[i]} bits`;
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
  const layers = state.supernet.manifest.layers.map((l) => l.name);
  const cell = (c, i) => h("td", { class: a.bits[i] !== b.bits[i] ? "num changed" : "num" }, c.bits[i]);
  const rows = layers.map((n, i) => h("tr", {}, h("td", {}, n), cell(a, i), cell(b, i)));
  const line = (label, f, get) => h("tr", {}, h("th", {}, label), h("td", { class: "num" }, f(get(a))), h("td", { class: "num" }, f(get(b))));
  put(box, h("div", { class: "scroll", style: "max-height:380px" }, h("table", { class: "diff" },
    h("thead", {}, h("tr", {}, h("th", {}, "layer"), h("th", { class: "num" }, `#${a.rank + 1}`), h("th", { class: "num" }, `#${b.rank + 1}`))),
    h("tbody", {}, line("Ω", fmt.sci, (c) => c.omega), line("size", fmt.bytes, (c) => c.size_bytes), line("BOPs", fmt.count, (c) => c.bops),
      line("accuracy", fmt.pct, (c) => c.metrics && c.metrics.accuracy), rows))),
    h("p", { class: "muted" }, `${layers.filter((_, i) => a.bits[i] !== b.bits[i]).length} of ${layers.length} layers differ`));
}
