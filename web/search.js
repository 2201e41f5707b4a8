// bitplan dashboard: searches. The search page (#/searches/ID) draws the measured front over the
// front its refitted objective predicts, predicted against measured loss per round, and each
// round's fit; every point opens its candidate in the plan the search stored its points in
// (compare, choose and export there). The supernet page lists searches and starts them.
"use strict";

const ROUND_COLORS = ["#6b7385", "#2f6fdf", "#e07b00", "#1f8a4c", "#b03aa8", "#c4352b", "#0f8b8d", "#7a5c00"];
const roundColor = (round) => ROUND_COLORS[round % ROUND_COLORS.length];

/// The cost a search's front is drawn against, by its `pareto` name.
function searchCost(pareto) {
  return {
    avg_bits: { label: "average bits", get: (p) => p.avg_bits, fmt: fmt.fixed(2) },
    size: { label: "size", get: (p) => p.size_bytes, fmt: fmt.bytes },
    bops: { label: "BOPs", get: (p) => p.bops, fmt: fmt.count },
    latency: { label: "latency (ms)", get: (p) => p.latency_ms, fmt: fmt.fixed(3) },
  }[pareto];
}

const LOSS_LABELS = { kl: "KL from fp32", accuracy: "1 − accuracy", agreement: "1 − agreement with fp32", cosine: "1 − cosine with fp32" };

function describeSearch(req) {
  const budgets = Object.entries(req.budgets || {}).map(([k, v]) => `${k.replace("max_", "")} ≤ ${k === "max_avg_bits" ? v : fmt.count(v)}`);
  return [`${(req.method || "search").replace("_", "-")} on ${req.pareto}`, `${req.evaluations} evaluations`, `metric ${req.metric || "kl"}`, ...budgets].join(", ");
}

