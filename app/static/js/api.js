// The engine's HTTP API from the page: same origin, the key (AUTH_MODE=keys) from this tab's
// sessionStorage, errors as {status, code, error, details}.

const KEY = "oee.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || (status === 0 ? "UNREACHABLE" : `HTTP_${status}`);
    this.details = Array.isArray(body?.details) ? body.details : [];
  }
  get unreachable() {
    return this.status === 0 || this.status === 503;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

const listeners = { unauthorized: [], reachable: [] };
export const onApi = (name, fn) => listeners[name].push(fn);
const emit = (name, arg) => listeners[name].forEach((fn) => fn(arg));

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    emit("reachable", false);
    throw new ApiError(0, { error: "The engine cannot be reached." });
  }
  emit("reachable", response.status !== 503);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) emit("unauthorized");
    throw new ApiError(response.status, data);
  }
  return data;
}

/** A WebSocket URL on this origin; with a key, a one-use token stands for it (never the key). */
export async function socketUrl(path, params = {}) {
  const url = new URL(path, location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  if (apiKey.get()) {
    const { token } = await api("/api/ws-tokens", { method: "POST" });
    url.searchParams.set("token", token);
  }
  return url.toString();
}
