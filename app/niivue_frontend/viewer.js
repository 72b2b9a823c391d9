// The viewer's slice display: NiiVue (WebGL) in a Streamlit component iframe.
//
// Python sends URLs of the scan and of an 8-bit display copy of the map (files served from this
// component's folder) plus display settings. Volumes load once per URL; every other interaction
// (wheel and key slice scrolling, window/level drag, zoom and pan, crosshair, value under the cursor,
// overlay toggle) stays in the browser. Only deliberate actions go back to Python as the component value:
// next/previous case (N/P) and bookmarking the slice under the crosshair (B).
//
// The Streamlit component protocol (v1) is spoken directly, without streamlit-component-lib.
import { Niivue, SLICE_TYPE, SHOW_RENDER, DRAG_MODE, MULTIPLANAR_TYPE } from "@niivue/niivue";
import { gradientNeeded, setGradientNeeded } from "./gradient_policy.js";

// NiiVue's colormapType 2 (the enum is not exported; its shader makes type 2 the one that paints nothing
// below cal_min, while type 1 fades values below it in): colours keep the [0, max] scale and values under
// the threshold stay uncoloured.
const ZERO_TO_MAX_TRANSPARENT_BELOW_MIN = 2;
const LAYOUTS = { multiplanar: SLICE_TYPE.MULTIPLANAR, axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL };
// Left click moves the crosshair, left drag with Shift (or a middle drag) pans, right drag sets window/level.
const MOUSE_BUTTONS = { leftButton: { primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.pan },
  rightButton: DRAG_MODE.windowing, centerButton: DRAG_MODE.pan };
// One Ctrl+wheel notch or +/- key zooms by this factor, within these bounds.
const ZOOM_STEP = 1.2;
const ZOOM_RANGE = [0.5, 20];
// The viewer fills the window below its own top, down to this gap, and is never shorter than this.
const WINDOW_BOTTOM_GAP_PX = 8;
const MIN_HEIGHT_PX = 300;
// Per plane, which RAS voxel axis a slice step moves along.
const PLANE_AXIS = { axial: 2, coronal: 1, sagittal: 0 };

// Performance marks (read by benchmarks/bench_viewer.py): where a first image or a case switch spends its time.
const mark = (name) => performance.mark(`viewer:${name}`);
mark("script");

const canvas = document.getElementById("gl");
const readout = document.getElementById("readout");
const status = document.getElementById("status");
let nv = null;
let loaded = { scan: null, map: null };
let settings = null;
let overlayVisible = true;
let focusNonce = null;
let actionCount = 0;
let hoverPlane = null;

function send(type, payload) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...payload }, "*");
}

function setFrameHeight() {
  send("streamlit:setFrameHeight", { height: document.body.scrollHeight });
}

function sendAction(action, extra) {
  actionCount += 1;
  send("streamlit:setComponentValue", { value: { action, count: actionCount, ...extra }, dataType: "json" });
}

async function ensureViewer() {
  if (nv) return;
  nv = new Niivue({
    isRadiologicalConvention: true,
    isColorbar: true,
    isOrientationTextVisible: true,
    showAllOrientationMarkers: true,
    multiplanarShowRender: SHOW_RENDER.NEVER,
    multiplanarLayout: MULTIPLANAR_TYPE.AUTO,
    dragMode: DRAG_MODE.windowing,
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.1, 1, 0.1, 0.7],
    show3Dcrosshair: false,
    isNearestInterpolation: true,
    dragAndDropEnabled: false,
    fontMinPx: 15,
  });
  setGradientNeeded(() => nv.opts.sliceType === SLICE_TYPE.RENDER || nv.opts.multiplanarShowRender !== SHOW_RENDER.NEVER);
  await nv.attachToCanvas(canvas);
  nv.setMouseEventConfig(MOUSE_BUTTONS);
  holdLayerRefresh();
  mark("attached");
  nv.onLocationChange = (location) => { readout.dataset.crosshair = location.string || ""; };
}

// The display files, fetched as soon as a render names them: the download then runs while NiiVue sets up
// WebGL (seconds on a software GPU) instead of after it.
function fetchVolumes(args) {
  const urls = [args.scan_url, ...(args.map_url ? [args.map_url] : [])];
  return Promise.all(urls.map(async (url) => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return { url, buffer: await response.arrayBuffer() };
  }));
}

// NiiVue takes a fetched file as `url` (its name, with the extension, tells the format).
function volumeOptions(files) {
  const [scanFile, mapFile] = files;
  const name = (file) => file.url.split("/").pop();
  const scan = { url: scanFile.buffer, name: name(scanFile), colormap: "gray",
    cal_min: settings.window[0], cal_max: settings.window[1] };
  if (!mapFile) return [scan];
  return [scan, { url: mapFile.buffer, name: name(mapFile), colormap: settings.colormap,
    opacity: overlayVisible ? settings.opacity : 0, cal_min: settings.threshold, cal_max: settings.map_max }];
}