async function searchView(id) {
  const search = await api("GET", `/v1/searches/${id}`);
  const supernet = await api("GET", `/v1/supernets/${search.supernet_id}`);
  crumbs({ label: "Supernets", href: "#/" }, { label: supernet.name, href: `#/supernets/${supernet.id}` }, { label: `search ${id.slice(0, 16)}…` });
  const r = search.result;
  const jobBox = h("span");
  if (search.job_id && ["pending", "running"].includes(search.status)) {
    followJob(search.job_id, (j, done) => { put(jobBox, progressBar(j)); if (done) route(); });
  }
  const header = h("div", { class: "card toolbar" }, pill(search.status), h("span", {}, describeSearch(search.request)),
    r ? h("span", { class: "muted" }, `${r.evaluations} measured, ${r.reused} reused, ${r.rounds.length} rounds; stopped: ${r.stopped}`) : null,
    r && r.plan_id ? h("a", { href: `#/plans/${r.plan_id}`, id: "search-plan" }, "open every point as a plan") : null, jobBox);
  if (!r) {
    const job = search.job_id && ["failed", "cancelled"].includes(search.status) ? await api("GET", `/v1/jobs/${search.job_id}`) : null;
    put(view, h("h1", {}, `Search on ${supernet.name}`), header,
      job ? h("p", { class: "bad" }, `The search's job ${job.status}: ${job.error || job.progress.message}`) : h("p", { class: "muted" }, "The fronts appear when the search's job is done."));
    return;
  }
  // Searches stored by earlier versions have no points or predicted front.
  const points = r.points || [], predictedFront = r.predicted_front || [];
  // A baseline (or a search's first round with nothing measured before) predicts with the
  // manifest's objective, Ω, not in the metric's units: no diagonal then.
  const fitted = r.model && r.model !== "start";
  const cost = searchCost(r.pareto);
  const loss = LOSS_LABELS[search.request.metric || "kl"];
  const open = (p) => { if (r.plan_id && p.candidate_id) location.hash = `#/plans/${r.plan_id}/${p.candidate_id}`; };
  const tip = (p, label, lines) => [label, h("br"), `${cost.label} ${cost.get(p) === null ? "—" : cost.fmt(cost.get(p))}, size ${fmt.bytes(p.size_bytes)}`, ...lines.flatMap((l) => [h("br"), l]),
    h("br"), `bits ${bitsString(p.bits)}`, p.candidate_id ? h("span", { class: "muted" }, h("br"), "click to open its candidate") : ""];
  const rounds = [...new Set(points.map((p) => p.round))].sort((a, b) => a - b);
  // Whether round k's predictions are losses: a round planned on the start predicted Ω.
  const inLoss = (k) => (r.rounds[k - 1] ? r.rounds[k - 1].model !== "start" : fitted);
  const predictedAs = (k, v) => (v === null || v === undefined ? "— (measured before)" : `${inLoss(k) ? "" : "Ω "}${fmt.sci(v)}`);
  const roundName = (k) => (k ? `round ${k}` : "measured before");

  // The fronts: what the refitted objective predicts, every measured point by round, and the
  // measured front.
  const frontChart = scatterChart({
    id: "search-front",
    x: { label: cost.label, fmt: cost.fmt }, y: { label: `${loss} (log)`, fmt: fmt.sci, log: true },
    series: [
      { name: fitted ? "predicted front" : "front of Ω (the starting objective)", kind: "predicted", points: predictedFront.map((p) => ({ x: cost.get(p), y: p.predicted, p })), color: "#9aa3b5", line: true, radius: 1.5 },
      ...rounds.map((k) => ({ name: roundName(k), points: points.filter((p) => p.round === k).map((p) => ({ x: cost.get(p), y: p.loss, p })), color: roundColor(k), radius: 4 })),
      { name: "measured front", points: r.front.map((p) => ({ x: cost.get(p), y: p.measured.loss, p })), color: "#1d2330", line: true, radius: 0 },
    ],
    tip: (pt, s) => tip(pt.p, s.name, s.kind === "predicted" ? [`predicted ${fmt.sci(pt.p.predicted)}`] : [`measured ${fmt.sci(pt.p.loss)}`, `predicted ${predictedAs(pt.p.round, pt.p.predicted)}`]),
    click: (pt) => open(pt.p),
  });
  const legend = h("div", { class: "legend" },
    h("span", {}, h("i", { style: "background:#9aa3b5;border-color:#9aa3b5" }), fitted ? "predicted front" : "front of Ω"),
    rounds.map((k) => h("span", {}, h("i", { style: `background:${roundColor(k)};border-color:${roundColor(k)}` }), roundName(k))),
    h("span", {}, h("i", { style: "background:#1d2330;border-color:#1d2330;border-radius:0;height:2px" }), "measured front"));

  // Predicted against measured, per round (the diagonal is a perfect prediction). A round
  // planned on the start predicted Ω, not a loss: it shares no axis with the fitted rounds, so
  // "every round" shows the fitted ones when there are any, and it is drawn alone.
  const fitBox = h("div"), fitNote = h("span");
  const drawFit = (only) => {
    let shown = rounds.filter((k) => k > 0 && (only === "" || k === Number(only)));
    const apart = only === "" && shown.some(inLoss) ? shown.filter((k) => !inLoss(k)) : [];
    shown = shown.filter((k) => !apart.includes(k));
    const units = shown.some(inLoss);
    put(fitNote, apart.length ? ` ${apart.map(roundName).join(", ")} predicted Ω: choose ${apart.length > 1 ? "each" : "it"} alone.` : "");
    put(fitBox, scatterChart({
      id: "search-fit",
      x: { label: units ? "predicted (log)" : "Ω predicted (log; not in the metric's units)", fmt: fmt.sci, log: true }, y: { label: "measured (log)", fmt: fmt.sci, log: true },
      diagonal: units,
      series: shown.map((k) => ({ name: roundName(k), points: points.filter((p) => p.round === k && p.predicted !== null).map((p) => ({ x: p.predicted, y: p.loss, p })), color: roundColor(k), radius: 4 })),
      tip: (pt, s) => tip(pt.p, s.name, [`predicted ${predictedAs(pt.p.round, pt.p.predicted)}`, `measured ${fmt.sci(pt.p.loss)}`]),
      click: (pt) => open(pt.p),
    }));
  };
  const roundPick = h("select", { id: "fit-round", onchange: (e) => drawFit(e.target.value) },
    h("option", { value: "" }, "every round"), rounds.filter((k) => k > 0).map((k) => h("option", { value: String(k) }, roundName(k))));
  drawFit("");

  const roundRows = r.rounds.map((x, i) => h("tr", { "data-round": i + 1 },
    h("td", {}, h("i", { class: "swatch", style: `background:${roundColor(i + 1)}` }), ` ${i + 1}`), h("td", { class: "num" }, x.evaluated), h("td", {}, x.model),
    h("td", { class: "num" }, x.fit.spearman === null ? "—" : x.fit.spearman.toFixed(3)), h("td", { class: "num" }, x.model === "start" ? "— (Ω)" : fmt.sci(x.fit.mae)),
    h("td", { class: "num" }, x.fit.ratio == null ? "—" : `${x.fit.ratio.toFixed(2)}×`),
    h("td", { class: "num" }, x.front), h("td", { class: "num" }, x.improved)));
  const frontRows = r.front.map((p) => h("tr", { "data-candidate": p.candidate_id || null },
    h("td", { class: "num" }, cost.get(p) === null ? "—" : cost.fmt(cost.get(p))), h("td", { class: "num" }, fmt.bytes(p.size_bytes)),
    h("td", { class: "num" }, p.predicted.loss === null ? "—" : predictedAs(p.predicted.round, p.predicted.loss)), h("td", { class: "num" }, fmt.sci(p.measured.loss)),
    h("td", { class: "num" }, fmt.sci(p.measured.kl_fp32)), h("td", { class: "num" }, fmt.pct(p.measured.agreement_fp32)), h("td", { class: "num" }, fmt.pct(p.measured.accuracy)),
    h("td", {}, roundName(p.predicted.round)), h("td", { class: "bits" }, bitsString(p.bits)),
    h("td", {}, p.candidate_id ? h("a", { href: `#/plans/${r.plan_id}/${p.candidate_id}` }, "open") : "")));
  put(view, h("h1", {}, `Search on ${supernet.name}`), header,
    h("div", { class: "grid" },
      h("div", {}, h("h2", { style: "margin-top:0" }, "Measured front over the predicted one"), frontChart, legend),
      h("div", {}, h("h2", { style: "margin-top:0" }, "Predicted against measured ", roundPick), fitBox,
        h("p", { class: "muted" }, `each point: a measured configuration, predicted before it was measured; dashed: prediction = measurement. Last fit: ${r.model}.`, fitNote))),
    h("h2", {}, "Rounds"),
    h("table", { id: "rounds" }, h("thead", {}, h("tr", {}, ["round", "measured", "fit planned on", "Spearman", "MAE", "measured / predicted", "front points", "added to the front"].map((c) => h("th", {}, c)))), h("tbody", {}, roundRows)),
    h("h2", {}, `Measured front (${r.front.length} points)`),
    h("div", { class: "scroll" }, h("table", { id: "search-front-table" }, h("thead", {}, h("tr", {}, [cost.label, "size", "predicted", loss, "KL", "agreement", "accuracy", "measured in", "bits", ""].map((c) => h("th", {}, c)))), h("tbody", {}, frontRows))));
}

