// The cxrhash viewer: upload a radiograph, show it (window/level, heat-map), list its
// nearest cases, compare one side by side. Plain DOM, no framework; every text from the
// server goes in as text (textContent), never parsed as HTML: case ids and findings are data.
import { clamp, decodeQuery, heatCanvas, paintFilm } from "./film.js";

const $ = (id) => document.getElementById(id);
const state = {
  file: null, // the File searched last, kept to search again with other k / filter
  seq: 0, // number of the latest search; older answers are dropped
  result: null, // the last search answer
  query: null, // {width, height, pixels: Uint16Array, min, max, center, window}
  bitmap: null, // the upload drawn by the browser when the answer has no pixels
  heat: null, // an offscreen canvas with the coloured heat-map
  opener: null, // the card that opened the side-by-side view, focused again on close
  queryFile: null, // the File that state.query was decoded from
};

// ---- small helpers -------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setStatus(text) {
  $("status").textContent = text;
}

/** A same-origin path from the server, or null (a URL elsewhere is never loaded). */
function localUrl(url) {
  return typeof url === "string" && url.startsWith("/") && !url.startsWith("//") ? url : null;
}

// ---- the index ------------------------------------------------------------------

async function loadStats() {
  try {
    const res = await fetch("/api/stats");
    if (!res.ok) throw new Error(`status ${res.status}`);
    const stats = await res.json();
    $("index-info").textContent =
      `${stats.size} films in the index · ${stats.bits}-bit codes · model ${stats.model_id}`;
    const filter = $("finding-filter");
    for (const name of stats.label_names || []) filter.append(new Option(name, name));
    if (stats.stores_floats) $("rerank-select").append(new Option("floats", "floats"));
  } catch (err) {
    $("index-info").textContent = "The server did not answer; searching may not work.";
  }
}

// ---- searching ------------------------------------------------------------------

function searchUrl() {
  const params = new URLSearchParams();
  params.set("k", String(readK()));
  params.set("rerank", $("rerank-select").value);
  const finding = $("finding-filter").value;
  if (finding) params.append("finding", finding);
  return `/api/search?${params}`;
}

function readK() {
  const input = $("k-input");
  const k = clamp(Math.round(Number(input.value) || 10), 1, 100);
  input.value = String(k);
  return k;
}

async function errorText(res) {
  try {
    const body = await res.json();
    const err = body && body.error;
    if (err && err.code === "unreadable_image") {
      return `This file could not be read as a radiograph (${err.message}). ` +
        "Choose a PNG, JPEG or DICOM image.";
    }
    if (err && err.message) return `The search failed: ${err.message}`;
  } catch (ignored) {
    // not JSON: fall through to the status line
  }
  return `The search failed (HTTP ${res.status}).`;
}

async function search() {
  if (!state.file) return;
  const seq = ++state.seq;
  const form = new FormData();
  form.append("image", state.file, "upload");
  showMessage("");
  setStatus("Searching…");
  $("results").setAttribute("aria-busy", "true");
  try {
    const res = await fetch(searchUrl(), { method: "POST", body: form });
    if (seq !== state.seq) return;
    if (!res.ok) {
      clearResults();
      showMessage(await errorText(res));
      setStatus("");
      return;
    }
    const result = await res.json();
    if (seq !== state.seq) return;
    await showResult(result);
  } catch (err) {
    if (seq !== state.seq) return;
    clearResults();
    showMessage("The server could not be reached. Is cxrhash serve still running?");
    setStatus("");
  } finally {
    if (seq === state.seq) {
      $("results").removeAttribute("aria-busy");
      // how many searches have been answered: lets a test (or a person's script) wait
      document.body.dataset.searches = String(seq);
    }
  }
}

function startSearch(file) {
  if (!file) return;
  state.file = file;
  state.bitmap = null;
  $("search-button").disabled = false;
  search();
}

function clearResults() {
  state.result = null;
  state.query = null;
  state.heat = null;
  $("gallery").replaceChildren();
  $("closeness").hidden = true;
  $("query-figure").hidden = true;
  $("window-controls").hidden = true;
  $("heatmap-controls").hidden = true;
  $("predicted").hidden = true;
  $("gallery-summary").textContent = "Drop or choose a radiograph to search the archive.";
}

async function showResult(result) {
  const previous = state.query;
  state.result = result;
  state.query = decodeQuery(result.query);
  if (previous && state.query && state.queryFile === state.file) {
    // the same film searched again (other k, filter): keep the window the reader set
    state.query.center = previous.center;
    state.query.window = previous.window;
  }
  state.queryFile = state.file;
  state.heat = heatCanvas(result.heatmap);
  if (!state.query) state.bitmap = await browserBitmap(state.file);
  showQuery(result);
  showPredicted(result);
  showCloseness(result.closeness);
  showGallery(result);
  setStatus(timingText(result.timings));
}

