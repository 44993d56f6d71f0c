// The query film on a canvas: its uint16 preview under a window / level, and the heat-map
// laid over it in colour. No DOM lookups here: the viewer passes what to draw.

/** Clamp v into [lo, hi]. */
export function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/** The answer's ``query`` decoded: pixels, their range, and the window to start from. */
export function decodeQuery(query) {
  if (!query || !query.pixels || !query.width || !query.height) return null;
  const bytes = Uint8Array.from(atob(query.pixels), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const pixels = new Uint16Array(query.width * query.height);
  let min = 65535;
  let max = 0;
  for (let i = 0; i < pixels.length; i++) {
    const v = view.getUint16(2 * i, true);
    pixels[i] = v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const center = Number.isFinite(query.window_center) ? query.window_center : (min + max) / 2;
  const window = Number.isFinite(query.window_width) ? query.window_width : max - min + 1;
  return { width: query.width, height: query.height, pixels, min, max,
    center, window: Math.max(1, window), defaults: [center, Math.max(1, window)],
    dicom: Boolean(query.dicom), inverted: Boolean(query.inverted) };
}

// A colour ramp for the heat-map: dark blue, cyan, yellow, red (low to high attention).
const RAMP = [[0, [0, 0, 140]], [0.35, [0, 200, 255]], [0.7, [255, 230, 0]], [1, [220, 0, 0]]];

function rampColour(v) {
  for (let i = 1; i < RAMP.length; i++) {
    const [x1, c1] = RAMP[i];
    const [x0, c0] = RAMP[i - 1];
    if (v <= x1) {
      const t = (v - x0) / (x1 - x0);
      return c0.map((c, j) => Math.round(c + t * (c1[j] - c)));
    }
  }
  return RAMP[RAMP.length - 1][1];
}

export function heatCanvas(heatmap) {
  const rows = heatmap && heatmap.values;
  if (!Array.isArray(rows) || !rows.length || !Array.isArray(rows[0])) return null;
  const h = rows.length;
  const w = rows[0].length;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const rgb = rampColour(clamp(Number(rows[y][x]) || 0, 0, 1));
      img.data.set([...rgb, 255], 4 * (y * w + x));
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

function windowed(q) {
  const img = new ImageData(q.width, q.height);
  const low = q.center - q.window / 2;
  const scale = 255 / q.window;
  for (let i = 0; i < q.pixels.length; i++) {
    const level = clamp((q.pixels[i] - low) * scale, 0, 255);
    const g = q.inverted ? 255 - level : level; // MONOCHROME1: high values are dark
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g;
    img.data[4 * i + 3] = 255;
  }
  return img;
}

/**
 * Draw the film (windowed ``query``, else the browser's ``bitmap``) on ``canvas`` at its own
 * size, with the ``heat`` canvas over it at ``opacity`` (0–1). False when there is nothing.
 */
export function paintFilm(canvas, { query, bitmap, heat, opacity }) {
  const source = query ? null : bitmap;
  if (!query && !source) return false;
  canvas.width = query ? query.width : source.width;
  canvas.height = query ? query.height : source.height;
  const ctx = canvas.getContext("2d");
  if (query) ctx.putImageData(windowed(query), 0, 0);
  else ctx.drawImage(source, 0, 0);
  if (heat && opacity > 0) {
    // The network saw the film's central square (shorter side, centred): the map covers that.
    const side = Math.min(canvas.width, canvas.height);
    ctx.globalAlpha = opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heat, (canvas.width - side) / 2, (canvas.height - side) / 2, side, side);
    ctx.globalAlpha = 1;
  }
  return true;
}
