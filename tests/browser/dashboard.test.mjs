// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// the server runs with the digits demo; screenshots go to tests/artifacts/.
// Run by scripts/test: node tests/browser/dashboard.test.mjs
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { canvasDrawn, json, launchBrowser, panAndHover, repo, resnet50Manifest, startServer, waitJob } from "./harness.mjs";

const artifacts = join(repo, "tests", "artifacts");
mkdirSync(artifacts, { recursive: true });

const results = [];
async function step(name, f) {
  const t = Date.now();
  try {
    await f();
    results.push(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    results.push(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}

const dataDir = mkdtempSync(join(tmpdir(), "bitplan-browser-"));
const { child, base } = await startServer(dataDir);
const browser = await launchBrowser();
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  const jobs = await json(base, "GET", "/v1/jobs");
  const demoJob = await waitJob(base, jobs.jobs[0].id);
  assert.equal(demoJob.status, "succeeded");
  const planId = demoJob.plan_id;
  const { total } = await json(base, "GET", `/v1/plans/${planId}/candidates?limit=1`);
  const sn = (await json(base, "GET", "/v1/supernets")).supernets[0];

  await step("the home page lists the demo supernet", async () => {
    await page.goto(base + "/");
    await page.waitForSelector(`tr[data-id="${sn.id}"]`);
    assert.match(await page.textContent(`tr[data-id="${sn.id}"]`), /digits-cnn/);
  });

  await step("the plan page draws one point per candidate", async () => {
    await page.goto(`${base}/#/plans/${planId}`);
    await page.waitForSelector("svg#pareto circle.point");
    assert.equal(await page.locator("svg#pareto circle.point").count(), total);
    assert.equal(await page.locator("svg#pareto circle.point.evaluated").count(), total, "the demo measured every candidate");
    assert.equal(await page.locator("svg#pareto polyline.front").count(), 1);
    assert.equal(await page.locator("table#candidates tbody tr").count(), total);
    assert.equal(await page.textContent("[data-solver]"), "proven optimal");
    await page.screenshot({ path: join(artifacts, "plan-omega.png"), fullPage: true });
  });

  let picked;
  await step("clicking a point highlights its table row", async () => {
    const point = page.locator("svg#pareto circle.point").nth(Math.floor(total / 2));
    picked = await point.getAttribute("data-id");
    await point.click();
    await page.waitForSelector(`table#candidates tr.highlight[data-id="${picked}"]`);
    assert.equal(await page.locator("table#candidates tr.highlight").count(), 1);
  });

  await step("marking it chosen is stored and survives a reload", async () => {
    await page.click(`table#candidates tr[data-id="${picked}"] button[data-action="choose"]`);
    await page.waitForSelector(`table#candidates tr.chosen[data-id="${picked}"]`);
    assert.equal((await json(base, "GET", `/v1/plans/${planId}`)).chosen_candidate_id, picked);
    await page.reload();
    await page.waitForSelector(`table#candidates tr.chosen[data-id="${picked}"]`);
    assert.match(await page.textContent(`table#candidates tr[data-id="${picked}"] button[data-action="choose"]`), /chosen/);
    assert.equal(await page.locator("svg#pareto circle.point.chosen").count(), 1);
  });

  await step("accuracy on the y axis, the table sorted by it, two candidates compared", async () => {
    await page.selectOption("#y-axis", "accuracy");
    assert.equal(await page.locator("svg#pareto circle.point").count(), total);
    await page.click('th[data-key="accuracy"]');
    await page.click('th[data-key="accuracy"]'); // descending
    const first = await page.locator("table#candidates tbody tr").first().getAttribute("data-id");
    const best = (await json(base, "GET", `/v1/plans/${planId}/candidates?sort=accuracy&order=desc&limit=1`)).candidates[0];
    const firstAcc = (await json(base, "GET", `/v1/candidates/${first}`)).metrics.accuracy;
    assert.equal(firstAcc, best.metrics.accuracy);
    const boxes = page.locator("table#candidates tbody tr td:nth-child(2) input");
    await boxes.nth(0).check();
    await boxes.nth(3).check();
    await page.waitForSelector("table.diff");
    assert.equal(await page.locator("table.diff tbody tr").count(), 4 + sn.layers);
    assert.ok(await page.locator("canvas#heatmap").isVisible());
    await page.screenshot({ path: join(artifacts, "plan-accuracy-compare.png"), fullPage: true });
  });

  await step("the plan form shows validation errors next to their field", async () => {
    await page.goto(`${base}/#/supernets/${sn.id}`);
    await page.waitForSelector("form.plan");
    assert.ok((await page.locator("table tbody tr").count()) >= sn.layers);
    await page.fill('input[name="budgets.max_avg_bits"]', "-1");
    await page.click('form.plan button[type="submit"]');
    await page.waitForSelector('[data-for="budgets.max_avg_bits"]:not(:empty)');
    assert.match(await page.textContent('[data-for="budgets.max_avg_bits"]'), /non-negative/);
    assert.ok(await page.locator('input[name="budgets.max_avg_bits"].invalid').count());
    await page.fill('input[name="budgets.max_avg_bits"]', "1");
    await page.click('form.plan button[type="submit"]');
    await page.waitForFunction(() => /smallest achievable 2\.02264/.test(document.querySelector('[data-for="budgets.max_avg_bits"]').textContent));
    await page.fill('input[name="budgets.max_avg_bits"]', "4");
    await page.fill('input[name="mip_gap"]', "1.5");
    await page.click('form.plan button[type="submit"]');
    await page.waitForSelector('[data-for="mip_gap"]:not(:empty)');
    assert.match(await page.textContent('[data-for="mip_gap"]'), /below 1/);
    await page.screenshot({ path: join(artifacts, "supernet-form-errors.png"), fullPage: true });
  });

  await step("a plan from the form, then its candidates evaluated with live progress", async () => {
    await page.fill('input[name="budgets.max_avg_bits"]', "4");
    await page.fill('input[name="mip_gap"]', "0.01");
    await page.fill('input[name="time_limit_s"]', "5");
    await page.check('input[name="paper_pool"]');
    await page.click('form.plan button[type="submit"]');
    await page.waitForFunction(() => location.hash.startsWith("#/plans/"));
    await page.waitForSelector("svg#pareto circle.point");
    const newPlan = page.url().split("#/plans/")[1];
    const { request } = await json(base, "GET", `/v1/plans/${newPlan}`);
    assert.deepEqual([request.mip_gap, request.time_limit_s], [0.01, 5]);
    assert.match(await page.textContent("main"), /within 0\.01 of the optimum/);
    const cands = (await json(base, "GET", `/v1/plans/${newPlan}/candidates`)).candidates;
    assert.ok(cands.length > 1, "the paper pool has several candidates");
    assert.equal(await page.locator("svg#pareto circle.point").count(), cands.length);
    const pending = cands.filter((c) => !c.metrics).length;
    assert.equal(await page.locator("svg#pareto circle.point.pending").count(), pending);
    await page.click("text=Evaluate all");
    await page.waitForSelector(".job .pill.succeeded", { timeout: 60000 });
    await page.waitForFunction((n) => document.querySelectorAll("svg#pareto circle.point.evaluated").length === n, cands.length, { timeout: 10000 });
    await page.screenshot({ path: join(artifacts, "plan-evaluated.png"), fullPage: true });
  });

  await step("the fleet view has one row per device", async () => {
    const fleet = JSON.parse(readFileSync(join(repo, "examples/fleets/roofline.fleet.json"), "utf8"));
    const f = await json(base, "POST", "/v1/fleets", fleet);
    const fp = await json(base, "POST", `/v1/supernets/${sn.id}/fleet-plans`, { fleet_id: f.id, min_accuracy: 0.98 });
    await waitJob(base, fp.job.id);
    await page.goto(`${base}/#/fleet-plans/${fp.id}`);
    await page.waitForSelector("table#fleet tbody tr");
    assert.equal(await page.locator("table#fleet tbody tr").count(), fleet.devices.length);
    assert.match(await page.textContent('tr[data-device="legacy-dsp"]'), /infeasible/);
    await page.screenshot({ path: join(artifacts, "fleet.png"), fullPage: true });
  });

  await step("a ResNet-18 front (hundreds of candidates) renders every point", async () => {
    const manifest = JSON.parse(readFileSync(join(repo, "examples/resnet18.manifest.json"), "utf8"));
    const r18 = await json(base, "POST", "/v1/supernets", manifest);
    const plan = await json(base, "POST", `/v1/supernets/${r18.id}/plans`, { pareto: "size" });
    const t = Date.now();
    await page.goto(`${base}/#/plans/${plan.id}`);
    await page.waitForFunction((n) => document.querySelectorAll("svg#pareto circle.point").length === n, plan.candidate_count, { timeout: 30000 });
    // Past 1000 rows the table renders those in view.
    assert.match(await page.textContent("main"), new RegExp(`${plan.candidate_count} of ${plan.candidate_count} shown`));
    assert.ok(await page.locator("table#candidates tbody tr:not(.spacer)").count() < 200);
    results.push(`     (${plan.candidate_count} candidates drawn and listed in ${Date.now() - t} ms)`);
    // Nothing is measured: the measured columns are empty, not zero.
    assert.ok(!(await page.textContent("table#candidates tbody")).includes("%"), "unmeasured candidates show no accuracy");
    await page.locator("svg#pareto circle.point").nth(100).dispatchEvent("click");
    await page.waitForSelector("table#candidates tr.highlight");
    await page.screenshot({ path: join(artifacts, "plan-resnet18-front.png") });
  });

  let searchId;
  await step("a search from the supernet page: fronts, fit per round, rounds; a point opens its candidate", async () => {
    await page.goto(`${base}/#/supernets/${sn.id}`);
    await page.waitForSelector("form#search-form");
    await page.fill('#search-form input[name="evaluations"]', "0");
    await page.click('#search-form button[type="submit"]');
    await page.waitForSelector('#search-form [data-for="evaluations"]:not(:empty)');
    assert.match(await page.textContent('#search-form [data-for="evaluations"]'), /within 1\.\./);
    await page.fill('#search-form input[name="evaluations"]', "12");
    await page.fill('#search-form input[name="budgets.max_avg_bits"]', "6");
    // The demo measured its size front: a BOPs front has configurations still to measure.
    await page.selectOption('#search-form select[name="pareto"]', "bops");
    await page.click('#search-form button[type="submit"]');
    await page.waitForFunction(() => location.hash.startsWith("#/searches/"));
    searchId = page.url().split("#/searches/")[1];
    const search = await json(base, "GET", `/v1/searches/${searchId}`);
    await waitJob(base, search.job_id);
    const r = (await json(base, "GET", `/v1/searches/${searchId}`)).result;
    assert.ok(r.rounds.length >= 1 && r.evaluations > 0, JSON.stringify({ stopped: r.stopped, rounds: r.rounds }));
    await page.waitForSelector("canvas#search-front[data-points]", { timeout: 20000 });
    assert.equal(Number(await page.getAttribute("canvas#search-front", "data-points")), r.predicted_front.length + r.points.length);
    // The demo measured before, so every round planned on a fit: all on the fit chart, against
    // the diagonal.
    assert.ok(r.rounds.every((x) => x.model !== "start"), JSON.stringify(r.rounds));
    const predictedThenMeasured = r.points.filter((p) => p.round > 0 && p.predicted !== null);
    assert.equal(Number(await page.getAttribute("canvas#search-fit", "data-points")), predictedThenMeasured.length);
    assert.equal(await page.getAttribute("canvas#search-fit", "data-diagonal"), "yes");
    assert.equal(await page.locator("table#rounds tbody tr").count(), r.rounds.length);
    assert.equal(await page.locator("table#search-front-table tbody tr").count(), r.front.length);
    // One round alone on the fit chart.
    await page.selectOption("#fit-round", "1");
    await page.waitForFunction((n) => document.querySelector("canvas#search-fit").dataset.points === String(n), predictedThenMeasured.filter((p) => p.round === 1).length);
    assert.equal(await page.getAttribute("canvas#search-fit", "data-diagonal"), "yes");
    // Hovering a point names its prediction and measurement.
    const [hx, hy] = await page.evaluate(() => document.querySelector("canvas#search-fit").chart.screenOf(0, 0));
    await page.mouse.move(hx, hy);
    await page.waitForSelector("#tooltip:not([hidden])");
    assert.match(await page.textContent("#tooltip"), /predicted [0-9.e+-]+measured [0-9.e+-]+/);
    await page.screenshot({ path: join(artifacts, "search.png"), fullPage: true });
    // A measured point opens its candidate in the search's plan, selected, with its measurement.
    // The measured point farthest from any other drawn point, so the click names it alone.
    const [px, py, cid] = await page.evaluate(() => {
      const c = document.querySelector("canvas#search-front").chart;
      const drawn = c.series.flatMap((s, si) => (s.radius === 0 ? [] : s.points.map((p, i) => [si, i])));
      let best = null;
      for (const [si, i] of drawn.filter(([si]) => c.series[si].name.startsWith("round"))) {
        const [x, y] = c.screenOf(si, i);
        const gap = Math.min(...drawn.filter(([sj, j]) => sj !== si || j !== i).map(([sj, j]) => { const [u, v] = c.screenOf(sj, j); return Math.hypot(u - x, v - y); }));
        if (!best || gap > best[3]) best = [x, y, c.series[si].points[i].p.candidate_id, gap];
      }
      return best;
    });
    await page.mouse.click(Math.round(px), Math.round(py));
    await page.waitForFunction((id) => location.hash.endsWith(id), cid);
    await page.waitForSelector(`table#candidates tr.highlight[data-id="${cid}"]`);
    assert.match(await page.textContent(`table#candidates tr[data-id="${cid}"]`), /%/, "its measurement is joined");
    assert.match(await page.textContent("main"), /points of search/);
  });

  await step("a search with nothing measured before: its first round (Omega) drawn apart from the fitted ones", async () => {
    const manifest = JSON.parse(readFileSync(join(repo, "examples/digits-cnn.manifest.json"), "utf8"));
    const fresh = await json(base, "POST", "/v1/supernets", { ...manifest, name: "digits, nothing measured" });
    for (const [what, file] of [["model", "testdata/digits-cnn/digits_cnn.onnx"], ["validation", "testdata/digits-cnn/digits_val.npz"]]) {
      const r = await fetch(`${base}/v1/supernets/${fresh.id}/${what}`, { method: "PUT", headers: { "content-type": "application/octet-stream" }, body: readFileSync(join(repo, file)) });
      assert.ok(r.ok, `${what}: ${r.status} ${await r.text()}`);
    }
    const created = await json(base, "POST", `/v1/supernets/${fresh.id}/searches`, { pareto: "avg_bits", evaluations: 7, per_round: 4, objective: "additive" });
    await waitJob(base, created.job.id);
    const r = (await json(base, "GET", `/v1/searches/${created.id}`)).result;
    assert.deepEqual(r.rounds.map((x) => x.model !== "start"), [false, ...r.rounds.slice(1).map(() => true)], JSON.stringify(r.rounds));
    assert.ok(r.rounds.length >= 2, JSON.stringify(r.rounds));
    await page.goto(`${base}/#/searches/${created.id}`);
    await page.waitForSelector("canvas#search-fit[data-points]", { timeout: 20000 });
    const later = r.points.filter((p) => p.round > 1).length;
    assert.equal(Number(await page.getAttribute("canvas#search-fit", "data-points")), later);
    assert.equal(await page.getAttribute("canvas#search-fit", "data-diagonal"), "yes");
    assert.match(await page.textContent("main"), /round 1 predicted Ω: choose it alone/);
    await page.selectOption("#fit-round", "1");
    await page.waitForFunction((n) => document.querySelector("canvas#search-fit").dataset.points === String(n), r.points.filter((p) => p.round === 1).length);
    assert.equal(await page.getAttribute("canvas#search-fit", "data-diagonal"), "no");
    // Round 1's predictions are Omega wherever they are shown: no MAE against a loss.
    assert.match(await page.textContent('table#rounds tr[data-round="1"]'), /— \(Ω\)/);
    assert.doesNotMatch(await page.textContent('table#rounds tr[data-round="2"]'), /Ω/);
    // Measured over predicted, as the API gives it: none for round 1, its value for round 2.
    const ratioCell = (k) => page.textContent(`table#rounds tr[data-round="${k}"] td:nth-child(6)`);
    assert.equal(r.rounds[0].fit.ratio, null);
    assert.equal(await ratioCell(1), "—");
    assert.equal(await ratioCell(2), `${r.rounds[1].fit.ratio.toFixed(2)}×`);
    const fromRound1 = r.front.filter((p) => p.predicted.round === 1).length;
    const omegas = await page.$$eval("table#search-front-table tbody tr", (rows) => rows.filter((tr) => tr.cells[2].textContent.startsWith("Ω ")).length);
    assert.equal(omegas, fromRound1);
  });

  await step("a ResNet-50-scale front draws every point on a canvas; a drag pans it; the table is virtual", async () => {
    // How fast it draws and how smooth panning is are measured by scripts/bench, not asserted here.
    const r50 = await json(base, "POST", "/v1/supernets", resnet50Manifest());
    const plan = await json(base, "POST", `/v1/supernets/${r50.id}/plans`, { pareto: "size" });
    assert.ok(plan.candidate_count >= 29348, `${plan.candidate_count} candidates`);
    const t = Date.now();
    await page.goto(`${base}/#/plans/${plan.id}`);
    await canvasDrawn(page, plan.candidate_count, 60000);
    results.push(`     (${plan.candidate_count} candidates fetched and drawn in ${Date.now() - t} ms)`);
    // The drag moved the points with the mouse: 150 px right, 60 px down.
    const { moved } = await panAndHover(page, "pareto-canvas");
    assert.ok(Math.abs(moved[0] - 150) < 1 && Math.abs(moved[1] - 60) < 1, `a point moved by ${moved}`);
    // The table renders the rows in view, not 29,000 of them; scrolling reaches the last.
    const rows = await page.locator("table#candidates tbody tr:not(.spacer)").count();
    assert.ok(rows > 10 && rows < 200, `${rows} rows rendered`);
    await page.$eval("#candidates", (t) => { const box = t.closest(".scroll"); box.scrollTop = box.scrollHeight; });
    await page.waitForFunction((n) => [...document.querySelectorAll("table#candidates tbody tr:not(.spacer) td:nth-child(3)")].some((td) => td.textContent === String(n)), plan.candidate_count);
    // A point clicked on the canvas brings its row into view, highlighted.
    await page.evaluate(() => document.querySelector("canvas#pareto-canvas").dispatchEvent(new MouseEvent("dblclick", { bubbles: true })));
    // The candidates drawn within 8 px of the clicked point (its row scrolls the page after).
    const [cx, cy, near] = await page.evaluate(() => {
      const c = document.querySelector("canvas#pareto-canvas").chart;
      const s = c.series[1];
      const [x, y] = c.screenOf(1, Math.floor(s.points.length / 3));
      return [x, y, s.points.filter((p, i) => { const [px, py] = c.screenOf(1, i); return Math.hypot(px - x, py - y) <= 8; }).map((p) => p.c.id)];
    });
    await page.mouse.click(cx, cy);
    await page.waitForSelector("table#candidates tr.highlight");
    const highlighted = await page.getAttribute("table#candidates tr.highlight", "data-id");
    assert.ok(near.includes(highlighted), `${highlighted} is a point under the click`);
    await page.screenshot({ path: join(artifacts, "plan-resnet50-scale-front.png") });
  });

  let measured;
  await step("a supernet with measured sensitivity draws it per layer and bit-width", async () => {
    measured = await json(base, "POST", "/v1/supernets", {
      name: "measured", bits: [8, 4, 2], sensitivity_metric: "kl", layers: [
        { name: "stem", params: 100, macs: 1000, sensitivity: { 8: 1e-5, 4: 0.02, 2: 0.9 } },
        { name: "head", params: 400, macs: 400, hessian_trace: -0.3, sensitivity: { 8: 1e-6, 4: 0.001 }, bits: [8, 4] }] });
    await page.goto(`${base}/#/supernets/${measured.id}`);
    await page.waitForSelector("table#layers tr[data-layer=stem] .sens-bit");
    assert.equal(await page.locator("table#layers tr[data-layer=stem] .sens-bit").count(), 3);
    assert.equal(await page.locator("table#layers tr[data-layer=head] .sens-bit.absent").count(), 1);
    const heights = await page.$$eval("table#layers tr[data-layer=stem] .sens-bit", (bars) => bars.map((b) => b.getBoundingClientRect().height));
    assert.ok(heights[0] < heights[1] && heights[1] < heights[2], `fewer bits, taller bars: ${heights}`);
    assert.match(await page.textContent("table#layers thead"), /measured sensitivity by bit-width \(kl/);
    assert.match(await page.textContent("table#layers tr[data-layer=head]"), /measured sensitivity/);
    await page.screenshot({ path: join(artifacts, "supernet-measured-sensitivity.png") });
  });

  await step("no script errors, no stray text", async () => {
    assert.deepEqual(pageErrors, []);
    for (const [hash, ready] of [["#/", "tr[data-id]"], [`#/supernets/${sn.id}`, "form.plan"], [`#/supernets/${measured.id}`, "form.plan"], [`#/plans/${planId}`, "svg#pareto circle.point"], [`#/searches/${searchId}`, "canvas#search-front[data-points]"]]) {
      await page.goto(`${base}/${hash}`);
      await page.reload();
      await page.waitForSelector(ready);
      assert.doesNotMatch(await page.textContent("main"), /\bnull\b|undefined|NaN/, hash);
    }
  });
} catch (e) {
  failed = true;
} finally {
  await browser.close();
  child.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
  console.log(results.join("\n"));
  console.log(`screenshots in ${artifacts}`);
}
process.exit(failed ? 1 : 0);
