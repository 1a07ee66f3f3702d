// WebSockets that come back: a dropped socket reconnects with backoff, and an order's socket
// resumes with afterSeq (the last event it saw), so no event is missed or shown twice.

import { socketUrl } from "./api.js";

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
const health = new Map(); // socket name -> ok?
const healthListeners = [];

export function onHealth(fn) {
  healthListeners.push(fn);
}
function setHealth(name, ok) {
  if (ok === null) health.delete(name);
  else health.set(name, ok);
  const down = [...health.values()].filter((v) => !v).length;
  healthListeners.forEach((fn) => fn(down));
}

export class LiveSocket {
  /**
   * path: the socket's path; params(): its query now; onMessage(obj); done(code): true when a
   * close with that code ends the socket for good (otherwise it reconnects).
   */
  constructor(name, path, { params = () => ({}), onMessage, done = () => false, onClose }) {
    Object.assign(this, { name, path, params, onMessage, done, onClose });
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
  }

  async start() {
    if (this.stopped) return;
    let url;
    try {
      url = await socketUrl(this.path, this.params());
    } catch (err) {
      if (err.status === 401 || err.status === 403) return this.finish(4000 + err.status);
      return this.retry();
    }
    if (this.stopped) return;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      setHealth(this.name, true);
    };
    ws.onmessage = (m) => {
      try {
        this.onMessage(JSON.parse(m.data));
      } catch (err) {
        console.warn("bad message on", this.name, err);
      }
    };
    ws.onclose = (e) => {
      this.ws = null;
      if (this.stopped) return;
      if (this.done(e.code)) this.finish(e.code);
      else this.retry();
    };
  }

  retry() {
    setHealth(this.name, false);
    const delay = BACKOFF_MS[Math.min(this.attempt++, BACKOFF_MS.length - 1)];
    this.timer = setTimeout(() => this.start(), delay);
  }

  finish(code) {
    setHealth(this.name, null);
    this.stopped = true;
    this.onClose?.(code);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    setHealth(this.name, null);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

/** Follow one order's events (replay, then live), resuming after the last seq seen. */
export function followOrder(orderId, onEvent, onEnd) {
  let lastSeq = 0;
  const socket = new LiveSocket(`order:${orderId}`, "/api/orders/execute", {
    params: () => ({ orderId, ...(lastSeq ? { afterSeq: lastSeq } : {}) }),
    onMessage: (event) => {
      if (typeof event.seq !== "number" || event.seq <= lastSeq) return;
      lastSeq = event.seq;
      onEvent(event);
    },
    // 1000: the order finished; 44xx: not ours / not found / no credentials: nothing to resume.
    done: (code) => code === 1000 || (code >= 4400 && code < 4500 && code !== 4408),
    onClose: onEnd,
  });
  socket.start();
  return socket;
}
