// Order detail: the stages, the outcome in plain words, both venues' quotes with the chosen one
// marked, the event timeline with the time each stage took, and the signed transaction.

import { api, ApiError } from "./api.js";
import { copyButton } from "./blotter.js";
import { $, clear, debounce, h } from "./dom.js";
import { STAGES, TERMINAL, amount, clock, duration, plainCode, price, shortHash, venue } from "./format.js";
import { renderQuote } from "./ticket.js";
import { verifyTransaction } from "./verify.js";

export class Detail {
  constructor() {
    this.el = $("#order-detail");
    this.body = $("#detail-body");
    this.orderId = null;
    this.returnFocus = null;
    this.reload = debounce(() => this.load(), 120);
    $("#detail-close").addEventListener("click", () => this.close());
    $("#detail-backdrop").addEventListener("click", () => this.close());
    this.el.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close();
      if (e.key === "Tab") this.trapFocus(e);
    });
  }

  async open(orderId) {
    this.returnFocus = document.activeElement;
    this.orderId = orderId;
    this.el.dataset.orderId = orderId;
    clear(this.body, h("p", { class: "muted" }, "Loading…"));
    this.el.hidden = false;
    $("#detail-backdrop").hidden = false;
    this.el.focus();
    await this.load();
  }

  close() {
    this.orderId = null;
    this.el.hidden = true;
    $("#detail-backdrop").hidden = true;
    this.returnFocus?.focus?.();
  }

  /** An event of some order arrived: if it is the one shown, show it. */
  event(orderId) {
    if (orderId === this.orderId) this.reload();
  }

  trapFocus(e) {
    const focusable = [...this.el.querySelectorAll("button, [href], summary, [tabindex='0']")].filter((x) => !x.disabled && x.offsetParent);
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
    else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
  }

  async load() {
    const id = this.orderId;
    if (!id) return;
    try {
      const order = await api(`/api/orders/${id}`);
      if (id !== this.orderId) return;
      this.el.dataset.status = order.status;
      $("#detail-title").textContent = `${cap(order.type)} order · ${order.tokenIn} → ${order.tokenOut.length > 10 ? shortHash(order.tokenOut, 4) : order.tokenOut}`;
      clear(this.body, render(order));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      clear(this.body, h("p", { class: "quote-error" }, err.message));
    }
  }
}

const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function render(o) {
  const events = o.events || [];
  const routing = [...events].reverse().find((e) => e.status === "routing");
  return [
    h("div", { class: "detail-top" },
      h("span", { class: `badge st-${o.status}` }, o.status),
      h("span", { class: "big" }, `${amount(o.amountIn)} ${o.tokenIn}`, " → ", o.amountOut ? `${amount(o.amountOut)} ${o.tokenOut}` : "…"),
      h("span", { class: "muted mono" }, "id ", copyButton(o.orderId))),
    stages(o, events),
    outcome(o, events),
    routing ? h("section", { class: "block" }, h("h3", {}, routing.attempt > 1 ? `Quotes (attempt ${routing.attempt})` : "Quotes"),
      renderQuote({ ...routing, tokenIn: o.tokenIn, tokenOut: o.tokenOut })) : null,
    h("section", { class: "block" }, h("h3", {}, "Timeline"), timeline(events)),
    transaction(o),
  ];
}

function stages(o, events) {
  const reached = new Set(events.map((e) => e.status));
  const end = TERMINAL.has(o.status) && o.status !== "confirmed" ? o.status : null;
  return h("ol", { class: "stages", "aria-label": "Stages" },
    STAGES.map((s) => h("li", { class: reached.has(s) ? "done" : o.status === s ? "now" : "" }, s)),
    end ? h("li", { class: `end st-${end}` }, end) : null);
}

