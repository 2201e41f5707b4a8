// bitplan dashboard: a scatter chart on one canvas, for fronts of tens of thousands of points
// (one SVG node per point stops being usable there). Pan by dragging, zoom with the wheel,
// double-click to reset; hover and click find the nearest point through a grid of screen cells.
"use strict";

/// A scatter chart. `spec`: {id, x: {label, fmt, log}, y: {label, fmt, log}, series, tip(point,
/// series), click(point, series), diagonal, rings: [{color, test(point)}]}. Each series: {name,
/// points: [{x, y, ...}], color, hollow, line, radius (0: the line alone)}. Returns the canvas; `canvas.chart` has `draw()`, `screenOf
/// (series, index)` (client coordinates, for tests) and `lastDrawMs`.
function scatterChart(spec) {
  const canvas = document.createElement("canvas");
  canvas.id = spec.id;
  canvas.className = "scatter";
  const L = 70, R = 20, T = 14, B = 40;
  const usable = (v) => v !== null && v !== undefined && Number.isFinite(v);
  // On a log axis a value at or below 0 (a loss of 0: full agreement) is drawn at half the least
  // positive value, the axis's floor.
  const floorOf = (key) => {
    let least = Infinity;
    for (const s of spec.series) for (const p of s.points) if (usable(p[key]) && p[key] > 0 && p[key] < least) least = p[key];
    return Number.isFinite(least) ? least / 2 : 1;
  };
  const floors = { x: spec.x.log ? floorOf("x") : 0, y: spec.y.log ? floorOf("y") : 0 };
  const tf = (axis, v, key) => (axis.log ? Math.log10(v > 0 ? v : floors[key]) : v);
  const series = spec.series.map((s) => ({ ...s, points: s.points.filter((p) => usable(p.x) && usable(p.y)) }));
  const all = series.flatMap((s) => s.points);
  const extent = (axis, key) => {
    let lo = Infinity, hi = -Infinity;
    for (const p of all) { const v = tf(axis, p[key], key); if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!Number.isFinite(lo)) return [0, 1];
    if (hi === lo) return [lo - 0.5, hi + 0.5];
    const pad = (hi - lo) * 0.03;
    return [lo - pad, hi + pad];
  };
  const home = { x: extent(spec.x, "x"), y: extent(spec.y, "y") };
  let view = { x: home.x.slice(), y: home.y.slice() };
  let size = { w: 800, h: 380 };
  // Each series' coordinates in axis units (log10 on a log axis), computed once.
  for (const s of series) {
    s.tx = Float64Array.from(s.points, (p) => tf(spec.x, p.x, "x"));
    s.ty = Float64Array.from(s.points, (p) => tf(spec.y, p.y, "y"));
  }
  // The points, axes and lines are drawn on `layer`; the canvas shows it with the rings and the
  // hovered point on top, so hovering redraws no point and a drag shifts the layer until the
  // button is released.
  const layer = document.createElement("canvas");
  let hover = null, grid = null, shift = null;
  const CELL = 8;

  const px = (v) => L + ((v - view.x[0]) / (view.x[1] - view.x[0])) * (size.w - L - R);
  const py = (v) => T + (1 - (v - view.y[0]) / (view.y[1] - view.y[0])) * (size.h - T - B);
  const sx = (s, i) => px(s.tx[i]), sy = (s, i) => py(s.ty[i]);

  function draw() {
    const started = performance.now();
    size = { w: Math.max(200, canvas.clientWidth || 800), h: Math.max(160, canvas.clientHeight || 380) };
    const dpr = window.devicePixelRatio || 1;
    for (const c of [canvas, layer]) {
      if (c.width !== Math.round(size.w * dpr)) c.width = Math.round(size.w * dpr);
      if (c.height !== Math.round(size.h * dpr)) c.height = Math.round(size.h * dpr);
    }
    const ctx = layer.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size.w, size.h);
    ctx.font = "11px system-ui"; ctx.lineWidth = 1;
    // Grid, ticks and labels.
    for (let i = 0; i <= 4; i++) {
      const gx = view.x[0] + ((view.x[1] - view.x[0]) * i) / 4, gy = view.y[0] + ((view.y[1] - view.y[0]) * i) / 4;
      ctx.strokeStyle = "#eef0f5";
      ctx.beginPath(); ctx.moveTo(px(gx), T); ctx.lineTo(px(gx), size.h - B); ctx.moveTo(L, py(gy)); ctx.lineTo(size.w - R, py(gy)); ctx.stroke();
      ctx.fillStyle = "#6b7385";
      ctx.textAlign = "center"; ctx.fillText(spec.x.fmt(spec.x.log ? 10 ** gx : gx), px(gx), size.h - B + 14);
      ctx.textAlign = "right"; ctx.fillText(spec.y.fmt(spec.y.log ? 10 ** gy : gy), L - 6, py(gy) + 4);
    }
    ctx.strokeStyle = "#9aa3b5";
    ctx.beginPath(); ctx.moveTo(L, size.h - B); ctx.lineTo(size.w - R, size.h - B); ctx.moveTo(L, T); ctx.lineTo(L, size.h - B); ctx.stroke();
    ctx.fillStyle = "#6b7385"; ctx.textAlign = "center";
    ctx.fillText(spec.x.label, (L + size.w - R) / 2, size.h - 6);
    ctx.save(); ctx.translate(14, (T + size.h - B) / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(spec.y.label, 0, 0); ctx.restore();
    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, size.w - L - R, size.h - T - B); ctx.clip();
    if (spec.diagonal) {
      const lo = Math.max(view.x[0], view.y[0]), hi = Math.min(view.x[1], view.y[1]);
      ctx.strokeStyle = "#c9ced9"; ctx.setLineDash([4, 4]);
      ctx.beginPath(); ctx.moveTo(px(lo), py(lo)); ctx.lineTo(px(hi), py(hi)); ctx.stroke(); ctx.setLineDash([]);
    }
    for (const s of series) {
      const n = s.points.length;
      if (s.line && n > 1) {
        ctx.strokeStyle = s.color; ctx.globalAlpha = 0.7; ctx.lineWidth = 1.5;
        ctx.beginPath();
        for (let i = 0; i < n; i++) (i ? ctx.lineTo(sx(s, i), sy(s, i)) : ctx.moveTo(sx(s, i), sy(s, i)));
        ctx.stroke(); ctx.globalAlpha = 1; ctx.lineWidth = 1;
      }
      if (s.radius === 0) continue;
      const r = radiusOf(s);
      ctx.fillStyle = s.color; ctx.strokeStyle = s.color;
      // One path per series: thousands of points cost one fill.
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const x = sx(s, i), y = sy(s, i);
        if (x < L - r || x > size.w - R + r || y < T - r || y > size.h - B + r) continue;
        if (r <= 2) ctx.rect(x - r, y - r, 2 * r, 2 * r);
        else { ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI); }
      }
      if (s.hollow) ctx.stroke(); else ctx.fill();
    }
    ctx.restore();
    grid = null;
    shift = null;
    show();
    chart.lastDrawMs = performance.now() - started;
    canvas.dataset.points = String(series.reduce((n, s) => n + (s.radius === 0 ? 0 : s.points.length), 0));
    canvas.dataset.diagonal = spec.diagonal ? "yes" : "no";
    canvas.dataset.drawMs = chart.lastDrawMs.toFixed(1);
  }

  const radiusOf = (s) => s.radius || (s.points.length > 2000 ? 1.5 : s.points.length > 200 ? 2.5 : 4);

  /// The layer (shifted while dragging), then the rings and the hovered point.
  function show() {
    const dpr = window.devicePixelRatio || 1;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(layer, 0, 0);
    if (shift) {
      // The axes stay; the plot area moves with the pointer (redrawn when the drag ends).
      ctx.save();
      ctx.beginPath(); ctx.rect(L * dpr, T * dpr, (size.w - L - R) * dpr, (size.h - T - B) * dpr); ctx.clip();
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(layer, shift.x * dpr, shift.y * dpr);
      ctx.restore();
      return;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, size.w - L - R, size.h - T - B); ctx.clip();
    const ring = (s, i, color, width) => { ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath(); ctx.arc(sx(s, i), sy(s, i), 6, 0, 2 * Math.PI); ctx.stroke(); };
    for (const { color, test } of spec.rings || []) {
      for (const s of series) if (s.radius !== 0) s.points.forEach((p, i) => test(p) && ring(s, i, color, 3));
    }
    if (hover) ring(series[hover[0]], hover[1], "#1d2330", 1.5);
    ctx.restore();
  }

  /// Where the drawing starts, in client coordinates (inside the canvas's border).
  const origin = () => {
    const rect = canvas.getBoundingClientRect();
    return [rect.left + canvas.clientLeft, rect.top + canvas.clientTop];
  };

  /// The drawn points by screen cell, built when first asked after a draw.
  function cells() {
    if (grid) return grid;
    grid = new Map();
    series.forEach((s, si) => {
      if (s.radius === 0) return;
      for (let i = 0; i < s.points.length; i++) {
        const x = sx(s, i), y = sy(s, i);
        if (x < L || x > size.w - R || y < T || y > size.h - B) continue;
        const key = Math.floor(x / CELL) * 65536 + Math.floor(y / CELL);
        const cell = grid.get(key);
        if (cell) cell.push(si, i); else grid.set(key, [si, i]);
      }
    });
    return grid;
  }

  /// The drawn point nearest a client position, within 8 px: [series, index] or null; on a tie
  /// the point drawn last (on top) wins.
  function nearest(clientX, clientY) {
    const [left, top] = origin();
    const x = clientX - left, y = clientY - top;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    const g = cells();
    let best = null, bestD = 64;
    for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
      const cell = g.get((cx + dx) * 65536 + cy + dy) || [];
      for (let k = 0; k < cell.length; k += 2) {
        const s = series[cell[k]], i = cell[k + 1];
        const d = (sx(s, i) - x) ** 2 + (sy(s, i) - y) ** 2;
        if (d <= bestD) { bestD = d; best = [cell[k], i]; }
      }
    }
    return best;
  }

  /// A new view: the cells of the old one no longer say where points are.
  const setView = (v) => { view = v; grid = null; };
  // One frame runs what is pending: a full draw when one was asked for, else the overlay.
  let frame = 0, pending = null;
  const later = (f) => {
    pending = f === draw || !pending ? f : pending;
    if (!frame) frame = requestAnimationFrame(() => { const run = pending; frame = 0; pending = null; run(); });
  };
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, view: { x: view.x.slice(), y: view.y.slice() }, moved: false }; });
  const release = () => {
    if (drag && drag.moved) later(draw);
    const was = drag;
    setTimeout(() => { if (drag === was) drag = null; });
  };
  canvas.addEventListener("mouseup", release);
  canvas.addEventListener("mousemove", (e) => {
    if (drag && (e.buttons & 1)) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      const kx = (drag.view.x[1] - drag.view.x[0]) / (size.w - L - R), ky = (drag.view.y[1] - drag.view.y[0]) / (size.h - T - B);
      setView({ x: [drag.view.x[0] - dx * kx, drag.view.x[1] - dx * kx], y: [drag.view.y[0] + dy * ky, drag.view.y[1] + dy * ky] });
      shift = { x: dx, y: dy };
      hover = null;
      tooltip.hidden = true;
      later(show);
      return;
    }
    if (drag && drag.moved) release();
    const found = nearest(e.clientX, e.clientY);
    const changed = String(found) !== String(hover);
    hover = found;
    if (!found) { tooltip.hidden = true; if (changed) later(show); return; }
    const p = series[found[0]].points[found[1]];
    put(tooltip, spec.tip(p, series[found[0]]));
    tooltip.hidden = false;
    // Beside the pointer, kept inside the window.
    tooltip.style.left = `${Math.min(e.clientX + 12, window.innerWidth - tooltip.offsetWidth - 8)}px`;
    tooltip.style.top = `${Math.min(e.clientY + 12, window.innerHeight - tooltip.offsetHeight - 8)}px`;
    if (changed) later(show);
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; if (drag) release(); if (hover) { hover = null; later(show); } });
  canvas.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const found = nearest(e.clientX, e.clientY);
    if (found && spec.click) spec.click(series[found[0]].points[found[1]], series[found[0]]);
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [left, top] = origin();
    const fx = (e.clientX - left - L) / (size.w - L - R), fy = 1 - (e.clientY - top - T) / (size.h - T - B);
    const k = e.deltaY > 0 ? 1.25 : 0.8;
    const zoom = (range, f) => { const at = range[0] + f * (range[1] - range[0]); return [at - (at - range[0]) * k, at + (range[1] - at) * k]; };
    setView({ x: zoom(view.x, fx), y: zoom(view.y, fy) });
    later(draw);
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { setView({ x: home.x.slice(), y: home.y.slice() }); later(draw); });

  const chart = {
    draw,
    show,
    lastDrawMs: 0,
    screenOf(si, i) {
      const [left, top] = origin();
      return [left + sx(series[si], i), top + sy(series[si], i)];
    },
    series,
  };
  canvas.chart = chart;
  // Drawn once the canvas is in the page (its size comes from the layout), and on resizes; a
  // chart no longer in the page stops observing.
  const resized = new ResizeObserver(() => {
    if (!canvas.isConnected) return resized.disconnect();
    if (!chart.lastDrawMs) draw(); else later(draw);
  });
  resized.observe(canvas);
  return canvas;
}
