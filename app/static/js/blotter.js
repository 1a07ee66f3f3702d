// The blotter: the account's orders, newest first, each row kept current over its order's
// WebSocket; cancel for waiting orders, a status filter, older pages through nextCursor.

import { api, ApiError } from "./api.js";
import { $, clear, h } from "./dom.js";
import { TERMINAL, amount, duration, price, shortHash, timeShort, venue } from "./format.js";
import { followOrder } from "./live.js";

const PAGE = 25;
const MAX_FOLLOWED = 40; // sockets held at once; the rest are refreshed by the periodic poll
const REFRESH_MS = 4000;

/** What an event tells about its order (the row's fields, as GET /api/orders returns them). */
export function applyEvent(order, e) {
  order.status = e.status;
  if (e.status === "pending" && e.tokenIn) {
    Object.assign(order, { tokenIn: e.tokenIn, tokenOut: e.tokenOut, amountIn: e.amountIn });
  }
  order.attempts = Math.max(order.attempts || 0, e.attempt || 0);
  if (e.status === "routing" && e.chosen) order.dexChosen = e.chosen;
  if (e.dex) order.dexChosen = e.dex;
  if (e.txHash) order.txHash = e.txHash;
  if (e.status === "confirmed") {
    Object.assign(order, { amountOut: e.amountOut, executedPrice: e.executedPrice, latencyMs: e.latencyMs });
  }
  if (e.status === "failed") Object.assign(order, { errorCode: e.code, lastError: e.error });
  if (e.at) order.updatedAt = e.at;
  return order;
}

export class Blotter {
  constructor({ onOpen, onEvent }) {
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.orders = new Map(); // orderId -> order
    this.rows = new Map(); // orderId -> <tr>
    this.followed = new Map(); // orderId -> LiveSocket
    this.cursor = null;
    this.body = $("#order-rows");
    $("#status-filter").addEventListener("change", () => this.reload());
    $("#load-more").addEventListener("click", () => this.loadMore());
    setInterval(() => this.refresh(), REFRESH_MS);
  }

  get filter() {
    return $("#status-filter").value;
  }

  async reload() {
    this.followed.forEach((s) => s.stop());
    this.followed.clear();
    this.orders.clear();
    this.rows.clear();
    clear(this.body);
    this.cursor = null;
    await this.loadMore(true);
  }

  async loadMore(first = false) {
    const page = await api("/api/orders", { query: { limit: PAGE, status: this.filter, cursor: first ? null : this.cursor } });
    this.cursor = page.nextCursor;
    $("#load-more").hidden = !this.cursor;
    for (const order of page.orders) this.upsert(order, "end");
    this.updateEmpty();
  }

