/* The person's own proof, checked in the browser (docs/portal.md, "The proof of an entry").

   Web Crypto only (SHA-256 and Ed25519), no library, nothing sent anywhere. The checks, in order:

   1. the log key: `<name>+<key ID in hex>+base64(0x01 || 32-byte Ed25519 key)`, its key ID the first four bytes
      of SHA-256(name || 0x0A || 0x01 || key) (C2SP signed-note, "Ed25519 signatures");
   2. the checkpoint's signature: the note text — everything up to and including the newline before the last
      blank line — signed by that key (C2SP signed-note, "Format"); signatures by other keys are ignored, one
      by the log key must verify;
   3. the checkpoint's text: origin, tree size, base64 root hash (C2SP tlog-checkpoint), the origin being the
      log key's name;
   4. the proof's tree size is the checkpoint's;
   5. the entry's leaf hash SHA-256(0x00 || UTF-8 bytes of the entry) (RFC 9162 §2.1.1) and its inclusion proof
      lead to the checkpoint's root hash (RFC 9162 §2.1.3.2);
   6. the entry names the position the proof puts it at.

   The page carries the translated messages (data-* attributes of #proof-check) and the proof itself
   (#proof-bundle, a JSON data block). The portal's Content-Security-Policy allows scripts from the portal
   itself on this page only, and no inline script anywhere. */

"use strict";

