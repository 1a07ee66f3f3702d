// The market panel: each pair's price on both venues, the gap, and a sparkline of the last
// minutes, live from the market stream (GET /api/markets first, for the history).

import { api } from "./api.js";
import { $, clear, h } from "./dom.js";
import { amount, price } from "./format.js";
import { LiveSocket } from "./live.js";

const KEEP = 300;
const W = 120;
const H = 32;

export class MarketPanel {
  constructor() {
    this.box = $("#markets");
    this.panel = $("#market-panel");
    this.history = new Map(); // pair -> [{at, raydium, meteora}]
    this.latest = [];
    this.updates = 0;
  }

  async start() {
    const body = await api("/api/markets", { query: { points: 120 } });
    for (const m of body.markets) this.history.set(m.name, m.history.slice());
    this.show(body.markets, Date.parse(body.at));
    this.socket = new LiveSocket("markets", "/api/markets/stream", {
      onMessage: (msg) => msg.type === "markets" && this.show(msg.markets, Date.parse(msg.at)),
      done: (code) => code >= 4400 && code < 4500,
    });
    this.socket.start();
  }

  show(markets, at) {
    for (const m of markets) {
      const points = this.history.get(m.name) || [];
      const last = points[points.length - 1];
      if (!last || last.raydium !== m.raydium || last.meteora !== m.meteora) {
        points.push({ at, raydium: m.raydium, meteora: m.meteora });
      }
      this.history.set(m.name, points.slice(-KEEP));
    }
    this.latest = markets;
    this.updates += 1;
    this.panel.dataset.updates = String(this.updates);
    clear(this.box, h("table", { class: "market-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Pair"), h("th", { scope: "col", class: "num" }, "Raydium"),
        h("th", { scope: "col", class: "num" }, "Meteora"), h("th", { scope: "col", class: "num", title: "basis points" }, "Gap bps"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Trend")))),
      h("tbody", {}, markets.map((m) => this.row(m)))));
  }

  row(m) {
    const cheap = (v) => (m.cheaper === v ? "cheaper" : "");
    return h("tr", { dataset: { pair: m.name } },
      h("th", { scope: "row" }, m.base, h("span", { class: "muted" }, `/${m.quote}`)),
      h("td", { class: `num ray ${cheap("raydium")}`, dataset: { venue: "raydium" } }, price(m.raydium)),
      h("td", { class: `num met ${cheap("meteora")}`, dataset: { venue: "meteora" } }, price(m.meteora)),
      h("td", { class: "num gap", title: "|Raydium − Meteora| in basis points of the lower price" }, m.gapBps ? amount(m.gapBps, 0) : "—"),
      h("td", { class: "spark" }, sparkline(this.history.get(m.name) || [], m.name)));
  }
}

function sparkline(points, name) {
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": `${name}, last ${points.length} prices on both venues` });
  const values = points.flatMap((p) => [Number(p.raydium), Number(p.meteora)]).filter((v) => v > 0);
  if (points.length < 2 || !values.length) {
    svg.append(h("svg:line", { x1: 0, y1: H / 2, x2: W, y2: H / 2, class: "flat" }));
    return svg;
  }
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const t0 = points[0].at;
  const span = Math.max(points[points.length - 1].at - t0, 1);
  const y = (v) => (hi === lo ? H / 2 : 2 + (H - 4) * (1 - (v - lo) / (hi - lo)));
  const line = (key) => points.filter((p) => Number(p[key]) > 0)
    .map((p) => `${(((p.at - t0) / span) * W).toFixed(1)},${y(Number(p[key])).toFixed(1)}`).join(" ");
  svg.append(h("svg:polyline", { points: line("raydium"), class: "ray" }), h("svg:polyline", { points: line("meteora"), class: "met" }));
  return svg;
}
