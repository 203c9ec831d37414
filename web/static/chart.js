// Small canvas charts for the telemetryd dashboard: a time-series line
// chart for numbers and a state timeline for booleans and strings. No
// dependencies; exposes window.TinyChart.
'use strict';
(function () {
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
  const STATE_COLORS = ['#16a34a', '#9ca3af', '#2563eb', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#dc2626'];

  function css(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  // prepare sizes the canvas to its CSS box at the device pixel ratio and
  // returns a context in CSS pixels, or null when the canvas is not shown.
  function prepare(canvas) {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (w === 0 || h === 0) return null;
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(w * dpr), ph = Math.round(h * dpr);
    if (canvas.width !== pw || canvas.height !== ph) {
      canvas.width = pw;
      canvas.height = ph;
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
    return step * mag;
  }

  const TIME_STEPS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3];

  function timeStep(spanMs, count) {
    const want = spanMs / Math.max(1, count);
    for (const s of TIME_STEPS) if (s >= want) return s;
    return TIME_STEPS[TIME_STEPS.length - 1];
  }

  function timeLabel(ms, spanMs) {
    const d = new Date(ms);
    const hh = String(d.getHours()).padStart(2, '0');
    const mm = String(d.getMinutes()).padStart(2, '0');
    if (spanMs <= 10 * 60e3) return hh + ':' + mm + ':' + String(d.getSeconds()).padStart(2, '0');
    return hh + ':' + mm;
  }

  function formatNumber(v) {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Math.round(v * 1000) / 1000);
  }

  function drawTimeAxis(ctx, from, to, left, right, top, bottom, withGrid) {
    const span = to - from;
    const step = timeStep(span, Math.max(2, Math.floor((right - left) / 90)));
    const muted = css('--muted', '#666'), line = css('--line', '#ddd');
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = muted;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const tzOffset = new Date(from).getTimezoneOffset() * 60e3;
    for (let t = Math.ceil((from - tzOffset) / step) * step + tzOffset; t <= to; t += step) {
      const x = left + (t - from) / span * (right - left);
      if (x < left + 16 || x > right - 16) continue; // the label would leave the plot
      if (withGrid) {
        ctx.strokeStyle = line;
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, top);
        ctx.lineTo(Math.round(x) + 0.5, bottom);
        ctx.stroke();
      }
      ctx.fillText(timeLabel(t, span), x, bottom + 3);
    }
  }

  // LineChart draws numeric series over a time window.
  // series: [{name, color, points: [[tMs, value], ...] sorted by time}]
  class LineChart {
    constructor(canvas) {
      this.canvas = canvas;
      this.series = [];
      this.from = 0;
      this.to = 1;
      this.unit = '';
    }

    draw() {
      const p = prepare(this.canvas);
      if (!p) return;
      const { ctx, w, h } = p;
      const left = 52, right = w - 8, top = 8, bottom = h - 20;
      const from = this.from, to = this.to;
      let min = Infinity, max = -Infinity;
      for (const s of this.series) {
        for (const [t, v] of s.points) {
          if (t < from || t > to || typeof v !== 'number') continue;
          if (v < min) min = v;
          if (v > max) max = v;
        }
      }
      const muted = css('--muted', '#666'), line = css('--line', '#ddd');
      if (min === Infinity) {
        ctx.fillStyle = muted;
        ctx.font = '12px system-ui, sans-serif';
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText('no data in this window', w / 2, h / 2);
        drawTimeAxis(ctx, from, to, left, right, top, bottom, false);
        return;
      }
      if (min === max) {
        const pad = Math.abs(min) * 0.05 || 1;
        min -= pad;
        max += pad;
      }
      const step = niceStep(max - min, Math.max(2, Math.floor((bottom - top) / 40)));
      const lo = Math.floor(min / step) * step, hi = Math.ceil(max / step) * step;
      const y = (v) => bottom - (v - lo) / (hi - lo) * (bottom - top);
      const x = (t) => left + (t - from) / (to - from) * (right - left);

      ctx.lineWidth = 1;
      ctx.font = '11px system-ui, sans-serif';
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (let v = lo; v <= hi + step / 2; v += step) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.strokeStyle = line;
        ctx.beginPath();
        ctx.moveTo(left, yy);
        ctx.lineTo(right, yy);
        ctx.stroke();
        ctx.fillStyle = muted;
        ctx.fillText(formatNumber(v), left - 6, yy);
      }
      drawTimeAxis(ctx, from, to, left, right, top, bottom, true);

      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top - 2, right - left, bottom - top + 4);
      ctx.clip();
      for (const s of this.series) {
        ctx.strokeStyle = s.color;
        ctx.fillStyle = s.color;
        ctx.lineWidth = 1.75;
        ctx.lineJoin = 'round';
        ctx.beginPath();
        let n = 0, lastX = 0, lastY = 0;
        for (const [t, v] of s.points) {
          if (typeof v !== 'number') continue;
          lastX = x(t);
          lastY = y(v);
          if (n++ === 0) ctx.moveTo(lastX, lastY); else ctx.lineTo(lastX, lastY);
        }
        ctx.stroke();
        if (n > 0) {
          ctx.beginPath();
          ctx.arc(lastX, lastY, n === 1 ? 3 : 2.5, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
      ctx.restore();
    }
  }

  // Timeline draws state series (booleans, strings) as colored bands, one
  // row per series; each value holds until the next point.
  class Timeline {
    constructor(canvas) {
      this.canvas = canvas;
      this.series = [];
      this.from = 0;
      this.to = 1;
      this.colors = new Map();
    }

    colorOf(v) {
      const k = String(v);
      if (k === 'true') return STATE_COLORS[0];
      if (k === 'false') return STATE_COLORS[1];
      if (!this.colors.has(k)) this.colors.set(k, STATE_COLORS[2 + this.colors.size % (STATE_COLORS.length - 2)]);
      return this.colors.get(k);
    }

    draw() {
      const p = prepare(this.canvas);
      if (!p) return;
      const { ctx, w, h } = p;
      const left = 52, right = w - 8, top = 4, bottom = h - 20;
      const from = this.from, to = this.to;
      const x = (t) => left + (Math.min(Math.max(t, from), to) - from) / (to - from) * (right - left);
      const rows = Math.max(1, this.series.length);
      const rowH = (bottom - top) / rows;
      ctx.font = '11px system-ui, sans-serif';
      ctx.textBaseline = 'middle';
      this.series.forEach((s, i) => {
        const y0 = top + i * rowH + 2, hh = rowH - 4;
        ctx.fillStyle = css('--line', '#ddd');
        ctx.fillRect(left, y0, right - left, hh);
        // Runs of one value are one band: no seams between equal points.
        const pts = s.points;
        for (let j = 0; j < pts.length;) {
          let k = j + 1;
          while (k < pts.length && pts[k][1] === pts[j][1]) k++;
          const t0 = pts[j][0], t1 = k < pts.length ? pts[k][0] : to;
          const v = pts[j][1];
          j = k;
          if (t1 < from || t0 > to) continue;
          const x0 = Math.round(x(t0)), x1 = Math.max(Math.round(x(t1)), x0 + 2);
          ctx.fillStyle = this.colorOf(v);
          ctx.fillRect(x0, y0, x1 - x0, hh);
          if (x1 - x0 > 40) {
            ctx.fillStyle = '#fff';
            ctx.textAlign = 'left';
            ctx.fillText(String(v).slice(0, 24), x0 + 4, y0 + hh / 2, x1 - x0 - 8);
          }
        }
        ctx.fillStyle = css('--muted', '#666');
        ctx.textAlign = 'right';
        ctx.fillText(String(s.name).slice(0, 8), left - 6, y0 + hh / 2);
      });
      drawTimeAxis(ctx, from, to, left, right, top, bottom, false);
    }
  }

  window.TinyChart = Object.freeze({ LineChart, Timeline, COLORS, formatNumber });
})();