  /** Pick up orders made elsewhere (another tab, a bot) and states the sockets are not following. */
  async refresh() {
    if (document.hidden) return;
    try {
      const page = await api("/api/orders", { query: { limit: PAGE, status: this.filter } });
      for (const order of [...page.orders].reverse()) {
        const known = this.orders.get(order.orderId);
        if (!known || (!this.followed.has(order.orderId) && known.status !== order.status)) {
          this.upsert(order, "start");
        }
      }
      this.updateEmpty();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
  }

  /** An order this page just submitted: shown at once, from what was sent and the answer. */
  added(accepted, sent) {
    const now = new Date().toISOString();
    const order = { createdAt: now, updatedAt: now, attempts: 0, slippageBps: 50, ...sent, ...accepted };
    order.tokenIn = String(sent.tokenIn).toUpperCase();
    if (sent.type !== "sniper") order.tokenOut = String(sent.tokenOut).toUpperCase();
    this.upsert(order, "start");
    this.updateEmpty();
  }

  upsert(order, where) {
    const known = this.orders.get(order.orderId);
    const merged = known ? Object.assign(known, order) : order;
    this.orders.set(order.orderId, merged);
    const row = this.render(merged);
    const old = this.rows.get(order.orderId);
    if (old) replaceRow(old, row);
    else if (where === "start") this.body.prepend(row);
    else this.body.append(row);
    this.rows.set(order.orderId, row);
    if (!TERMINAL.has(merged.status)) this.follow(merged.orderId);
  }

  follow(orderId) {
    if (this.followed.has(orderId) || this.followed.size >= MAX_FOLLOWED) return;
    const socket = followOrder(
      orderId,
      (event) => {
        const order = this.orders.get(orderId);
        if (!order) return;
        applyEvent(order, event);
        const old = this.rows.get(orderId);
        const row = this.render(order);
        if (old) replaceRow(old, row);
        this.rows.set(orderId, row);
        this.onEvent(orderId, event);
      },
      () => this.followed.delete(orderId),
    );
    this.followed.set(orderId, socket);
  }

  updateEmpty() {
    const empty = $("#blotter-empty");
    empty.hidden = this.orders.size > 0;
    empty.textContent = this.filter
      ? `No ${this.filter} orders.`
      : "No orders yet. Submit one on the left — it appears here and updates live.";
  }

  async cancel(orderId, button) {
    button.disabled = true;
    try {
      const order = await api(`/api/orders/${orderId}`, { method: "DELETE" });
      this.upsert(order);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      button.disabled = false;
      button.title = err.message;
      button.textContent = "can't cancel";
    }
  }

  render(o) {
    const waiting = o.status === "pending" && o.type !== "market";
    const latency = o.latencyMs ?? (o.status === "confirmed" && o.createdAt && o.updatedAt
      ? new Date(o.updatedAt) - new Date(o.createdAt) : null);
    const open = () => this.onOpen(o.orderId);
    const stop = (e) => e.stopPropagation();
    return h("tr", {
      class: `order status-${o.status}`,
      tabindex: 0,
      "aria-label": `${o.type} ${o.amountIn} ${o.tokenIn} to ${o.tokenOut}, ${o.status}. Enter for details`,
      dataset: { testid: "order-row", orderId: o.orderId, status: o.status },
      onclick: open,
      onkeydown: (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
      },
    },
      h("td", { class: "muted narrow-hide" }, timeShort(o.createdAt)),
      h("td", {}, h("span", { class: `type type-${o.type}` }, o.type), " ", `${o.tokenIn}→${tokenName(o.tokenOut)}`),
      h("td", { class: "num" }, amount(o.amountIn)),
      h("td", {}, h("span", { class: `badge st-${o.status}` }, o.status)),
      h("td", { class: "wide" }, venue(o.dexChosen)),
      h("td", { class: "num" }, amount(o.amountOut)),
      h("td", { class: "num wide", title: o.executedPrice ? "executed price" : o.limitPrice ? "limit price" : "" },
        o.executedPrice ? price(o.executedPrice) : o.limitPrice ? h("span", { class: "muted" }, `≥ ${price(o.limitPrice)}`) : "—"),
      h("td", { class: "num wide" }, latency === null ? "—" : duration(latency)),
      h("td", { class: "num wide" }, o.attempts > 1 ? String(o.attempts - 1) : "0"),
      h("td", { class: "wide mono" }, o.txHash ? copyButton(o.txHash, stop) : "—"),
      h("td", {}, waiting ? h("button", {
        type: "button", class: "ghost small", "aria-label": `Cancel order ${o.orderId}`,
        dataset: { testid: "cancel-order" },
        onclick: (e) => { stop(e); this.cancel(o.orderId, e.currentTarget); },
        onkeydown: stop,
      }, "Cancel") : null),
    );
  }
}

const tokenName = (t = "") => (t.length > 10 ? shortHash(t, 4) : t);

function replaceRow(old, row) {
  const focused = old === document.activeElement;
  old.replaceWith(row);
  if (focused) row.focus();
}

export function copyButton(text, stop = () => {}) {
  return h("button", {
    type: "button", class: "copy mono", title: `${text} (click to copy)`, "aria-label": `Copy ${text}`,
    onclick: async (e) => {
      stop(e);
      const button = e.currentTarget;
      try {
        await navigator.clipboard.writeText(text);
        button.dataset.copied = "1";
        setTimeout(() => delete button.dataset.copied, 1200);
      } catch {
        window.prompt("Copy the signature:", text);
      }
    },
    onkeydown: stop,
  }, shortHash(text));
}