// Every GPU refresh of the layers (NiiVue's updateGLVolume) re-uploads and reorients both volumes (and,
// while a render is shown, recomputes the gradient: gradient_policy.js): seconds on a software GPU. Loading two volumes refreshes three times on its own,
// so refreshes are held back while volumes load and settings are set, and run once after.
let holdRefresh = false;
let appliedLook = null;

function holdLayerRefresh() {
  const refresh = nv.updateGLVolume.bind(nv);
  nv.updateGLVolume = () => {
    if (!holdRefresh) refresh();
  };
}

// What needs a layer refresh when it changes (a layout change only redraws).
function lookOf(args) {
  return JSON.stringify([args.window, args.colormap, args.opacity, args.threshold, args.map_max, overlayVisible]);
}

function applySettings(args) {
  const look = lookOf(args);
  if (look !== appliedLook) {
    const [scan, map] = nv.volumes;
    scan.cal_min = args.window[0];
    scan.cal_max = args.window[1];
    scan.colorbarVisible = false;
    if (map) {
      map.colormap = args.colormap;
      map.colormapType = ZERO_TO_MAX_TRANSPARENT_BELOW_MIN;
      // NiiVue clamps a header range to the data's own: the fixed [threshold, map_max] scale is set here.
      map.cal_min = Math.max(args.threshold, 1e-6);
      map.cal_max = args.map_max;
      map.opacity = overlayVisible ? args.opacity : 0;
      map.colorbarVisible = overlayVisible;
    }
    appliedLook = look;
    nv.updateGLVolume();
  }
  const sliceType = LAYOUTS[args.layout] ?? SLICE_TYPE.MULTIPLANAR;
  if (nv.opts.sliceType !== sliceType) {
    const hadGradient = gradientNeeded();
    nv.setSliceType(sliceType);
    if (!hadGradient && gradientNeeded()) nv.updateGLVolume();  // a render appears: it needs the real gradient
  }
}

function applyFocus() {
  if (!settings.focus || settings.focus.nonce === focusNonce) return;
  focusNonce = settings.focus.nonce;
  const [x, y, z] = settings.focus.mm;
  nv.scene.crosshairPos = nv.mm2frac([x, y, z]);
  nv.createOnLocationChange();
  nv.drawScene();
}

async function render(args) {
  mark("render");
  settings = args;
  fitHeight(args.height);
  document.getElementById("mark").textContent = args.random_weights ? "RANDOM WEIGHTS" : "";
  const newVolumes = loaded.scan !== args.scan_url || loaded.map !== (args.map_url || null);
  if (newVolumes) mark("fetch");
  const files = newVolumes ? fetchVolumes(args) : null;
  await ensureViewer();
  // a 2-D picture is shown as stored: no radiological flip, no orientation letters
  nv.opts.isRadiologicalConvention = !args.image;
  nv.opts.isOrientationTextVisible = !args.image;
  if (newVolumes) {
    status.textContent = "loading…";
    loaded = { scan: args.scan_url, map: args.map_url || null };
    focusNonce = null;
    appliedLook = null;
    const fetched = await files;
    mark("fetched");
    holdRefresh = true;
    try {
      await nv.loadVolumes(volumeOptions(fetched));
      mark("loaded");
      applySettings(args);
    } finally {
      holdRefresh = false;
    }
    nv.updateGLVolume();
    status.textContent = "";
  } else {
    applySettings(args);
  }
  mark("applied");
  applyFocus();
  canvas.dataset.ready = `${args.case_id}|${args.scan_url}|${args.map_url || ""}`;
  mark("ready");
  setFrameHeight();
}

function stepSlice(delta) {
  const plane = settings.layout === "multiplanar" ? (hoverPlane || settings.plane) : settings.layout;
  const step = [0, 0, 0];
  step[PLANE_AXIS[plane] ?? 2] = delta;
  nv.moveCrosshairInVox(step[0], step[1], step[2]);
}

function toggleOverlay() {
  overlayVisible = !overlayVisible;
  if (nv.volumes[1]) applySettings(settings);
  document.getElementById("overlay-state").textContent = overlayVisible ? "overlay on (O)" : "overlay off (O)";
}

function crosshairSlice() {
  const plane = settings.layout === "multiplanar" ? settings.plane : settings.layout;
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  return { plane, mm: [mm[0], mm[1], mm[2]] };
}