function outcome(o, events) {
  const last = events[events.length - 1] || {};
  const first = events[0];
  const rows = [];
  if (o.status === "confirmed") {
    rows.push(["received", `${amount(o.amountOut)} ${o.tokenOut}`], ["executed price", `${price(o.executedPrice)} ${o.tokenOut}/${o.tokenIn}`],
      ["fee", `${amount(o.feeAmount)} ${o.tokenIn}`], ["venue", `${venue(o.dexChosen)} · ${shortHash(o.pool, 4)}`],
      ["latency", duration(last.latencyMs)], ["slot", String(o.slot ?? "—")]);
  } else if (o.status === "failed") {
    rows.push(["why", plainCode(o.errorCode)], ["engine said", o.lastError || "—"], ["code", o.errorCode || "—"]);
  } else if (o.status === "cancelled" || o.status === "expired") {
    rows.push(["why", last.reason || o.status]);
  } else if (first?.waiting && o.status === "pending") {
    rows.push(["waiting for", first.waiting]);
  }
  rows.push(["attempts", String(o.attempts || 0)], ["slippage", `${o.slippageBps} bps`]);
  if (o.limitPrice) rows.push(["limit price", `${price(o.limitPrice)} ${o.tokenOut}/${o.tokenIn}`]);
  if (o.minAmountOut) rows.push(["min out", `${amount(o.minAmountOut)} ${o.tokenOut}`]);
  return h("dl", { class: "kv outcome" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function summary(e) {
  switch (e.status) {
    case "pending": return e.waiting ? `waits: ${e.waiting}` : "accepted and queued";
    case "routing": return [e.retryOf ? `retry after ${e.retryOf.code}. ` : "", e.trigger ? "triggered. " : "", e.reason || `chose ${venue(e.chosen)}`].join("");
    case "building": return `signed for ${venue(e.dex)}, min out ${amount(e.minAmountOut)}, CU price ${e.computeUnitPrice ?? "—"}`;
    case "submitted": return `sent ${shortHash(e.txHash)} at slot ${e.slot}`;
    case "confirmed": return `${amount(e.amountOut)} received at ${price(e.executedPrice)}, slot ${e.slot}`;
    case "failed": return `${e.code}: ${plainCode(e.code)}${e.retryable ? " (retryable)" : ""}`;
    default: return e.reason || "";
  }
}

function timeline(events) {
  if (!events.length) return h("p", { class: "muted" }, "No events yet.");
  const start = new Date(events[0].at);
  let prev = start;
  return h("ol", { class: "timeline" }, events.map((e) => {
    const at = new Date(e.at);
    const step = at - prev;
    prev = at;
    return h("li", { class: `ev st-${e.status}`, dataset: { seq: e.seq, status: e.status } },
      h("span", { class: "ev-dot", "aria-hidden": "true" }),
      h("div", { class: "ev-head" },
        h("span", { class: `badge st-${e.status}` }, e.status),
        h("time", { datetime: e.at }, clock(e.at)),
        h("span", { class: "muted" }, e.seq === 1 ? "start" : `+${duration(step)}`),
        e.seq > 1 ? h("span", { class: "muted" }, `(${duration(at - start)} total)`) : null,
        e.attempt > 1 ? h("span", { class: "badge" }, `attempt ${e.attempt}`) : null),
      h("p", { class: "ev-text" }, summary(e)));
  }));
}

function transaction(o) {
  if (!o.signedTransaction) return h("section", { class: "block" }, h("h3", {}, "Transaction"), h("p", { class: "muted" }, "Not signed yet."));
  const result = h("div", { class: "verify-result", "aria-live": "polite" });
  const verify = async () => {
    clear(result, h("p", { class: "muted" }, "Checking…"));
    try {
      const r = await verifyTransaction(o.signedTransaction, o.signer, o.txHash);
      clear(result,
        h("p", { class: r.ok ? "ok" : r.ok === false ? "bad" : "muted", dataset: { testid: "verify-result", ok: String(r.ok) } },
          r.ok ? "✓ Signature verified in this browser" : r.ok === false ? "✗ Signature does NOT verify" : "Partly checked"),
        h("ul", { class: "checks" }, r.checks.map(([label, ok]) => h("li", { class: ok ? "ok" : "bad" }, ok ? "✓ " : "✗ ", label))),
        r.note ? h("p", { class: "muted" }, r.note) : null);
    } catch (err) {
      clear(result, h("p", { class: "bad" }, `Could not read the transaction: ${err.message}`));
    }
  };
  return h("section", { class: "block" }, h("h3", {}, "Signed transaction"),
    h("dl", { class: "kv" },
      h("dt", {}, "signature"), h("dd", { class: "mono" }, o.txHash ? copyButton(o.txHash) : "—"),
      h("dt", {}, "signer"), h("dd", { class: "mono" }, copyButton(o.signer))),
    h("details", {}, h("summary", {}, "Raw transaction (base64)"), h("pre", { class: "raw mono" }, o.signedTransaction)),
    h("button", { type: "button", class: "ghost", dataset: { testid: "verify-signature" }, onclick: verify }, "Verify signature"),
    result);
}
