// freyvae explore: sliders over z, the latent map, interpolation. The server decodes; this page
// asks for one face at a time (at most one request in flight, the latest z wins).
"use strict";

const INACTIVE_KL = 0.05; // nats: the threshold `freyvae traverse` uses
const $ = (id) => document.getElementById(id);
const state = { info: null, z: [], face: 0, mu: [], other: null, sliders: {}, pcs: [], pending: null,
  inFlight: false, control: "dim", yours: null };

function fmt(v, d = 2) { return Number(v).toFixed(d); }
function quote(s) { return /^[\w./-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

// ---- decoding: the latest z wins, never more than one request in flight -------------------
function requestFace() {
  state.pending = state.z.slice();
  if (!state.inFlight) sendNext();
  drawMap();
  showCommand();
}

async function sendNext() {
  const z = state.pending;
  if (!z) return;
  state.pending = null;
  state.inFlight = true;
  try {
    const r = await fetch("/api/decode.png?z=" + z.map((v) => fmt(v, 4)).join(","));
    if (r.ok) setImage($("face"), await r.blob());
  } catch (e) {
    console.warn("decode failed", e);
  } finally {
    state.inFlight = false;
    if (state.pending) sendNext();
  }
}

function setImage(img, blob) {
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

// ---- sliders ------------------------------------------------------------------------------
function buildSliders() {
  const { dims, range } = state.info;
  const inactive = dims.filter((d) => d.kl < INACTIVE_KL);
  for (const d of dims) {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = `dim ${d.index} · KL ${fmt(d.kl)} nats`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -range, max: range, step: 0.01, value: 0 });
    input.dataset.dim = d.index;
    input.addEventListener("input", () => {
      state.z[d.index] = Number(input.value);
      state.control = "dim";
      state.pcs.forEach((pc, k) => { pc.value = pcValue(k); });
      requestFace();
    });
    row.append(name, input);
    (d.kl < INACTIVE_KL ? $("inactive") : $("sliders")).append(row);
    state.sliders[d.index] = input;
  }
  $("inactive-summary").textContent = `${inactive.length} inactive dimensions (KL < ${INACTIVE_KL} nats)`;
  $("inactive-box").hidden = inactive.length === 0;
}

// A principal slider reads z's coordinate along its direction, in standard deviations of the test
// means; moving it moves z along that direction only.
function pcValue(k) {
  const { axes, sd } = state.info.pca, { centre } = state.info.map;
  return axes[k].reduce((s, w, d) => s + w * (state.z[d] - centre[d]), 0) / (sd[k] || 1);
}

function buildPcSliders() {
  const { pca, range } = state.info;
  pca.axes.forEach((axis, k) => {
    const row = document.createElement("label");
    row.className = "slider pc";
    const name = document.createElement("span");
    name.textContent = `PC ${k + 1} · ${Math.round(100 * pca.share[k])}% of variance`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -range, max: range, step: 0.01, value: 0 });
    input.dataset.pc = k;
    input.addEventListener("input", () => {
      const move = (Number(input.value) - pcValue(k)) * pca.sd[k];
      state.control = "pca";
      showSliders(state.z.map((v, d) => v + move * axis[d]), k);
      requestFace();
    });
    row.append(name, input);
    $("pc-sliders").append(row);
    state.pcs.push(input);
  });
}

function showSliders(z, moving = null) { // every slider at z's position, but the one in the hand
  state.z = z.slice();
  const r = state.info.range, clip = (v) => Math.max(-r, Math.min(r, v));
  for (const [d, input] of Object.entries(state.sliders)) input.value = clip(state.z[d]);
  state.pcs.forEach((input, k) => { if (k !== moving) input.value = clip(pcValue(k)); });
}

function setZ(z) {
  showSliders(z);
  requestFace();
}

function fromPrior(eps) { // N(0, I) draws made draws from the model's prior: mean + L eps (prior.py)
  const p = state.info.prior;
  if (!p) return eps;
  return p.mean.map((m, r) => m + p.chol[r].reduce((s, l, c) => s + l * eps[c], 0));
}