function timingText(t) {
  const ms = (v) => (Number.isFinite(v) ? v : 0);
  const [d, e, s] = [ms(t && t.decode_ms), ms(t && t.encode_ms), ms(t && t.search_ms)];
  return `Searched in ${(d + e + s).toFixed(0)} ms (decode ${d.toFixed(0)}, ` +
    `encode ${e.toFixed(0)}, search ${s.toFixed(0)}).`;
}

async function browserBitmap(file) {
  try {
    return await createImageBitmap(file);
  } catch (err) {
    return null; // e.g. a DICOM, which the browser cannot draw
  }
}

// ---- the query image: window / level and heat-map ---------------------------------

/** Draw the query and its heat-map (at the slider's opacity) on ``canvas``. */
function drawQuery(canvas) {
  return paintFilm(canvas, { query: state.query, bitmap: state.bitmap, heat: state.heat,
    opacity: Number($("heat-opacity").value) / 100 });
}

function showQuery(result) {
  const drawn = drawQuery($("query-canvas"));
  $("query-figure").hidden = !drawn;
  $("heatmap-controls").hidden = !(drawn && state.heat);
  const q = state.query;
  $("window-controls").hidden = !q;
  if (q) syncWindowSliders();
  const kind = result.heatmap && result.heatmap.kind ? ` (${result.heatmap.kind})` : "";
  $("query-caption").textContent = drawn
    ? `${q && q.dicom ? "DICOM" : "Image"} ${$("query-canvas").width}×` +
      `${$("query-canvas").height}${state.heat ? `, heat-map${kind}` : ""}`
    : "";
}

function syncWindowSliders() {
  const q = state.query;
  const center = $("wl-center");
  const width = $("wl-width");
  center.min = String(q.min);
  center.max = String(Math.max(q.max, q.min + 1));
  width.max = String(Math.max(q.max - q.min + 1, q.window, 2));
  center.value = String(q.center);
  width.value = String(q.window);
  $("wl-center-value").textContent = String(Math.round(q.center));
  $("wl-width-value").textContent = String(Math.round(q.window));
}

function setWindow(center, window) {
  const q = state.query;
  if (!q) return;
  q.center = clamp(center, q.min - q.window, q.max + q.window);
  q.window = clamp(window, 1, 2 * (q.max - q.min + 1));
  syncWindowSliders();
  drawQuery($("query-canvas"));
}

function bindWindowing() {
  $("wl-center").addEventListener("input", (e) => setWindow(Number(e.target.value), state.query.window));
  $("wl-width").addEventListener("input", (e) => setWindow(state.query.center, Number(e.target.value)));
  $("wl-reset").addEventListener("click", () => setWindow(...state.query.defaults));
  $("heat-opacity").addEventListener("input", (e) => {
    $("heat-opacity-value").textContent = `${e.target.value} %`;
    drawQuery($("query-canvas"));
  });
  const canvas = $("query-canvas");
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.query) return;
    drag = { x: e.clientX, y: e.clientY, center: state.query.center, window: state.query.window };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    // Like a PACS: right widens the window, down raises the level.
    const perPixel = (state.query.max - state.query.min + 1) / canvas.clientWidth;
    setWindow(drag.center + (e.clientY - drag.y) * perPixel, drag.window + (e.clientX - drag.x) * perPixel);
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("keydown", (e) => windowKey(e));
}

function windowKey(e) {
  const q = state.query;
  const steps = { ArrowUp: [1, 0], ArrowDown: [-1, 0], ArrowRight: [0, 1], ArrowLeft: [0, -1] };
  if (!q || !(e.key in steps)) return;
  e.preventDefault();
  const step = (q.max - q.min + 1) / 50;
  setWindow(q.center + steps[e.key][0] * step, q.window + steps[e.key][1] * step);
}

// ---- findings and closeness -------------------------------------------------------

function findingChips(list, findings, shared) {
  list.replaceChildren();
  for (const name of findings) {
    const isShared = shared.includes(name);
    const chip = el("li", isShared ? "chip shared" : "chip", isShared ? `✓ ${name}` : name);
    chip.dataset.finding = name;
    if (isShared) chip.title = "also predicted for the query";
    list.append(chip);
  }
}

function showPredicted(result) {
  const list = $("predicted-list");
  list.replaceChildren();
  const positive = result.predicted_findings || [];
  const ranked = Object.entries(result.predicted || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of ranked) {
    const chip = el("li", positive.includes(name) ? "chip shared" : "chip", `${name} ${(100 * p).toFixed(0)} %`);
    chip.dataset.finding = name;
    list.append(chip);
  }
  $("predicted").hidden = ranked.length === 0;
}

