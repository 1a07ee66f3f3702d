// Display helpers. Amounts arrive as decimal strings and are shown as such (grouped, trimmed),
// never rounded through a float; floats are used only to place points on a chart.

export const TERMINAL = new Set(["confirmed", "failed", "cancelled", "expired"]);
export const STAGES = ["pending", "routing", "building", "submitted", "confirmed"];

export function amount(text, maxDecimals = 6) {
  if (text === null || text === undefined || text === "") return "—";
  const [int, frac = ""] = String(text).split(".");
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  let shown = frac.slice(0, maxDecimals).replace(/0+$/, "");
  // A small number keeps its first significant digits rather than showing as 0.
  if (!shown && /[1-9]/.test(frac) && /^0*$/.test(int)) {
    const lead = frac.match(/^0*/)[0].length;
    shown = frac.slice(0, lead + 4).replace(/0+$/, "");
  }
  return shown ? `${grouped}.${shown}` : grouped;
}

export function price(text) {
  if (!text) return "—";
  const digits = String(text).split(".")[0].replace(/^0+/, "").length;
  return amount(text, Math.max(2, 8 - digits));
}

export function shortHash(text, keep = 6) {
  if (!text) return "—";
  return text.length <= keep * 2 + 1 ? text : `${text.slice(0, keep)}…${text.slice(-keep)}`;
}

export function clock(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const ms = String(d.getMilliseconds()).padStart(3, "0");
  return `${d.toLocaleTimeString([], { hour12: false })}.${ms}`;
}

export function timeShort(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "—";
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}

const VENUES = { raydium: "Raydium", meteora: "Meteora" };
export const venue = (dex) => (dex ? VENUES[dex] || dex : "—");

// Failure codes as a trader would say them.
const CODES = {
  SLIPPAGE_EXCEEDED: "The price moved past your slippage limit before the swap landed.",
  BLOCKHASH_EXPIRED: "The transaction's blockhash expired before it was included in a block.",
  RPC_TIMEOUT: "The cluster did not answer in time.",
  INSUFFICIENT_LIQUIDITY: "Neither venue had enough liquidity to fill this size.",
  EXECUTION_ABANDONED: "The engine gave up after the order's job kept dying (it never executed twice).",
  NO_ROUTE: "No pool trades this pair at this size.",
  TRANSACTION_DROPPED: "The cluster dropped the transaction.",
  ExceededSlippage: "Raydium refused: output below the minimum you signed for.",
  ExceededAmountSlippageTolerance: "Meteora refused: output below the minimum you signed for.",
};
export function plainCode(code) {
  if (!code) return "";
  return CODES[code] || code.toLowerCase().replaceAll("_", " ");
}
