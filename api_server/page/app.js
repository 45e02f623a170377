// The web page at /: submit a document to the v1 API, follow the job, show text and word boxes.
// Plain JavaScript on the public API only; no build step, nothing fetched from elsewhere.
"use strict";

const KEY_STORE = "ocr-api-key"; // sessionStorage: the key lives as long as this tab
const LOW_CONFIDENCE = 60;
const POLL_MS = 500;
const RECENT_JOBS = 15;
const FINISHED = new Set(["succeeded", "failed", "canceled"]);
// Formats a browser decodes itself; a PDF or TIFF page is drawn from the service's preview of
// it (GET /v1/jobs/{id}/pages/{n}/image), or as its words where the service kept no document.
const DRAWABLE = new Set(["PNG", "JPEG", "GIF", "WEBP", "BMP"]);
const EXTENSIONS = { text: "txt", json: "json", hocr: "hocr", tsv: "tsv", alto: "alto.xml", pdf: "pdf" };
// Formats made from the pages read (a job of the original API kept only its text).
const PAGE_FORMATS = ["hocr", "tsv", "alto", "pdf"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  files: new Map(), // job id -> the File submitted from this tab, to draw its page image
  job: null, // the job on show
  page: 0, // index into job.pages
  following: 0, // bumped by each job followed, so an older poll loop stops
  word: -1, // the word lit by the keyboard
};