/// The supernet page's searches: the list, and a form when the model and validation set are in.
function searchSection(supernet, searches) {
  const rows = searches.map((x) => h("tr", { "data-search": x.id },
    h("td", {}, h("a", { href: `#/searches/${x.id}` }, x.id.slice(0, 20) + "…")), h("td", {}, pill(x.status)),
    h("td", {}, describeSearch(x.request)), h("td", { class: "num" }, x.result ? x.result.front.length : ""),
    h("td", { class: "muted" }, x.created_at.slice(0, 19).replace("T", " "))));
  const list = searches.length
    ? h("table", { id: "searches" }, h("thead", {}, h("tr", {}, ["search", "status", "request", "front points", "created"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No searches yet.");
  if (!supernet.model || !supernet.validation) return [h("p", { class: "muted" }, "A search measures: upload the model and the validation set first."), list];
  const field = (name, label, input) => h("label", {}, label, input, h("span", { class: "err", "data-for": name }));
  const choice = (name, options) => h("select", { name }, options.map(([v, l]) => h("option", { value: v }, l)));
  const form = h("form", { class: "plan", id: "search-form", novalidate: true },
    field("evaluations", "evaluations", h("input", { type: "number", name: "evaluations", min: "1", step: "1", value: "24" })),
    field("pareto", "front against", choice("pareto", [["avg_bits", "average bits"], ["size", "size"], ["bops", "BOPs"]])),
    field("budgets.max_avg_bits", "max average bits", h("input", { type: "number", name: "budgets.max_avg_bits", step: "any", min: "0", placeholder: "e.g. 6" })),
    field("metric", "metric", choice("metric", [["kl", "KL from fp32"], ["agreement", "agreement"], ["accuracy", "accuracy (needs labels)"], ["cosine", "cosine"]])),
    field("method", "method", choice("method", [["search", "search (refit and re-plan)"], ["proxy_only", "proxy-only baseline"], ["greedy", "greedy baseline"]])),
    h("div", {}, h("button", { type: "submit" }, "Search"), h("div", { class: "err", "data-for": "" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelectorAll(".err").forEach((e) => (e.textContent = ""));
    form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
    const el = form.elements;
    const body = { pareto: el.pareto.value, evaluations: Number(el.evaluations.value), metric: el.metric.value, method: el.method.value, budgets: {} };
    if (el["budgets.max_avg_bits"].value !== "") body.budgets.max_avg_bits = Number(el["budgets.max_avg_bits"].value);
    try {
      const created = await api("POST", `/v1/supernets/${supernet.id}/searches`, body);
      location.hash = `#/searches/${created.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (e.fields.length) e.fields.forEach((f) => markField(form, f.path, f.reason));
      else markField(form, "", e.message);
    }
  });
  return [form, list];
}
