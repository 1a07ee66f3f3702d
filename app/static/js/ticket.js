// The order ticket: market, limit and sniper orders, a live quote preview from /api/quotes, and
// the API's validation errors shown beside the field they name.

import { api, ApiError } from "./api.js";
import { $, $$, clear, debounce, h } from "./dom.js";
import { amount, plainCode, price, shortHash, venue } from "./format.js";

const FIELDS = ["tokenIn", "tokenOut", "amountIn", "slippageBps", "limitPrice", "maxPrice", "expiresInSeconds"];

export class Ticket {
  constructor({ onSubmitted }) {
    this.form = $("#order-form");
    this.onSubmitted = onSubmitted;
    this.tokens = [];
    this.pairs = [];
    this.quoteSeq = 0;
    this.previewDebounced = debounce(() => this.preview(), 250);
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.form.addEventListener("input", (e) => this.changed(e.target));
    this.form.addEventListener("change", (e) => this.changed(e.target));
    $("#flip").addEventListener("click", () => this.flip());
    $("#launch").addEventListener("click", () => this.launch());
  }

  get type() {
    return this.form.elements.type.value;
  }

  setTokens({ tokens, pairs }) {
    this.tokens = tokens;
    this.pairs = pairs;
    const tokenIn = $("#token-in");
    clear(tokenIn, tokens.map((t) => h("option", { value: t.symbol, title: t.name }, t.symbol)));
    tokenIn.value = "SOL";
    this.fillTokenOut("USDC");
    this.changed(this.form.elements.type[0]);
  }

  partners(symbol) {
    return this.pairs
      .filter((p) => p.base === symbol || p.quote === symbol)
      .map((p) => (p.base === symbol ? p.quote : p.base));
  }

  fillTokenOut(preferred) {
    const select = $("#token-out");
    const keep = preferred || select.value;
    const partners = this.partners($("#token-in").value);
    clear(select, partners.map((s) => h("option", { value: s }, s)));
    select.value = partners.includes(keep) ? keep : partners[0];
  }

  flip() {
    const a = $("#token-in").value;
    const b = $("#token-out").value;
    $("#token-in").value = b;
    this.fillTokenOut(a);
    this.changed($("#token-in"));
  }

  changed(target) {
    if (target.name === "type") this.showTypeFields();
    if (target.name === "tokenIn") this.fillTokenOut();
    if (target.name) this.fieldError(target.name === "sniperMint" ? "tokenOut" : target.name, "");
    $("#form-error").textContent = "";
    this.quoteSeq += 1; // a preview still in flight is for the old values: its answer is dropped
    $("#amount-unit").textContent = $("#token-in").value;
    $("#limit-unit").textContent = `${$("#token-out").value} per ${$("#token-in").value}`;
    this.previewDebounced();
  }

  showTypeFields() {
    const type = this.type;
    $$(".only-limit", this.form).forEach((el) => (el.hidden = type !== "limit"));
    $$(".only-sniper", this.form).forEach((el) => (el.hidden = type !== "sniper"));
    $$(".only-waiting", this.form).forEach((el) => (el.hidden = type === "market"));
    $("#token-out").hidden = type === "sniper";
    $("#sniper-mint").hidden = type !== "sniper";
    $("#submit-order").textContent = `Submit ${type} order`;
  }

  order() {
    const v = (name) => this.form.elements[name].value.trim();
    const order = { type: this.type, tokenIn: v("tokenIn"), amountIn: v("amountIn") };
    order.tokenOut = this.type === "sniper" ? v("sniperMint") : v("tokenOut");
    if (v("slippageBps")) order.slippageBps = /^\d+$/.test(v("slippageBps")) ? Number(v("slippageBps")) : v("slippageBps");
    if (this.type === "limit") order.limitPrice = v("limitPrice");
    if (this.type === "sniper" && v("maxPrice")) order.maxPrice = v("maxPrice");
    if (this.type !== "market" && v("expiresInSeconds")) {
      const s = v("expiresInSeconds");
      order.expiresInSeconds = /^\d+$/.test(s) ? Number(s) : s;
    }
    return order;
  }

  fieldError(field, message) {
    const el = $(`#err-${field}`);
    if (!el) return false;
    el.textContent = message;
    el.closest(".field")?.classList.toggle("invalid", !!message);
    const input = this.form.elements[field];
    if (input?.setAttribute) input.setAttribute("aria-invalid", message ? "true" : "false");
    return true;
  }

  showErrors(err) {
    FIELDS.forEach((f) => this.fieldError(f, ""));
    let placed = false;
    for (const d of err.details) {
      if (d && typeof d.field === "string" && this.fieldError(d.field, d.message || err.message)) placed = true;
    }
    $("#form-error").textContent = placed ? "" : err.message;
    const firstBad = $(".field.invalid input, .field.invalid select", this.form);
    firstBad?.focus();
  }