function showCloseness(closeness) {
  const box = $("closeness");
  const far = closeness && closeness.close === false;
  box.textContent = far ? closeness.message || "No close match in this archive." : "";
  box.hidden = !far;
}

// ---- the gallery and the side-by-side view ----------------------------------------

function card(hit) {
  const button = el("button", "card");
  button.type = "button";
  button.dataset.caseId = hit.case_id;
  const url = localUrl(hit.thumbnail_url);
  if (url) {
    const img = el("img", "thumb");
    img.src = url;
    img.alt = "";
    img.loading = "lazy";
    button.append(img);
  } else {
    button.append(el("span", "thumb placeholder", "no image"));
  }
  const score = hit.score === null || hit.score === undefined ? "" : ` · score ${hit.score.toFixed(3)}`;
  button.append(el("span", "rank", `#${hit.rank + 1}`));
  button.append(el("span", "distance", `distance ${hit.distance}${score}`));
  button.append(el("span", "case-id", hit.case_id));
  const chips = el("ul", "chips");
  findingChips(chips, hit.findings || [], hit.shared_findings || []);
  button.append(chips);
  button.setAttribute("aria-label", `Case ${hit.rank + 1}, distance ${hit.distance}, ` +
    `findings ${(hit.findings || []).join(", ")}. Open to compare with the query.`);
  button.addEventListener("click", () => openCompare(hit));
  const item = el("li");
  item.append(button);
  return item;
}

function showGallery(result) {
  const hits = result.hits || [];
  $("gallery").replaceChildren(...hits.map(card));
  const filter = result.finding_filter || [];
  const which = filter.length ? ` with ${filter.join(" and ")}` : "";
  const among = filter.length && result.searched ? ` among the ${result.searched} nearest` : "";
  $("gallery-summary").textContent = hits.length
    ? `${hits.length} nearest case${hits.length === 1 ? "" : "s"}${which}${among} (k = ${result.k}).`
    : `No case${which}${among}.`;
}

async function openCompare(hit) {
  const dialog = $("compare");
  $("compare-heading").textContent = `Query and case #${hit.rank + 1} (distance ${hit.distance})`;
  drawQuery($("compare-query"));
  const positive = (state.result && state.result.predicted_findings) || [];
  $("compare-query-findings").textContent = positive.length ? ` · predicted: ${positive.join(", ")}` : "";
  const img = $("compare-case");
  const url = localUrl(hit.thumbnail_url);
  img.hidden = !url;
  $("compare-case-missing").hidden = Boolean(url);
  if (url) {
    img.src = url;
    img.alt = `Case ${hit.case_id}`;
  } else {
    img.removeAttribute("src");
  }
  caseCaption(hit, hit.findings || []);
  if (!dialog.open) {
    state.opener = document.activeElement;
    dialog.showModal();
  }
  $("compare-close").focus();
  try {
    const res = await fetch(`/api/cases/${encodeURIComponent(hit.case_id)}`);
    if (res.ok) caseCaption(hit, (await res.json()).findings || []);
  } catch (err) {
    // the gallery's findings are already shown
  }
}

function caseCaption(hit, findings) {
  const caption = $("compare-case-caption");
  caption.replaceChildren(el("span", "", `Case ${hit.case_id} · `));
  const chips = el("ul", "chips chips-inline");
  findingChips(chips, findings, hit.shared_findings || []);
  caption.append(findings.length ? chips : el("span", "", "no report"));
  if (hit.pacs) caption.append(pacsLine(hit.pacs));
}

// Where a case indexed from a PACS lives there: its UIDs, and its WADO-RS URL when known.
function pacsLine(pacs) {
  const line = el("p", "pacs", `In the PACS: study ${pacs.study_uid}, instance ${pacs.sop_uid}`);
  if (pacs.wado_url && /^https?:\/\//.test(pacs.wado_url)) {
    const link = el("a", "", "WADO-RS");
    link.href = pacs.wado_url;
    link.rel = "noopener noreferrer";
    line.append(" · ", link);
  }
  return line;
}

// ---- wiring -------------------------------------------------------------------

function bindUpload() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => startSearch(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    startSearch(e.dataTransfer.files[0]);
  });
  // A film dropped beside the zone must not make the browser navigate away to it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
}

function bindControls() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  for (const id of ["k-input", "finding-filter", "rerank-select"]) {
    $(id).addEventListener("change", () => search());
  }
  $("compare-close").addEventListener("click", () => $("compare").close());
  $("compare").addEventListener("close", () => {
    if (state.opener && state.opener.isConnected) state.opener.focus();
  });
  $("compare").addEventListener("click", (e) => {
    if (e.target === $("compare")) $("compare").close(); // a click on the backdrop
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("heat-opacity-value").textContent = `${$("heat-opacity").value} %`;
  bindUpload();
  bindControls();
  bindWindowing();
  loadStats();
});
