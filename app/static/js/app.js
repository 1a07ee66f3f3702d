// The dashboard: wires the ticket, blotter, order detail, market and system panels together,
// asks for an API key when the engine runs with AUTH_MODE=keys, and shows the connection state.

import { api, apiKey, ApiError, onApi } from "./api.js";
import { Blotter } from "./blotter.js";
import { Detail } from "./detail.js";
import { $ } from "./dom.js";
import { onHealth } from "./live.js";
import { MarketPanel } from "./markets.js";
import { SystemPanel } from "./system.js";
import { Ticket } from "./ticket.js";

const detail = new Detail();
const blotter = new Blotter({
  onOpen: (id) => detail.open(id),
  onEvent: (id) => detail.event(id),
});
const ticket = new Ticket({ onSubmitted: (accepted, sent) => blotter.added(accepted, sent) });
const markets = new MarketPanel();
const system = new SystemPanel();

let reachable = true;
let socketsDown = 0;
function showConnection() {
  const conn = $("#conn");
  const state = !reachable ? "down" : socketsDown ? "reconnecting" : "live";
  conn.dataset.state = state;
  $(".conn-text", conn).textContent = { live: "live", reconnecting: "reconnecting…", down: "engine unreachable" }[state];
  const banner = $("#banner");
  banner.hidden = reachable;
  banner.textContent = reachable ? "" : "The engine is not answering (it may be restarting, or PostgreSQL/Redis is down). Retrying; nothing you submitted is lost.";
}
onApi("reachable", (ok) => { reachable = ok; showConnection(); });
onHealth((down) => { socketsDown = down; showConnection(); });

function askForKey(message = "") {
  const dialog = $("#key-dialog");
  $("#key-error").textContent = message;
  $("#key-button").hidden = false;
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}
onApi("unauthorized", () => {
  const had = apiKey.get();
  apiKey.clear();
  askForKey(had ? "That key was refused (unknown, revoked, or without the scope needed)." : "");
});

$("#key-form").addEventListener("submit", (e) => {
  const key = $("#key-input").value.trim();
  if (!key) {
    e.preventDefault();
    $("#key-error").textContent = "Paste a key first.";
    return;
  }
  apiKey.set(key);
  $("#key-input").value = "";
  boot();
});
$("#key-button").addEventListener("click", () => askForKey());

let started = false;
async function boot() {
  try {
    const tokens = await api("/api/tokens");
    const stats = await api("/api/stats");
    $("#account").textContent = `account ${stats.account}`;
    if (apiKey.get()) $("#key-button").hidden = false;
    if (!started) {
      started = true;
      ticket.setTokens(tokens);
      system.start();
      await Promise.all([blotter.reload(), markets.start()]);
    } else {
      await blotter.reload();
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    if (err.status !== 401) setTimeout(boot, 2000); // the engine is down: try again
  }
}

showConnection();
boot();