  async submit() {
    const button = $("#submit-order");
    button.disabled = true;
    FIELDS.forEach((f) => this.fieldError(f, ""));
    $("#form-error").textContent = "";
    try {
      const sent = this.order();
      const accepted = await api("/api/orders/execute", { method: "POST", body: sent });
      this.onSubmitted(accepted, sent);
      $("#form-error").textContent = "";
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.showErrors(err);
    } finally {
      button.disabled = false;
    }
  }

  async launch() {
    const mint = this.form.elements.sniperMint.value.trim();
    try {
      const launched = await api("/api/sim/launches", { method: "POST", body: mint ? { mint } : {} });
      this.form.elements.sniperMint.value = launched.mint || mint;
      $("#form-error").textContent = `Launched ${shortHash(launched.mint || mint)}: waiting snipers fire now.`;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.showErrors(err.details.length ? err : new ApiError(err.status, { error: err.message, details: [{ field: "tokenOut", message: err.message }] }));
    }
  }

  async preview() {
    const box = $("#quote-preview");
    const o = this.order();
    if (this.type === "sniper") {
      clear(box, h("p", { class: "muted" }, "A sniper waits for its token's launch; the quote is taken when it fires."));
      return;
    }
    if (!o.amountIn) {
      clear(box, h("p", { class: "muted" }, "Enter an amount to see both venues' quotes."));
      return;
    }
    const seq = ++this.quoteSeq;
    box.classList.add("loading");
    try {
      const q = await api("/api/quotes", {
        query: { tokenIn: o.tokenIn, tokenOut: o.tokenOut, amountIn: o.amountIn, slippageBps: o.slippageBps },
      });
      if (seq === this.quoteSeq) clear(box, renderQuote(q));
    } catch (err) {
      if (!(err instanceof ApiError) || seq !== this.quoteSeq) return;
      for (const d of err.details) if (d?.field) this.fieldError(d.field, d.message);
      clear(box, h("p", { class: "quote-error" }, err.message));
    } finally {
      if (seq === this.quoteSeq) box.classList.remove("loading");
    }
  }
}

/** Both venues' quotes with the chosen one marked, or (smart routing) the route's legs. */
export function renderQuote(q, tokenOut = q.tokenOut) {
  const chosen = q.chosen;
  const cards = (q.quotes || []).map((quote, i) => {
    const isChosen = chosen ? chosen === quote.dex || chosen === quote.pool : i === 0;
    return h("div", { class: `venue-quote${isChosen ? " chosen" : ""}`, dataset: { dex: quote.dex } },
      h("div", { class: "vq-head" }, h("strong", {}, venue(quote.dex)), h("span", { class: "muted" }, quote.poolKind || ""),
        isChosen ? h("span", { class: "badge chosen-badge" }, "✓ chosen") : null),
      h("div", { class: "vq-out" }, amount(quote.amountOut), " ", h("span", { class: "unit" }, tokenOut)),
      h("dl", { class: "kv" },
        h("dt", {}, "price"), h("dd", {}, price(quote.price)),
        h("dt", {}, "impact"), h("dd", {}, `${amount(quote.priceImpactPct, 3)} %`),
        h("dt", {}, "fee"), h("dd", {}, `${amount(quote.feeAmount)} ${q.tokenIn || ""}`),
        h("dt", {}, "min out"), h("dd", {}, amount(quote.minAmountOut))));
  });
  return [
    q.routePlan ? renderRoutePlan(q) : null,
    cards.length ? h("div", { class: "venue-quotes" }, cards) : null,
    q.reason ? h("p", { class: "reason" }, "Route: ", q.reason) : null,
    q.error ? h("p", { class: "quote-error" }, plainCode(q.code) || q.error) : null,
  ];
}

/** A split or multi-hop route (smart routing): one line per leg, with its share. */
export function renderRoutePlan(q) {
  const legs = q.routePlan.map((leg) =>
    h("li", { class: "leg" },
      h("span", { class: "pct" }, `${amount(String(leg.percent), 2)} %`),
      h("span", {}, `${amount(leg.amountIn)} ${leg.tokenIn} → ${amount(leg.amountOut)} ${leg.tokenOut}`),
      h("span", { class: "muted" }, `${venue(leg.dex)} ${shortHash(leg.pool, 4)}`)));
  const best = q.bestSingle;
  return h("div", { class: "route-plan" },
    h("div", { class: "vq-head" }, h("strong", {}, "Route"), q.improvementBps !== undefined
      ? h("span", { class: "badge chosen-badge" }, `+${amount(String(q.improvementBps), 2)} bps vs best single pool`) : null),
    h("ol", {}, legs),
    best ? h("p", { class: "muted" }, `Best single pool: ${venue(best.dex)} ${amount(best.amountOut)}`) : null);
}
