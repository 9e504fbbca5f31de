// The demo page: classify a photo, ask the FAQ, list what the host serves. Everything comes
// from the host's documented endpoints (/classify, /faq, /readyz, /catalog); an API key, when
// the host asks for one, is kept for this tab only (sessionStorage).
"use strict";

const KEY_STORE = "scoria-api-key";

/** An element with text and attributes; children appended. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

/** `Server-Timing` as a map from step to milliseconds. */
function serverTiming(header) {
  const steps = {};
  for (const part of (header || "").split(",")) {
    const m = part.trim().match(/^([\w-]+).*?dur=([\d.]+)/);
    if (m) steps[m[1]] = (steps[m[1]] || 0) + parseFloat(m[2]);
  }
  return steps;
}

/** Call the host: `{status, body, timing}`; body is the parsed JSON, or null. */
async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.set("authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    return { status: 0, body: { error: { code: "unreachable", message: `the host did not answer (${e.message})` } } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) askForKey(body);
  return { status: response.status, body, timing: serverTiming(response.headers.get("server-timing")) };
}

/** The server's own message for a failed call. */
function failure(result) {
  const err = result.body && result.body.error;
  const text = err ? `${err.message} (${result.status} ${err.code})` : `the host answered ${result.status} with no message`;
  return el("p", { class: "error", role: "alert", text: `Error: ${text}` });
}

function askForKey(body) {
  const panel = document.getElementById("key-panel");
  const reason = body && body.error ? body.error.message : "the host refused the request";
  const stored = sessionStorage.getItem(KEY_STORE);
  document.getElementById("key-reason").textContent = stored
    ? `The key you gave was refused: ${reason}. Enter another.`
    : `This host needs an API key for its functions: ${reason}. Requests are refused until you give one.`;
  panel.hidden = false;
}

function ms(x) {
  return `${x.toFixed(x < 10 ? 2 : 1)} ms`;
}

/** "took 12.3 ms: host 1.2 ms (queue, body, instance), function 11.1 ms (inference 9.0 ms)". */
function timingLine(t) {
  if (!("total" in t)) return null;
  const host = (t.queue || 0) + (t.body || 0) + (t.instance || 0);
  const fn = Math.max(0, t.total - host);
  const inference = "inference" in t ? `, of which inference ${ms(t.inference)}` : "";
  return el("p", {
    class: "timing",
    text: `Took ${ms(t.total)} in the host: ${ms(host)} serving (queue, body, instance), ${ms(fn)} in the function${inference}.`,
  });
}

// --- Classify a photo -------------------------------------------------------------------

async function classify(file) {
  const out = document.getElementById("classify-result");
  out.replaceChildren(el("p", { text: `Classifying ${file.name}…` }));
  // A file the browser cannot show as an image gets no thumbnail, only the server's answer.
  const thumb = file.type.startsWith("image/")
    ? el("img", { src: URL.createObjectURL(file), alt: `The photo sent: ${file.name}` })
    : null;
  const result = await call("/classify", {
    method: "POST",
    headers: { "content-type": file.type || "application/octet-stream" },
    body: file,
  });
  if (result.status !== 200 || !result.body || !Array.isArray(result.body.predictions)) {
    out.replaceChildren(el("div", { class: "result" }, thumb, failure(result)));
    return;
  }
  const v = result.body;
  const list = el("ol", { class: "predictions", "aria-label": "Top five classes" });
  for (const p of v.predictions) {
    const pct = (p.score * 100).toFixed(1);
    const bar = el("div", { class: "bar", role: "presentation" }, el("span", { style: `width: ${pct}%` }));
    list.append(
      el("li", { class: "prediction" },
        el("div", { class: "bar-label" }, el("span", { class: "label", text: p.label }), el("span", { class: "score", text: `${pct}%` })),
        bar),
    );
  }
  const real = v.weights === "pretrained" ? "real, pretrained weights" : `weights: ${v.weights} (not trained; predictions are meaningless)`;
  out.replaceChildren(
    el("div", { class: "result" }, thumb, list),
    el("p", { class: "meta", text: `Model ${v.model}, ${real}.` }),
    timingLine(result.timing),
  );
}

function setUpPhoto() {
  const input = document.getElementById("photo");
  const zone = document.getElementById("drop-zone");
  input.addEventListener("change", () => {
    if (input.files.length) classify(input.files[0]);
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
  });
}

// --- Ask the FAQ ------------------------------------------------------------------------

async function ask(question) {
  const out = document.getElementById("faq-result");
  out.replaceChildren(el("p", { text: "Looking for a match…" }));
  const result = await call("/faq", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ question }),
  });
  if (result.status !== 200 || !result.body || !Array.isArray(result.body.matches)) {
    out.replaceChildren(failure(result));
    return;
  }
  const v = result.body;
  if (v.no_match || v.matches.length === 0) {
    out.replaceChildren(
      el("p", { class: "no-match", role: "status", text: "No match: no entry of the FAQ is close enough to this question." }),
      timingLine(result.timing),
    );
    return;
  }
  const list = el("ol", { class: "matches", "aria-label": "Matching FAQ entries" });
  for (const m of v.matches) {
    list.append(
      el("li", { class: "match" },
        el("strong", { class: "match-question", text: m.question }),
        el("span", { class: "score", text: ` score ${m.score.toFixed(3)}` }),
        m.answer ? el("p", { class: "answer", text: m.answer }) : null),
    );
  }
  out.replaceChildren(list, timingLine(result.timing));
}

function setUpFaq() {
  const form = document.getElementById("faq-form");
  const input = document.getElementById("question");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value.trim()) ask(input.value.trim());
  });
  for (const b of document.querySelectorAll("button.example")) {
    b.addEventListener("click", () => {
      input.value = b.textContent;
      ask(b.textContent);
    });
  }
}

// --- What the host serves ---------------------------------------------------------------

function table(caption, columns, rows) {
  const head = el("tr", {}, ...columns.map((c) => el("th", { scope: "col", text: c })));
  const body = rows.map((r) => el("tr", {}, ...r.map((cell) => el("td", { text: cell }))));
  return el("div", { class: "scroll" }, el("table", {}, el("caption", { text: caption }), el("thead", {}, head), el("tbody", {}, ...body)));
}

async function refreshHost() {
  const status = document.getElementById("host-status");
  const ready = await call("/readyz");
  status.textContent = ready.status === 200
    ? "The host is ready."
    : `The host is not ready: ${ready.body && ready.body.error ? ready.body.error.message : `status ${ready.status}`}.`;
  const out = document.getElementById("catalog");
  const result = await call("/catalog");
  if (result.status !== 200 || !result.body) {
    out.replaceChildren(failure(result));
    return;
  }
  const c = result.body;
  out.replaceChildren(
    table("Functions", ["function", "routes", "models", "version (sha256)"],
      c.functions.map((f) => [f.id, f.routes.join(", "), f.models.join(", ") || "none", f.digest ? f.digest.slice(0, 12) : "loading"])),
    table("Models", ["model", "version", "weights", "backend", "device"],
      c.models.map((m) => [m.name, m.version, m.weights, m.backend, m.device])),
  );
}

function setUpKey() {
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = document.getElementById("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    document.getElementById("key-panel").hidden = true;
    refreshHost();
  });
}

setUpKey();
setUpPhoto();
setUpFaq();
refreshHost();