function gaussian() { // Box-Muller
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

// ---- the latent map -----------------------------------------------------------------------
function mapGeometry() { // the test faces' means, and your image's, all in view
  const c = $("map"), pad = 16;
  const pts = state.yours ? [...state.info.map.points, project(state.yours.mu)] : state.info.map.points;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (c.width - 2 * pad) / ((x1 - x0) || 1), sy = (c.height - 2 * pad) / ((y1 - y0) || 1);
  return { toPx: (p) => [pad + (p[0] - x0) * sx, c.height - pad - (p[1] - y0) * sy] };
}

function colour(t) { // dark blue -> green -> yellow, like viridis
  const h = 250 - 190 * t, l = 30 + 35 * t;
  return `hsl(${h}, 70%, ${l}%)`;
}

function project(z) {
  const { axes, centre } = state.info.map;
  return axes.map((a) => a.reduce((s, w, d) => s + w * (z[d] - centre[d]), 0));
}

function drawMap() {
  if (!state.info) return;
  const c = $("map"), g = c.getContext("2d"), m = state.info.map, geo = mapGeometry();
  const f0 = Math.min(...m.frames), f1 = Math.max(...m.frames);
  g.clearRect(0, 0, c.width, c.height);
  m.points.forEach((p, i) => {
    const [x, y] = geo.toPx(p);
    g.fillStyle = colour((m.frames[i] - f0) / ((f1 - f0) || 1));
    g.beginPath(); g.arc(x, y, i === state.face || i === state.other ? 5 : 3, 0, 2 * Math.PI); g.fill();
  });
  for (const i of [state.face, state.other]) {
    if (i === null) continue;
    const [x, y] = geo.toPx(m.points[i]);
    g.strokeStyle = "#000"; g.lineWidth = 1.5;
    g.beginPath(); g.arc(x, y, 7, 0, 2 * Math.PI); g.stroke();
  }
  if (state.yours) drawStar(g, geo.toPx(project(state.yours.mu)));
  const [x, y] = geo.toPx(project(state.z));
  g.strokeStyle = "#d11"; g.lineWidth = 2.5;
  g.beginPath(); g.moveTo(x - 7, y - 7); g.lineTo(x + 7, y + 7); g.moveTo(x + 7, y - 7); g.lineTo(x - 7, y + 7); g.stroke();
}

function drawStar(g, [x, y]) { // your image on the map
  g.beginPath();
  for (let k = 0; k < 10; k++) {
    const r = k % 2 ? 4 : 10, a = -Math.PI / 2 + (k * Math.PI) / 5;
    g.lineTo(x + r * Math.cos(a), y + r * Math.sin(a));
  }
  g.closePath();
  g.fillStyle = "#e91e63"; g.fill();
  g.strokeStyle = "#000"; g.lineWidth = 1; g.stroke();
}

function nearestPoint(event) {
  const c = $("map"), rect = c.getBoundingClientRect(), geo = mapGeometry();
  const px = (event.clientX - rect.left) * (c.width / rect.width), py = (event.clientY - rect.top) * (c.height / rect.height);
  let best = null, bestD = 15 * 15;
  state.info.map.points.forEach((p, i) => {
    const [x, y] = geo.toPx(p), d = (x - px) ** 2 + (y - py) ** 2;
    if (d < bestD) { best = i; bestD = d; }
  });
  return best;
}

// ---- faces and interpolation --------------------------------------------------------------
async function loadFace(i) {
  const f = await getJSON("/api/face?i=" + i);
  state.face = i; state.mu = f.mu; state.other = null;
  $("interp").hidden = true;
  $("original").hidden = !state.info.faces; // a pretrained model without the data file has no faces to show
  if (state.info.faces) $("original").src = "/api/original.png?i=" + i;
  $("recon").src = "/api/decode.png?z=" + f.mu.map((v) => fmt(v, 4)).join(",");
  $("original-label").textContent = `test face ${i} (frame ${f.frame})` +
    (state.info.faces ? "" : ": the face itself needs the data file (freyvae download)");
  setZ(f.mu);
}

async function interpolateTo(j) {
  const f = await getJSON("/api/face?i=" + j);
  state.other = j; state.otherMu = f.mu;
  $("strip").src = `/api/interpolate.png?a=${state.face}&b=${j}&steps=10`;
  $("interp").hidden = false;
  $("walk").value = 0;
  setZ(state.mu);
}

function walk() {
  const t = Number($("walk").value);
  setZ(state.mu.map((v, d) => (1 - t) * v + t * state.otherMu[d]));
}

// ---- your image: made a face here exactly as `freyvae encode` makes it (freyvae_cli/data/images.py):
// upright, over white, grey as 0.299 R + 0.587 G + 0.114 B, the largest centred 20:28 box, then
// Pillow's box filter down to 20x28. Only the 560 grey values go to the server.
const FACE_W = 20, FACE_H = 28, MAX_PIXELS = 50e6;

function cropBox(w, h) {
  if (w * FACE_H > h * FACE_W) { const c = (h * FACE_W) / FACE_H; return [(w - c) / 2, 0, (w + c) / 2, h]; }
  const c = (w * FACE_H) / FACE_W;
  return [0, (h - c) / 2, w, (h + c) / 2];
}

function boxWeights(inSize, outSize, start, end) { // Pillow's box filter (Resample.c, precompute_coeffs)
  const scale = (end - start) / outSize, fscale = Math.max(scale, 1), support = 0.5 * fscale;
  const taps = [];
  for (let i = 0; i < outSize; i++) {
    const centre = start + (i + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(centre - support + 0.5)), hi = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const w = [];
    for (let x = lo; x < hi; x++) { const t = (x - centre + 0.5) / fscale; w.push(t > -0.5 && t <= 0.5 ? 1 : 0); }
    const sum = w.reduce((a, b) => a + b, 0) || 1;
    taps.push({ lo, w: w.map((v) => v / sum) });
  }
  return taps;
}

async function faceFromFile(file) {
  let bitmap;
  try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); } catch (e) {
    throw new Error(`${file.name} is not an image this browser can read`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) throw new Error(`${file.name} has more than 50 megapixels; shrink it first`);
  if (width < FACE_W || height < FACE_H) {
    throw new Error(`${file.name} is ${width}x${height} pixels; a face needs at least ${FACE_W}x${FACE_H}`);
  }
  const c = document.createElement("canvas");
  c.width = width; c.height = height;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.fillStyle = "#fff"; g.fillRect(0, 0, width, height);
  g.drawImage(bitmap, 0, 0);
  const rgba = g.getImageData(0, 0, width, height).data, box = cropBox(width, height);
  const cols = boxWeights(width, FACE_W, box[0], box[2]), rows = boxWeights(height, FACE_H, box[1], box[3]);
  const face = [];
  for (const row of rows) {
    for (const col of cols) {
      let s = 0;
      row.w.forEach((wy, a) => {
        if (!wy) return;
        const at = (row.lo + a) * width;
        col.w.forEach((wx, b) => {
          if (!wx) return;
          const p = 4 * (at + col.lo + b);
          s += wy * wx * (0.299 * rgba[p] + 0.587 * rgba[p + 1] + 0.114 * rgba[p + 2]);
        });
      });
      face.push(Math.min(255, Math.max(0, Math.round(s))));
    }
  }
  return face;
}