class ApiError extends Error {
  constructor(status, code, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch() on this origin with the key; an error answer becomes an ApiError with the API's
// own code and message (problem+json `detail`).
async function api(path, init = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  let response;
  try {
    response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  } catch {
    throw new ApiError(0, "unreachable", "The service is not answering. Check the connection and try again.");
  }
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  const code = body?.code ?? body?.error?.code ?? `http_${response.status}`;
  const detail = body?.detail ?? body?.error?.message ?? response.statusText;
  const error = new ApiError(response.status, code, detail, response.headers.get("Retry-After"));
  // A late 401 to a key replaced since says nothing of the new one.
  if (response.status === 401 && key === sessionStorage.getItem(KEY_STORE)) askForKey(error);
  throw error;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- messages ----------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function showError(error) {
  let text = error.message;
  if (error.status) text += ` (${error.code}, HTTP ${error.status})`;
  if (error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  $("error").textContent = text;
}

function clearError() {
  $("error").textContent = "";
}

// Shown while no OCR server is alive: jobs are taken but nothing reads them.
function showStall(reason) {
  const warning = $("warning");
  warning.hidden = !reason;
  warning.textContent = reason ? `Nothing reads the queue now: ${reason}.` : "";
}

// -- API key -------------------------------------------------------------------------------------

function askForKey(error) {
  const form = $("key-form");
  form.hidden = false;
  $("key-error").textContent = error.code === "invalid_api_key" ? "That key was not accepted." : "";
  if (sessionStorage.getItem(KEY_STORE) && error.code === "invalid_api_key") {
    sessionStorage.removeItem(KEY_STORE);
  }
  $("key").focus();
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("key").value = "";
  $("key-form").hidden = true;
  clearError();
  await Promise.all([loadJobs(), loadLanguages()]);
});

// -- submitting ----------------------------------------------------------------------------------

function optionFields() {
  const fields = [];
  for (const input of $("options").querySelectorAll("select, input")) {
    const value = input.value.trim();
    if (value) fields.push([input.name, value]);
  }
  return fields;
}

async function submit(file) {
  if (!file) return;
  clearError();
  // The result on show is an earlier document's: gone, whether this one is taken or refused.
  state.following++;
  state.job = null;
  $("result").hidden = true;
  $("progress").hidden = true;
  setStatus(`Uploading ${file.name || "the pasted image"}…`);
  const form = new FormData();
  form.append("file", file, file.name || "pasted");
  for (const [name, value] of optionFields()) form.append(name, value);
  let job;
  try {
    job = await (await api("/v1/jobs", { method: "POST", body: form })).json();
  } catch (error) {
    setStatus("");
    showError(error);
    return;
  }
  state.files.set(job.id, file);
  await follow(job);
}

// Queued: its place, and a warning while nothing reads the queue. Running: pages read so far.
function showProgress(job) {
  const progress = $("progress");
  const pages = job.progress;
  const name = `Job ${job.id.slice(0, 8)}`;
  progress.hidden = false;
  if (job.status === "queued") {
    progress.removeAttribute("value");
    const ahead = job.queue ? `, ${job.queue.jobs_ahead} job${job.queue.jobs_ahead === 1 ? "" : "s"} ahead` : "";
    setStatus(`${name}: queued${ahead}`);
    if (job.queue) showStall(job.queue.stalled);
  } else if (pages && pages.pages_total) {
    progress.max = pages.pages_total;
    progress.value = pages.pages_done;
    setStatus(`${name}: ${job.status}, ${pages.pages_done} of ${pages.pages_total} pages read`);
  } else {
    progress.removeAttribute("value");
    setStatus(`${name}: ${job.status}`);
  }
  if (job.status === "running") showStall(null);
}

// Poll the job until it has finished, then show it. A job opened later takes over.
async function follow(job) {
  const mine = ++state.following;
  showProgress(job);
  while (!FINISHED.has(job.status)) {
    await sleep(POLL_MS);
    if (mine !== state.following) return;
    try {
      job = await (await api(`/v1/jobs/${job.id}`)).json();
    } catch (error) {
      if (error.status === 429 || error.status === 503 || error.status === 0) {
        setStatus(`Waiting for the service (${error.message})`);
        await sleep(Number(error.retryAfter || 2) * 1000);
        continue;
      }
      showError(error);
      return;
    }
    if (mine !== state.following) return;
    showProgress(job);
  }
  $("progress").hidden = true;
  setStatus(`Job ${job.id.slice(0, 8)}: ${job.status}`);
  if (job.status === "succeeded") {
    showStall(null);
    await showJob(job);
  } else if (job.error) {
    showError(new ApiError(0, job.error.code, `The job ${job.status}: ${job.error.message} (${job.error.code})`));
  }
  loadJobs();
}

// -- the result ----------------------------------------------------------------------------------

function meanConfidence(pages) {
  const values = pages.map((page) => page.confidence).filter((value) => value !== null);
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

async function showJob(job) {
  state.job = job;
  state.page = 0;
  $("result").hidden = false;
  $("text").value = (job.text || "").replaceAll("\f", "\n");
  const pages = job.pages || [];
  const confidence = meanConfidence(pages);
  const parts = [`job ${job.id}`, `${pages.length || 1} page${pages.length > 1 ? "s" : ""}`];
  if (confidence !== null) parts.push(`mean confidence ${confidence.toFixed(1)} %`);
  if (job.format) parts.push(job.format);
  $("result-meta").textContent = parts.join(" · ");
  $("pager").hidden = pages.length < 2;
  for (const format of PAGE_FORMATS) {
    for (const button of document.querySelectorAll(`[data-format=${format}]`)) button.hidden = !job.pages;
  }
  await drawPage();
}

function svgNode(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// The page's image: the file sent from this tab as it was sent, else the service's preview of
// the page, already upright; null where neither is there (no document kept).
async function pageBitmap(job, page) {
  const file = state.files.get(job.id);
  if (file && DRAWABLE.has(job.format) && job.pages.length === 1) {
    try {
      return { bitmap: await createImageBitmap(file), upright: false };
    } catch {
      // a format this browser cannot decode: the service's preview instead
    }
  }
  try {
    const preview = await api(`/v1/jobs/${job.id}/pages/${page.page}/image`);
    return { bitmap: await createImageBitmap(await preview.blob()), upright: true };
  } catch {
    return null;
  }
}

// The page as sent, turned upright the way the OCR server turned it (boxes are upright).
function uprightCanvas(bitmap, page, upright) {
  const canvas = document.createElement("canvas");
  canvas.width = page.width;
  canvas.height = page.height;
  const context = canvas.getContext("2d");
  if (upright) {
    context.drawImage(bitmap, 0, 0, page.width, page.height);
    return canvas;
  }
  const turned = page.rotation === 90 || page.rotation === 270;
  const scale = page.width / (turned ? bitmap.height : bitmap.width);
  context.translate(page.width / 2, page.height / 2);
  context.rotate((-page.rotation * Math.PI) / 180);
  context.scale(scale, scale);
  context.drawImage(bitmap, -bitmap.width / 2, -bitmap.height / 2);
  return canvas;
}

function pageWords(page) {
  return page.lines.flatMap((line) => line.words);
}

async function drawPage() {
  const job = state.job;
  const stage = $("stage");
  stage.replaceChildren();
  stage.classList.remove("paper");
  hideTip();
  state.word = -1;
  if (!job.pages || !job.pages.length) {
    stage.classList.add("paper");
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "No word boxes: this job came through the original API, which keeps only the text.";
    stage.append(note);
    $("page-label").textContent = "";
    return;
  }
  const page = job.pages[state.page];
  $("page-label").textContent = `Page ${page.page} (${state.page + 1} of ${job.pages.length})`;
  const words = pageWords(page);
  const svg = svgNode("svg", {
    viewBox: `0 0 ${page.width} ${page.height}`,
    tabindex: "0",
    role: "group",
    "aria-label": `Page ${page.page}: ${words.length} words. Arrow keys go from word to word.`,
  });
  const image = await pageBitmap(job, page);
  if (job !== state.job || page !== job.pages[state.page]) return; // another page asked for since
  if (image) {
    stage.append(uprightCanvas(image.bitmap, page, image.upright));
  } else {
    // No image (the service kept no document): the words at their places.
    stage.classList.add("paper");
    svg.append(svgNode("rect", { width: page.width, height: page.height, fill: "#fff" }));
    for (const word of words) {
      const { left, top, width, height } = word.bbox;
      const text = svgNode("text", {
        x: left,
        y: top + height * 0.82,
        "font-size": Math.max(height, 1),
        textLength: Math.max(width, 1),
        lengthAdjust: "spacingAndGlyphs",
      });
      text.textContent = word.text;
      svg.append(text);
    }
  }
  words.forEach((word, index) => {
    const { left, top, width, height } = word.bbox;
    const low = word.confidence < LOW_CONFIDENCE;
    const rect = svgNode("rect", {
      x: left,
      y: top,
      width,
      height,
      class: low ? "word low" : "word",
      "data-index": index,
      "aria-label": `${word.text}, confidence ${word.confidence.toFixed(0)} %`,
    });
    svg.append(rect);
  });
  svg.addEventListener("mouseover", (event) => {
    const rect = event.target.closest("rect.word");
    if (rect) showTip(rect, words[Number(rect.dataset.index)]);
  });
  svg.addEventListener("mouseout", (event) => {
    if (event.target.closest("rect.word")) hideTip();
  });
  svg.addEventListener("keydown", (event) => moveWord(event, svg, words));
  svg.addEventListener("blur", hideTip);
  stage.append(svg);
}

function moveWord(event, svg, words) {
  const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
  if (!step || !words.length) return;
  event.preventDefault();
  state.word = (state.word + step + words.length) % words.length;
  for (const lit of svg.querySelectorAll("rect.lit")) lit.classList.remove("lit");
  const rect = svg.querySelector(`rect[data-index="${state.word}"]`);
  rect.classList.add("lit");
  showTip(rect, words[state.word]);
}

function showTip(rect, word) {
  const tip = $("tip");
  tip.textContent = `${word.text} — confidence ${word.confidence.toFixed(1)} %`;
  tip.hidden = false;
  const figure = $("figure").getBoundingClientRect();
  const box = rect.getBoundingClientRect();
  tip.style.left = `${Math.max(0, box.left - figure.left)}px`;
  tip.style.top = `${box.bottom - figure.top + 4}px`;
}

function hideTip() {
  $("tip").hidden = true;
}

$("prev").addEventListener("click", () => turnPage(-1));
$("next").addEventListener("click", () => turnPage(1));

function turnPage(step) {
  const count = state.job.pages.length;
  state.page = (state.page + step + count) % count;
  drawPage();
}

$("copy").addEventListener("click", async () => {
  const text = $("text").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (plain http on another host): select it and copy the old way.
    $("text").select();
    document.execCommand("copy");
  }
  setStatus("Text copied.");
});

for (const button of document.querySelectorAll("[data-format]")) {
  button.addEventListener("click", () => download(button.dataset.format));
}

// Through fetch, not a link: with API keys on, the download needs the key in a header.
async function download(format) {
  const job = state.job;
  clearError();
  try {
    const blob = await (await api(`/v1/jobs/${job.id}?format=${format}`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${job.id}.${EXTENSIONS[format]}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    showError(error);
  }
}

// -- recent jobs ---------------------------------------------------------------------------------

async function loadJobs() {
  let listing;
  try {
    listing = await (await api(`/v1/jobs?limit=${RECENT_JOBS}`)).json();
  } catch (error) {
    if (error.status !== 401) showError(error);
    return;
  }
  const items = listing.jobs.map((job) => {
    const button = document.createElement("button");
    button.type = "button";
    const when = new Date(job.created_at).toLocaleString();
    const pages = job.progress ? `${job.progress.pages_total} p.` : "";
    for (const [className, text] of [
      [`state ${job.status}`, job.status],
      ["when", when],
      ["pages", pages],
      ["id", job.id.slice(0, 8)],
    ]) {
      const span = document.createElement("span");
      span.className = className;
      span.textContent = text;
      button.append(span);
    }
    button.setAttribute("aria-label", `Open job ${job.id}, ${job.status}, ${when}`);
    button.addEventListener("click", () => openJob(job.id));
    const item = document.createElement("li");
    item.append(button);
    return item;
  });
  if (!items.length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No jobs yet.";
    items.push(empty);
  }
  $("jobs").replaceChildren(...items);
}

async function openJob(id) {
  clearError();
  try {
    const job = await (await api(`/v1/jobs/${id}`)).json();
    await follow(job);
    $("result").scrollIntoView({ block: "start" });
  } catch (error) {
    showError(error);
  }
}

$("refresh").addEventListener("click", loadJobs);

// -- languages -----------------------------------------------------------------------------------

// The choice of languages is what the OCR servers read (GET /v1/languages); eng is always one.
async function loadLanguages() {
  let listing;
  try {
    listing = await (await api("/v1/languages")).json();
  } catch (error) {
    if (error.status !== 401) showError(error);
    return;
  }
  const select = $("lang");
  const chosen = select.value || listing.default;
  const names = new Set([listing.default, ...listing.languages]);
  select.replaceChildren(
    ...[...names].sort().map((lang) => {
      const option = document.createElement("option");
      option.value = option.textContent = lang;
      option.selected = lang === chosen;
      return option;
    }),
  );
  showStall(listing.stalled);
}

// -- drop, pick, paste ---------------------------------------------------------------------------

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  submit(event.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (event) => {
  if (event.target === drop && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    $("file").click();
  }
});
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // the same file again is a new submission
  submit(file);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])][0];
  if (file) {
    event.preventDefault();
    submit(file);
  }
});

loadJobs();
loadLanguages();
