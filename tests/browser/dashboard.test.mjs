// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// the server runs with the digits demo; screenshots go to tests/artifacts/.
// Run by scripts/test: node tests/browser/dashboard.test.mjs
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import readline from "node:readline";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.BITPLAN_BIN || join(repo, "target", "release", "bitplan");
const artifacts = join(repo, "tests", "artifacts");
mkdirSync(artifacts, { recursive: true });
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";

async function startServer(dataDir) {
  const child = spawn(bin, ["serve", "--demo", "--addr", "127.0.0.1:0", "--data-dir", dataDir], {
    cwd: repo, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" },
  });
  const rl = readline.createInterface({ input: child.stdout });
  const line = await new Promise((resolve, reject) => {
    rl.once("line", resolve);
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { child, base: line.replace("bitplan: listening on ", "").trim() };
}

async function json(base, method, path, body) {
  const r = await fetch(base + path, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const v = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(v)}`);
  return v;
}

async function waitJob(base, id) {
  for (let i = 0; i < 600; i++) {
    const j = await json(base, "GET", `/v1/jobs/${id}`);
    if (["succeeded", "failed", "cancelled"].includes(j.status)) return j;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}

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
const browser = await chromium.launch({ executablePath: browserPath, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
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
    assert.equal(await page.locator("table#candidates tbody tr").count(), plan.candidate_count);
    results.push(`     (${plan.candidate_count} candidates drawn and listed in ${Date.now() - t} ms)`);
    // Nothing is measured: the measured columns are empty, not zero.
    assert.ok(!(await page.textContent("table#candidates tbody")).includes("%"), "unmeasured candidates show no accuracy");
    await page.locator("svg#pareto circle.point").nth(100).dispatchEvent("click");
    await page.waitForSelector("table#candidates tr.highlight");
    await page.screenshot({ path: join(artifacts, "plan-resnet18-front.png") });
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
    for (const [hash, ready] of [["#/", "tr[data-id]"], [`#/supernets/${sn.id}`, "form.plan"], [`#/supernets/${measured.id}`, "form.plan"], [`#/plans/${planId}`, "svg#pareto circle.point"]]) {
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
