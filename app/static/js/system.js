// The system panel: the account's stats and confirmed/failed orders per second over the last
// minute (deltas of GET /api/stats, polled once a second).

import { api, ApiError } from "./api.js";
import { $, clear, h } from "./dom.js";
import { venue } from "./format.js";

const SECONDS = 60;

export class SystemPanel {
  constructor() {
    this.samples = []; // [{t, ok, bad}] per poll
    this.rates = []; // [{ok, bad}] per second
    this.canvas = $("#throughput");
  }

  start() {
    this.poll();
    setInterval(() => this.poll(), 1000);
    window.addEventListener("resize", () => this.draw());
  }

  async poll() {
    let s;
    try {
      s = await api("/api/stats");
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      return;
    }
    this.show(s);
    const prev = this.samples[this.samples.length - 1];
    const now = { t: performance.now(), ok: s.completedJobs, bad: s.failedJobs };
    this.samples.push(now);
    if (prev) {
      const secs = Math.max((now.t - prev.t) / 1000, 0.001);
      this.rates.push({ ok: Math.max(now.ok - prev.ok, 0) / secs, bad: Math.max(now.bad - prev.bad, 0) / secs });
      this.rates = this.rates.slice(-SECONDS);
      this.samples = this.samples.slice(-2);
    }
    this.draw();
  }

  show(s) {
    const item = (label, value, cls = "") => [h("dt", {}, label), h("dd", { class: cls, dataset: { stat: label } }, String(value ?? 0))];
    clear($("#stats"), item("active", s.activeOrders), item("queued", s.queuedJobs),
      item("completed", s.completedJobs, "ok"), item("failed", s.failedJobs, "bad"));
    const venues = Object.entries(s.byVenue || {});
    clear($("#by-venue"), venues.length ? ["By venue: ", venues.map(([v, n], i) => [i ? " · " : "", h("strong", {}, venue(v)), ` ${n}`])] : h("span", { class: "muted" }, "No fills yet."));
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || 320;
    const height = c.clientHeight || 90;
    if (c.width !== Math.round(width * ratio)) { c.width = Math.round(width * ratio); c.height = Math.round(height * ratio); }
    const g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const peak = Math.max(1, ...this.rates.map((r) => r.ok + r.bad));
    const bar = width / SECONDS;
    g.strokeStyle = css.getPropertyValue("--line");
    g.beginPath(); g.moveTo(0, height - 0.5); g.lineTo(width, height - 0.5); g.stroke();
    this.rates.forEach((r, i) => {
      const x = width - (this.rates.length - i) * bar;
      const ok = (r.ok / peak) * (height - 14);
      const bad = (r.bad / peak) * (height - 14);
      g.fillStyle = css.getPropertyValue("--ok");
      g.fillRect(x + 1, height - ok, bar - 2, ok);
      g.fillStyle = css.getPropertyValue("--bad");
      g.fillRect(x + 1, height - ok - bad, bar - 2, bad);
    });
    g.fillStyle = css.getPropertyValue("--muted");
    g.font = "11px system-ui, sans-serif";
    g.fillText(`peak ${peak.toFixed(peak < 10 ? 1 : 0)}/s`, 4, 11);
  }
}