window.addEventListener("keydown", (event) => {
  if (!nv || !settings || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  const handled = { arrowup: () => stepSlice(1), pageup: () => stepSlice(5), arrowdown: () => stepSlice(-1),
    pagedown: () => stepSlice(-5), "+": () => zoom(ZOOM_STEP), "=": () => zoom(ZOOM_STEP),
    "-": () => zoom(1 / ZOOM_STEP), 0: resetZoom, o: toggleOverlay, n: () => sendAction("next"), p: () => sendAction("previous"),
    b: () => sendAction("bookmark", crosshairSlice()) }[key];
  if (handled) {
    event.preventDefault();
    handled();
  }
}, true);

// Value under the cursor, without moving the crosshair.
canvas.addEventListener("mousemove", (event) => {
  if (!nv || nv.volumes.length === 0) return;
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const frac = nv.canvasPos2frac([(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr]);
  if (frac[0] < 0) {
    readout.textContent = "";
    return;
  }
  const tile = nv.tileIndex ? nv.tileIndex((event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr) : -1;
  const screen = tile >= 0 && nv.screenSlices[tile] ? nv.screenSlices[tile].axCorSag : -1;
  hoverPlane = ["axial", "coronal", "sagittal"][screen] || hoverPlane;
  const mm = nv.frac2mm(frac);
  const parts = nv.volumes.map((volume, index) => {
    const vox = volume.mm2vox([mm[0], mm[1], mm[2]]);
    const value = volume.getValue(vox[0], vox[1], vox[2]);
    return `${index === 0 ? "scan" : "map"} ${Number.isFinite(value) ? value.toFixed(index === 0 ? 0 : 3) : "-"}`;
  });
  const vox = nv.frac2vox(frac);
  readout.textContent = `voxel ${vox[0]}, ${vox[1]}, ${vox[2]} · ${parts.join(" · ")}`;
});

// Zoom about the crosshair, which stays where it is on screen (as NiiVue's own wheel zoom does).
function zoom(factor) {
  const pan = nv.scene.pan2Dxyzmm;
  const next = Math.min(ZOOM_RANGE[1], Math.max(ZOOM_RANGE[0], pan[3] * factor));
  const change = pan[3] - next;
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  nv.scene.pan2Dxyzmm = [pan[0] + change * mm[0], pan[1] + change * mm[1], pan[2] + change * mm[2], next];
  nv.drawScene();
  document.getElementById("zoom-state").textContent = next === 1 ? "" : `zoom ${next.toFixed(1)}x (0 resets)`;
}

function resetZoom() {
  nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
  nv.drawScene();
  document.getElementById("zoom-state").textContent = "";
}

// Ctrl+wheel zooms (before NiiVue's own wheel handler, which would scroll slices; the page never zooms).
canvas.addEventListener("wheel", (event) => {
  if (!nv || !event.ctrlKey) return;
  event.preventDefault();
  event.stopImmediatePropagation();
  zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
}, { capture: true, passive: false });

// The whole image on the first screen: the viewer is as tall as the window leaves below it (the page
// is ours, the same origin), at most the height Python asks for.
function fitHeight(most) {
  let height = most;
  try {
    const frame = window.frameElement;
    let top = frame.getBoundingClientRect().top;
    for (let node = frame.parentElement; node; node = node.parentElement) top += node.scrollTop;
    const room = window.parent.innerHeight - top - document.getElementById("bar").offsetHeight - WINDOW_BOTTOM_GAP_PX;
    height = Math.max(MIN_HEIGHT_PX, Math.min(most, Math.floor(room)));
  } catch (error) {
    height = most;  // another origin's page: keep the asked height
  }
  document.getElementById("wrap").style.height = `${height}px`;
}

try {
  window.parent.addEventListener("resize", () => {
    if (!settings) return;
    fitHeight(settings.height);
    setFrameHeight();
  });
} catch (error) {
  // another origin's page: the height stays as asked
}

// Renders run one at a time, the latest arguments winning: a rerun's render that arrives while volumes
// load waits for them instead of setting up a half-loaded view.
let nextArgs = null;
let rendering = false;

async function renderLatest() {
  rendering = true;
  while (nextArgs) {
    const args = nextArgs;
    nextArgs = null;
    try {
      await render(args);
    } catch (error) {
      loaded = { scan: null, map: null };
      status.textContent = `viewer error: ${error}`;
      setFrameHeight();
    }
  }
  rendering = false;
}

window.addEventListener("message", (event) => {
  if (event.data && event.data.type === "streamlit:render") {
    nextArgs = event.data.args;
    if (!rendering) renderLatest();
  }
});

send("streamlit:componentReady", { apiVersion: 1 });