(() => {
  const encoder = new TextEncoder();

  // C2SP signed-note, "Signature types": 0x01 is Ed25519.
  const ED25519 = 0x01;
  // C2SP signed-note: key names are non-empty, without Unicode spaces or "+"; controls are out too.
  const KEY_NAME = /^[^\s+\u0000-\u001f]+$/u;
  const KEY_ID = /^[0-9a-f]{8}$/;
  // C2SP signed-note: no ASCII control characters other than newline.
  const CONTROL = /[\u0000-\u0009\u000b-\u001f]/;
  // C2SP tlog-checkpoint: the tree size in decimal, without leading zeroes.
  const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
  const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  const HASH_SIZE = 32;

  /** A check that failed; `step` names it (and picks the message the page shows). */
  class ProofError extends Error {
    constructor(step, message) {
      super(message);
      this.name = "ProofError";
      this.step = step;
    }
  }

  function toBase64(bytes) {
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  /* Standard base64 (RFC 4648 §4) in its one canonical spelling, as the broker writes it: another spelling of
     the same bytes (no padding, stray bits in the padding) is refused rather than read. */
  function fromBase64(text, step) {
    if (typeof text !== "string" || !BASE64.test(text)) throw new ProofError(step, "not standard base64");
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    if (toBase64(bytes) !== text) throw new ProofError(step, "not canonical base64");
    return bytes;
  }

  function concat(...parts) {
    const joined = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      joined.set(part, at);
      at += part.length;
    }
    return joined;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  function hex(bytes) {
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  async function sha256(...parts) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
  }

  // RFC 9162 §2.1.1: leaves and interior nodes are hashed with different one-byte prefixes.
  const leafHash = (entry) => sha256(Uint8Array.of(0x00), entry);
  const nodeHash = (left, right) => sha256(Uint8Array.of(0x01), left, right);

  function wellFormed(text) {
    // A lone surrogate would be encoded as U+FFFD and make different text look signed.
    return typeof text === "string" && (typeof text.isWellFormed !== "function" || text.isWellFormed());
  }

  /* A note verifier key. Split at the first two "+" only: the base64 key may itself hold "+". */
  async function parseVerifierKey(text) {
    if (!wellFormed(text)) throw new ProofError("key", "a verifier key is text");
    const first = text.indexOf("+");
    const second = first < 0 ? -1 : text.indexOf("+", first + 1);
    if (second < 0) throw new ProofError("key", "a verifier key is <name>+<key id>+<base64 key>");
    const name = text.slice(0, first);
    const keyIdHex = text.slice(first + 1, second);
    if (!KEY_NAME.test(name) || !KEY_ID.test(keyIdHex)) throw new ProofError("key", "malformed name or key ID");
    const raw = fromBase64(text.slice(second + 1), "key");
    if (raw.length !== 33 || raw[0] !== ED25519) throw new ProofError("key", "not an Ed25519 key");
    const publicKey = raw.slice(1);
    const keyId = (await sha256(encoder.encode(name), Uint8Array.of(0x0a, ED25519), publicKey)).slice(0, 4);
    if (hex(keyId) !== keyIdHex) throw new ProofError("key", "the key ID does not belong to this name and key");
    return { name, keyId, publicKey };
  }

  function parseSignatureLine(line) {
    // "— <key name> base64(4-byte key ID || signature)"
    if (!line.startsWith("\u2014 ")) throw new ProofError("note", "a signature line starts with an em dash");
    const rest = line.slice(2);
    const space = rest.indexOf(" ");
    if (space < 0) throw new ProofError("note", "a signature line holds a name and a signature");
    const name = rest.slice(0, space);
    const data = fromBase64(rest.slice(space + 1), "note");
    if (!KEY_NAME.test(name) || data.length < 5) throw new ProofError("note", "malformed signature line");
    return { name, keyId: data.slice(0, 4), signature: data.slice(4) };
  }

  /* The note's text and signatures. C2SP signed-note: "The note text includes the final newline but not the
     separating blank line", and "the text is separated from the signatures by the last empty line". */
  function splitNote(note) {
    if (!wellFormed(note) || CONTROL.test(note)) throw new ProofError("note", "a note is text without controls");
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new ProofError("note", "no blank line before the signatures");
    const text = note.slice(0, split + 1);
    const block = note.slice(split + 2);
    if (!block.endsWith("\n")) throw new ProofError("note", "the note does not end with a signature line");
    return { text, signatures: block.slice(0, -1).split("\n").map(parseSignatureLine) };
  }

  async function ed25519Verify(publicKey, signature, message) {
    let key;
    try {
      key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    } catch (error) {
      if (error && error.name === "NotSupportedError") throw new ProofError("unsupported", "no Ed25519 here");
      throw new ProofError("key", "the key is not an Ed25519 public key");
    }
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  /* The signed text, and the log key that signed it. C2SP signed-note, "Signatures": signatures by unknown
     keys are ignored; a signature by a known key that fails rejects the whole note; so does no known signature. */
  async function verifyNote(note, keys) {
    const { text, signatures } = splitNote(note);
    const message = encoder.encode(text);
    let signer = null;
    for (const line of signatures) {
      const key = keys.find((k) => k.name === line.name && equal(k.keyId, line.keyId));
      if (!key) continue;
      const valid = line.signature.length === 64 && (await ed25519Verify(key.publicKey, line.signature, message));
      if (!valid) throw new ProofError("signature", `the signature by ${key.name} does not verify`);
      signer = signer || key;
    }
    if (!signer) throw new ProofError("no-signature", "no signature by the log key");
    return { text, signer };
  }

  /* C2SP tlog-checkpoint, "Note text": origin, tree size, root hash, then optional extension lines; none empty. */
  function parseCheckpoint(text) {
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3 || lines.some((line) => line === "")) {
      throw new ProofError("checkpoint", "a checkpoint has at least three non-empty lines");
    }
    const [origin, sizeLine, rootLine] = lines;
    if (!DECIMAL.test(sizeLine) || BigInt(sizeLine) >= 2n ** 64n) {
      throw new ProofError("checkpoint", "the tree size is not a decimal number below 2^64");
    }
    const root = fromBase64(rootLine, "checkpoint");
    if (root.length !== HASH_SIZE) throw new ProofError("checkpoint", "the root hash is not 32 bytes");
    return { origin, size: BigInt(sizeLine), root };
  }

  /* RFC 9162 §2.1.3.2, "Verifying an Inclusion Proof", steps 1–5: the root hash that `leaf` at `index` and its
     inclusion path give for a tree of `size` leaves. A path of the wrong length for this index and size fails
     (step 4a: too long; step 5, sn not 0: too short). */
  async function rootFromInclusionProof(index, size, leaf, path) {
    if (index >= size) throw new ProofError("position", "the index is not below the tree size");
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new ProofError("proof", "the inclusion proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new ProofError("proof", "the inclusion proof is too short");
    return r;
  }

  function checkShape(bundle) {
    const ok =
      bundle !== null &&
      typeof bundle === "object" &&
      wellFormed(bundle.entry) &&
      Number.isSafeInteger(bundle.index) &&
      bundle.index >= 0 &&
      Number.isSafeInteger(bundle.tree_size) &&
      bundle.tree_size >= 0 &&
      Array.isArray(bundle.inclusion_proof) &&
      typeof bundle.checkpoint === "string" &&
      Array.isArray(bundle.verifier_keys) &&
      bundle.verifier_keys.length > 0;
    if (!ok) throw new ProofError("bundle", "the proof lacks a member or has one of the wrong type");
    return bundle.inclusion_proof.map((node) => {
      const bytes = fromBase64(node, "bundle");
      if (bytes.length !== HASH_SIZE) throw new ProofError("bundle", "a proof hash is not 32 bytes");
      return bytes;
    });
  }

  /** Check a proof bundle (audit_read.proof_bundle's shape). Resolves with what was proven; rejects with a
      ProofError naming the first check that failed. */
  async function verifyBundle(bundle) {
    if (!globalThis.crypto || !crypto.subtle) throw new ProofError("unsupported", "no Web Crypto here");
    const path = checkShape(bundle);
    const keys = [];
    for (const text of bundle.verifier_keys) keys.push(await parseVerifierKey(text));
    const { text, signer } = await verifyNote(bundle.checkpoint, keys);
    const checkpoint = parseCheckpoint(text);
    // The log signs under its origin (C2SP tlog-checkpoint: the key name SHOULD be the origin); a valid
    // checkpoint of another log would prove nothing about this one.
    if (checkpoint.origin !== signer.name) throw new ProofError("origin", "the checkpoint is another log's");
    const size = BigInt(bundle.tree_size);
    if (size !== checkpoint.size) throw new ProofError("size", "the tree size is not the checkpoint's");
    const index = BigInt(bundle.index);
    const leaf = await leafHash(encoder.encode(bundle.entry));
    const root = await rootFromInclusionProof(index, size, leaf, path);
    if (!equal(root, checkpoint.root)) throw new ProofError("root", "the proof leads to another root hash");
    let stated;
    try {
      stated = JSON.parse(bundle.entry).index;
    } catch {
      stated = undefined;
    }
    if (stated !== bundle.index) throw new ProofError("entry", "the entry names another position");
    return { origin: checkpoint.origin, treeSize: bundle.tree_size, index: bundle.index, key: signer.name };
  }

  // --- The page ---

  function show(region, outcome, message, className, step) {
    const paragraph = document.createElement("p");
    paragraph.textContent = message;
    region.replaceChildren(paragraph);
    region.className = className;
    region.dataset.outcome = outcome;
    if (step) region.dataset.step = step;
    else delete region.dataset.step;
  }

  function start() {
    const section = document.getElementById("proof-check");
    const button = document.getElementById("proof-verify");
    const region = document.getElementById("proof-result");
    const data = document.getElementById("proof-bundle");
    if (!section || !button || !region || !data) return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      button.disabled = true;
      show(region, "checking", section.dataset.checking, "message");
      try {
        await verifyBundle(JSON.parse(data.textContent));
        show(region, "verified", section.dataset.verified, "message success");
      } catch (error) {
        const step = error instanceof ProofError ? error.step : "bundle";
        if (step === "unsupported") {
          show(region, "unsupported", section.dataset.unsupported, "message notice", step);
        } else {
          const why = section.getAttribute(`data-step-${step}`) || "";
          show(region, "failed", `${section.dataset.failed} ${why}`.trim(), "error-summary", step);
        }
      } finally {
        button.disabled = false;
      }
    });
  }

  // For the browser tests, and for anyone who wants to check another proof from the browser's console.
  globalThis.ConsentBrokerProof = Object.freeze({ verifyBundle, ProofError });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