function faceBlob(face) { // the 28x20 face as the model sees it, for the <img>
  const c = document.createElement("canvas");
  c.width = FACE_W; c.height = FACE_H;
  const g = c.getContext("2d"), img = g.createImageData(FACE_W, FACE_H);
  face.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  g.putImageData(img, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve));
}

async function useImage(file) {
  $("yours-note").textContent = `reading ${file.name}…`;
  try {
    const face = await faceFromFile(file);
    const r = await fetch("/api/encode?face=" + face.join(","));
    const found = await r.json();
    if (!r.ok) throw new Error(found.error || r.status);
    state.yours = { name: file.name, mu: found.mu };
    state.face = null; state.other = null; state.mu = found.mu;
    $("interp").hidden = true;
    $("original").hidden = false;
    setImage($("original"), await faceBlob(face));
    $("recon").src = "/api/decode.png?z=" + found.mu.map((v) => fmt(v, 4)).join(",");
    const bits = found.bits_per_dim === undefined ? "" : ` (${fmt(found.bits_per_dim)} bits/dim)`;
    $("original-label").textContent = `your image: ${file.name}`;
    $("yours-note").textContent = `${file.name}: -ELBO ${fmt(found.neg_elbo, 1)} nats per image${bits}`;
    document.body.dataset.yours = file.name;
    setZ(found.mu);
  } catch (e) {
    $("yours-note").textContent = e.message;
  }
}

function showCommand() {
  const ck = state.info.named ?? `-c ${quote(state.info.checkpoint)}`, r = state.info.range;
  if (state.face === null) {
    $("command").textContent = `freyvae encode ${quote(state.yours.name)} ${ck}`;
    return;
  }
  const pca = state.control === "pca" ? ` --pca --k ${state.pcs.length}` : "";
  $("command").textContent = state.other !== null
    ? `freyvae interpolate ${ck} --from ${state.face} --to ${state.other} --steps 10`
    : `freyvae traverse ${ck}${pca} --face ${state.face} --range ${r}`;
}

// ---- start --------------------------------------------------------------------------------
async function main() {
  state.info = await getJSON("/api/info");
  const i = state.info;
  const loss = i.test_loss === null ? "" : ` · test loss ${fmt(i.test_loss)} ${i.units}`;
  $("info").textContent = `${i.named ?? i.checkpoint} · ${i.model} model · ${i.likelihood} likelihood · ${i.epochs} epochs${loss}`;
  $("drawn").textContent = i.drawn;
  state.z = new Array(i.latent_dim).fill(0);
  buildPcSliders();
  buildSliders();
  $("reset").addEventListener("click", () => setZ(state.mu));
  $("zero").addEventListener("click", () => setZ(new Array(i.latent_dim).fill(0)));
  $("random").addEventListener("click", () => setZ(fromPrior(state.z.map(gaussian))));
  $("walk").addEventListener("input", walk);
  $("map").addEventListener("click", (e) => {
    const j = nearestPoint(e);
    if (j === null) return;
    if (e.shiftKey && state.face !== null && j !== state.face) interpolateTo(j); else loadFace(j);
  });
  $("upload").addEventListener("change", () => { if ($("upload").files[0]) useImage($("upload").files[0]); });
  for (const kind of ["dragover", "drop"]) window.addEventListener(kind, (e) => e.preventDefault()); // never navigate away
  const panel = $("face-panel");
  panel.addEventListener("dragover", (e) => { e.preventDefault(); panel.classList.add("dragging"); });
  panel.addEventListener("dragleave", () => panel.classList.remove("dragging"));
  panel.addEventListener("drop", (e) => {
    e.preventDefault();
    panel.classList.remove("dragging");
    if (e.dataTransfer.files[0]) useImage(e.dataTransfer.files[0]);
  });
  await loadFace(0);
  document.body.dataset.ready = "1";
}

main().catch((e) => { console.error(e); $("info").textContent = "could not load: " + e.message; });
