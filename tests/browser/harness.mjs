// What the dashboard's browser tests and its benchmark share: the real binary serving the digits
// demo on a free loopback port, Debian's headless Chromium, and JSON calls to the API.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import readline from "node:readline";

export const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const bin = process.env.BITPLAN_BIN || join(repo, "target", "release", "bitplan");

/// `bitplan serve --demo` on its own data directory; resolves once it prints its address.
export async function startServer(dataDir) {
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

/// Chromium from $CHROMIUM or Debian's package; playwright-core downloads no browser.
export function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu"] });
}

export async function json(base, method, path, body) {
  const r = await fetch(base + path, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const v = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(v)}`);
  return v;
}

export async function waitJob(base, id) {
  for (let i = 0; i < 600; i++) {
    const j = await json(base, "GET", `/v1/jobs/${id}`);
    if (["succeeded", "failed", "cancelled"].includes(j.status)) return j;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}

/// ResNet-50's 54 weight layers (torchvision shapes), six bit-widths, traces from a fixed
/// generator: an exact size front of tens of thousands of candidates.
export function resnet50Manifest() {
  let seed = 50;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const layers = [{ name: "conv1", params: 3 * 64 * 49, hw: 112 * 112 }];
  let inp = 64;
  [[64, 256, 3, 56], [128, 512, 4, 28], [256, 1024, 6, 14], [512, 2048, 3, 7]].forEach(([mid, out, n, hw], s) => {
    for (let b = 0; b < n; b++) {
      layers.push({ name: `layer${s + 1}.${b}.conv1`, params: inp * mid, hw: hw * hw }, { name: `layer${s + 1}.${b}.conv2`, params: mid * mid * 9, hw: hw * hw }, { name: `layer${s + 1}.${b}.conv3`, params: mid * out, hw: hw * hw });
      if (b === 0) layers.push({ name: `layer${s + 1}.${b}.downsample`, params: inp * out, hw: hw * hw });
      inp = out;
    }
  });
  layers.push({ name: "fc", params: 2048 * 1000, hw: 1 });
  return { name: "resnet50-scale", bits: [8, 6, 5, 4, 3, 2], layers: layers.map((l) => ({ name: l.name, params: l.params, macs: l.params * l.hw, hessian_trace: Math.exp(4 * (rand() - 0.5)) * l.params / 1e4 })) };
}

/// Resolves once the plan page's canvas has drawn `n` points.
export function canvasDrawn(page, n, timeout) {
  return page.waitForFunction((n) => { const c = document.querySelector("canvas#pareto-canvas"); return c && c.dataset.points === String(n); }, n, { timeout });
}

/// Frames while panning (a drag of 30 steps) and hovering (40 moves) the chart on `canvasId`, each
/// awaited: mean ms per frame, the last full draw, and how far the drag moved point 0 of series 0.
export function panAndHover(page, canvasId) {
  return page.evaluate(async (id) => {
    const c = document.querySelector(`canvas#${id}`);
    const r = c.getBoundingClientRect();
    const frame = () => new Promise((ok) => requestAnimationFrame(ok));
    const at = (type, x, y, buttons) => c.dispatchEvent(new MouseEvent(type, { clientX: r.left + x, clientY: r.top + y, buttons, bubbles: true }));
    const time = async (f) => { const t0 = performance.now(); await f(); return performance.now() - t0; };
    const before = c.chart.screenOf(0, 0);
    const pan = await time(async () => {
      at("mousedown", 300, 200, 1);
      for (let i = 1; i <= 30; i++) { at("mousemove", 300 + 5 * i, 200 + 2 * i, 1); await frame(); }
      at("mouseup", 450, 260, 0);
    });
    await frame();
    const after = c.chart.screenOf(0, 0);
    const hover = await time(async () => {
      for (let i = 0; i < 40; i++) { at("mousemove", 100 + 15 * i, 150 + (i % 7) * 20, 0); await frame(); }
    });
    return { pan: pan / 30, hover: hover / 40, draw: c.chart.lastDrawMs, moved: [after[0] - before[0], after[1] - before[1]] };
  }, canvasId);
}
