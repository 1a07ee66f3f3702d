// Checking the engine's signature in the browser: decode the signed v0 transaction, check that
// its first signature is txHash and that it is the signer's ed25519 signature over the message
// (WebCrypto; available in secure contexts: https, or http on localhost).

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export function base58encode(bytes) {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = "";
  while (n > 0n) {
    out = ALPHABET[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = "1" + out;
  }
  return out;
}

export function base58decode(text) {
  let n = 0n;
  for (const c of text) {
    const i = ALPHABET.indexOf(c);
    if (i < 0) throw new Error("not base58");
    n = n * 58n + BigInt(i);
  }
  const bytes = [];
  while (n > 0n) {
    bytes.unshift(Number(n % 256n));
    n /= 256n;
  }
  for (const c of text) {
    if (c !== "1") break;
    bytes.unshift(0);
  }
  return new Uint8Array(bytes);
}

function compactU16(bytes, at) {
  let value = 0;
  for (let i = 0; i < 3; i++) {
    const b = bytes[at + i];
    value |= (b & 0x7f) << (7 * i);
    if (!(b & 0x80)) return [value, at + i + 1];
  }
  throw new Error("bad compact-u16");
}

/** {signatures: [Uint8Array(64)], message: Uint8Array, feePayer: base58} of a wire transaction. */
export function parseTransaction(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const [count, sigStart] = compactU16(bytes, 0);
  const signatures = [];
  for (let i = 0; i < count; i++) signatures.push(bytes.slice(sigStart + 64 * i, sigStart + 64 * (i + 1)));
  const message = bytes.slice(sigStart + 64 * count);
  // v0 messages start with 0x80 | version; then 3 header bytes, then the account keys.
  let at = message[0] & 0x80 ? 1 : 0;
  at += 3;
  const [, keysStart] = compactU16(message, at);
  const feePayer = base58encode(message.slice(keysStart, keysStart + 32));
  return { signatures, message, feePayer, version: message[0] & 0x80 ? message[0] & 0x7f : "legacy" };
}

/** What the browser can say about a signed transaction: {ok, checks: [[label, passed]], note}. */
export async function verifyTransaction(base64, signer, txHash) {
  const tx = parseTransaction(base64);
  const signature = tx.signatures[0];
  const checks = [
    ["the transaction's first signature is txHash", base58encode(signature) === txHash],
    ["its fee payer (first account) is the engine's signer", tx.feePayer === signer],
  ];
  if (!globalThis.crypto?.subtle) {
    return { ok: null, checks, note: "This page is not a secure context (https or localhost), so the browser offers no ed25519 check here; verify with solders as the README shows." };
  }
  try {
    const key = await crypto.subtle.importKey("raw", base58decode(signer), { name: "Ed25519" }, false, ["verify"]);
    const valid = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, tx.message);
    checks.push(["ed25519 signature over the message verifies with the signer's key", valid]);
  } catch (err) {
    return { ok: null, checks, note: `This browser cannot check ed25519 signatures (${err.name}).` };
  }
  return { ok: checks.every(([, passed]) => passed), checks };
}
