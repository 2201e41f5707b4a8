// How fast the dashboard draws a ResNet-50-scale plan front (tens of thousands of candidates) in
// headless Chromium, against fetching the same candidate pages in the same page (the floor any
// view of them pays), and how long a frame takes while panning and hovering, against the 16.7 ms
// of a 60 Hz frame. Median of five loads. Run by scripts/bench: node tests/browser/dashboard.bench.mjs
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canvasDrawn, json, launchBrowser, panAndHover, resnet50Manifest, startServer } from "./harness.mjs";

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const dataDir = mkdtempSync(join(tmpdir(), "bitplan-browser-bench-"));
const { child, base } = await startServer(dataDir);
const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const r50 = await json(base, "POST", "/v1/supernets", resnet50Manifest());
  const plan = await json(base, "POST", `/v1/supernets/${r50.id}/plans`, { pareto: "size" });
  const n = plan.candidate_count;
  const runs = { fetched: [], drawn: [], draw: [], pan: [], hover: [] };
  for (let run = 0; run < 5; run++) {
    await page.goto(`${base}/#/`);
    await page.waitForSelector("tr[data-id]");
    // The baseline: the page's own candidate requests (10,000 a page, in parallel), parsed.
    runs.fetched.push(await page.evaluate(async ([id, n]) => {
      const t0 = performance.now();
      const pages = [];
      for (let o = 0; o < n; o += 10000) pages.push(fetch(`/v1/plans/${id}/candidates?limit=10000&offset=${o}&bits=list`).then((r) => r.json()));
      const got = (await Promise.all(pages)).reduce((k, p) => k + p.candidates.length, 0);
      if (got !== n) throw new Error(`fetched ${got} of ${n}`);
      return performance.now() - t0;
    }, [plan.id, n]));
    const t = Date.now();
    await page.goto(`${base}/#/plans/${plan.id}`);
    await canvasDrawn(page, n, 120000);
    runs.drawn.push(Date.now() - t);
    const f = await panAndHover(page, "pareto-canvas");
    runs.draw.push(f.draw);
    runs.pan.push(f.pan);
    runs.hover.push(f.hover);
  }
  const [fetched, drawn, draw, pan, hover] = ["fetched", "drawn", "draw", "pan", "hover"].map((k) => median(runs[k]));
  console.log(`${n} candidates: page loaded and drawn in ${drawn.toFixed(0)} ms; their pages fetched and parsed alone ${fetched.toFixed(0)} ms (${(drawn / fetched).toFixed(2)}x); a full canvas draw ${draw.toFixed(1)} ms`);
  console.log(`a frame while panning ${pan.toFixed(1)} ms (${(pan / 16.7).toFixed(2)}x a 60 Hz frame), while hovering ${hover.toFixed(1)} ms (${(hover / 16.7).toFixed(2)}x)`);
} finally {
  await browser.close();
  child.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
}
