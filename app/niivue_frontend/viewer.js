// The viewer's slice display: NiiVue (WebGL) in a Streamlit component iframe.
//
// Python sends URLs of the scan and of an 8-bit display copy of the map (files served from this
// component's folder) plus display settings. Volumes load once per URL; every other interaction
// (wheel and key slice scrolling, window/level drag, zoom and pan, crosshair, value under the cursor,
// overlay toggle) stays in the browser. Only deliberate actions go back to Python as the component value:
// next/previous case (N/P) and bookmarking the slice under the crosshair (B). With the open case, Python
// names the worklist's next and previous cases (their files and opening settings); once the open case is
// drawn they are loaded into hidden spare views, and N/P show the prepared one at once, then tell Python.
// A large volume comes with a coarse preview (its 2x2x2 blocks as voxels, about an eighth of the GPU work):
// a case loaded on screen shows its preview first, and its full volume, loaded into a spare view, replaces
// it once drawn, keeping the crosshair, zoom and window the reader set meanwhile.
//
// The Streamlit component protocol (v1) is spoken directly, without streamlit-component-lib.
import { Niivue, SLICE_TYPE, SHOW_RENDER, DRAG_MODE, MULTIPLANAR_TYPE } from "@niivue/niivue";
import { gradientNeeded, setGradientNeeded } from "./gradient_policy.js";
import { BackgroundLoads } from "./background_loads.js";
import { compileAhead, programCounts } from "./lazy_shaders.js";
import { gpuDone } from "./gpu_fence.js";

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

// Views kept: the case on screen, and the worklist's next and previous cases prepared in spare ones (or
// the shown case's full volume while its preview is on screen).
const MAX_VIEWS = 3;
// What a view holds of its case: the coarse preview or the full volumes.
const PREVIEW = "preview";
const FULL = "full";
const wrap = document.getElementById("wrap");
const readout = document.getElementById("readout");
const status = document.getElementById("status");
let settings = null;
let overlayVisible = true;
let actionCount = 0;
let hoverPlane = null;
// Volume loads and layer refreshes so far, on the shown canvas: a test tells a prepared switch from a reload.
const counts = { loads: 0, refreshes: 0 };

function send(type, payload) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...payload }, "*");
}

function setFrameHeight() {
  send("streamlit:setFrameHeight", { height: document.body.scrollHeight });
}

// The value carries the recent actions, numbered since this page loaded (`epoch` names the load): presses
// faster than the page's reruns (N, then B) all reach Python, which handles each one once, in order.
const ACTIONS_KEPT = 16;
const epoch = `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}`;
const recentActions = [];

function sendAction(action, extra) {
  actionCount += 1;
  recentActions.push({ action, count: actionCount, ...extra });
  if (recentActions.length > ACTIONS_KEPT) recentActions.shift();
  send("streamlit:setComponentValue", { value: { epoch, actions: [...recentActions] }, dataType: "json" });
}

// What needs a layer refresh when it changes (a layout change only redraws).
function lookOf(args) {
  return JSON.stringify([args.window, args.colormap, args.opacity, args.threshold, args.map_max, overlayVisible]);
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
function volumeOptions(args, files) {
  const [scanFile, mapFile] = files;
  const name = (file) => file.url.split("/").pop();
  const scan = { url: scanFile.buffer, name: name(scanFile), colormap: "gray", cal_min: args.window[0],
    cal_max: args.window[1] };
  if (!mapFile) return [scan];
  return [scan, { url: mapFile.buffer, name: name(mapFile), colormap: args.colormap,
    opacity: overlayVisible ? args.opacity : 0, cal_min: args.threshold, cal_max: args.map_max }];
}

// One NiiVue on its own canvas, holding one case's scan and map. Every GPU refresh of the layers (NiiVue's
// updateGLVolume) re-uploads and reorients both volumes into 3-D textures (the gradient is skipped while no
// render is shown: gradient_policy.js): about 0.6 s on the CPU and 1.5-2 s of GPU work on a software GPU.
// Loading two volumes refreshes three times on its own, so refreshes are held back while volumes load
// and settings are set, and run once after.
class SliceView {
  constructor(canvas) {
    this.canvas = canvas;
    this.nv = null;
    this.files = { scan: null, map: null };
    this.resolution = null;
    this.loadStarted = false;  // a background load of its claimed case has begun (or is done)
    this.caseId = null;  // the case whose volumes it holds or is loading
    this.look = null;
    this.focusNonce = null;
    this.holdRefresh = false;
    this.ready = Promise.resolve();
    canvas.addEventListener("mousemove", (event) => this.showValue(event));
    // Ctrl+wheel zooms (before NiiVue's own wheel handler, which would scroll slices; the page never zooms).
    canvas.addEventListener("wheel", (event) => {
      if (!this.nv || !event.ctrlKey) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
    }, { capture: true, passive: false });
  }

  // Whether this view holds (or is loading) the case whose full files `args` names, at either resolution.
  holds(args) {
    return this.files.scan === args.scan_url && this.files.map === (args.map_url || null);
  }

  holdsFull(args) {
    return this.holds(args) && this.resolution === FULL;
  }

  // Take the case now, before its files load: no other case is put in this view meanwhile.
  claim(args, resolution) {
    this.files = { scan: args.scan_url, map: args.map_url || null };
    this.caseId = args.case_id;
    this.resolution = resolution;
    delete this.canvas.dataset.prepared;
  }

  release() {
    this.files = { scan: null, map: null };
    this.caseId = null;
    this.resolution = null;
    delete this.canvas.dataset.prepared;
  }

  async attach() {
    if (this.nv) return;
    const nv = new Niivue({
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
    await nv.attachToCanvas(this.canvas);
    // a spare view's programs (those the first view compiled) link in the GPU process while the page goes on
    await compileAhead(nv.gl);
    nv.setMouseEventConfig(MOUSE_BUTTONS);
    const refresh = nv.updateGLVolume.bind(nv);
    nv.updateGLVolume = () => {
      if (this.holdRefresh) return;
      counts.refreshes += 1;
      refresh();
    };
    nv.onLocationChange = (location) => {
      if (this === shown) readout.dataset.crosshair = location.string || "";
    };
    this.nv = nv;
  }

  // Show a case's fetched volumes (its full files, or its preview's) with its settings (`onScreen`: the
  // marks are the shown case's).
  async load(args, files, onScreen, resolution) {
    this.claim(args, resolution);
    this.look = null;
    this.focusNonce = null;
    this.holdRefresh = true;
    try {
      await this.nv.loadVolumes(volumeOptions(args, files));
      if (onScreen) mark(resolution === PREVIEW ? "preview" : "loaded");
      this.apply(args);
    } finally {
      this.holdRefresh = false;
    }
    this.nv.updateGLVolume();
    counts.loads += 1;
  }

  // A spare view takes the full volumes of a case the reader may move to next (or of the case shown as a
  // preview); its GPU work runs while the reader reads on.
  async prepare(args) {
    this.loadStarted = true;
    try {
      const files = fetchVolumes(args);
      await this.attach();
      await this.load(args, await files, false, FULL);
      this.placeCrosshair(args.focus);
      await drawn(this.nv.gl);
      this.canvas.dataset.prepared = args.case_id;
    } catch (error) {
      this.release();  // not prepared after all: the switch loads it as usual
    }
  }

  // Go on where the reader is in `other`, the same case's preview: crosshair, zoom and pan, and the scan's
  // window (a right-drag sets it in the browser alone).
  takeReadingFrom(other) {
    const nv = this.nv;
    const from = other.nv;
    const mm = from.frac2mm(from.scene.crosshairPos);
    nv.scene.crosshairPos = nv.mm2frac([mm[0], mm[1], mm[2]]);
    nv.scene.pan2Dxyzmm = [...from.scene.pan2Dxyzmm];
    this.focusNonce = other.focusNonce;
    const [scan] = nv.volumes;
    const [shownScan] = from.volumes;
    if (scan.cal_min !== shownScan.cal_min || scan.cal_max !== shownScan.cal_max) {
      scan.cal_min = shownScan.cal_min;
      scan.cal_max = shownScan.cal_max;
      nv.updateGLVolume();
    }
    nv.createOnLocationChange();
  }

  apply(args) {
    const nv = this.nv;
    // a 2-D picture is shown as stored: no radiological flip, no orientation letters
    nv.opts.isRadiologicalConvention = !args.image;
    nv.opts.isOrientationTextVisible = !args.image;
    const look = lookOf(args);
    if (look !== this.look) {
      const [scan, map] = nv.volumes;
      scan.cal_min = args.window[0];
      scan.cal_max = args.window[1];
      scan.colorbarVisible = false;
      if (map) {
        // setting a colormap makes NiiVue recompute the map's robust range (a pass over the volume): only on a change
        if (map.colormap !== args.colormap) map.colormap = args.colormap;
        map.colormapType = ZERO_TO_MAX_TRANSPARENT_BELOW_MIN;
        // NiiVue clamps a header range to the data's own: the fixed [threshold, map_max] scale is set here.
        map.cal_min = Math.max(args.threshold, 1e-6);
        map.cal_max = args.map_max;
        map.opacity = overlayVisible ? args.opacity : 0;
        map.colorbarVisible = overlayVisible;
      }
      this.look = look;
      nv.updateGLVolume();
    }
    const sliceType = LAYOUTS[args.layout] ?? SLICE_TYPE.MULTIPLANAR;
    if (nv.opts.sliceType !== sliceType) {
      const hadGradient = gradientNeeded(nv.gl);
      nv.setSliceType(sliceType);
      if (!hadGradient && gradientNeeded(nv.gl)) nv.updateGLVolume();  // a render appears: it needs the real gradient
    }
  }

  placeCrosshair(focus) {
    if (!focus || focus.nonce === this.focusNonce) return;
    this.focusNonce = focus.nonce;
    const [x, y, z] = focus.mm;
    this.nv.scene.crosshairPos = this.nv.mm2frac([x, y, z]);
    this.nv.createOnLocationChange();
    this.nv.drawScene();
  }

  // Value under the cursor, without moving the crosshair.
  showValue(event) {
    const nv = this.nv;
    if (!nv || nv.volumes.length === 0) return;
    const rect = this.canvas.getBoundingClientRect();
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
  }
}

const views = [new SliceView(document.getElementById("gl"))];
let shown = views[0];
setGradientNeeded((gl) => {
  const view = views.find((candidate) => candidate.nv && candidate.nv.gl === gl);
  return !view || view.nv.opts.sliceType === SLICE_TYPE.RENDER || view.nv.opts.multiplanarShowRender !== SHOW_RENDER.NEVER;
});

// Put a prepared view on the screen: it takes the canvas id (what tests and the benchmark look at).
function show(view) {
  const hidden = shown;
  const hadFocus = document.activeElement === hidden.canvas;
  hidden.canvas.removeAttribute("id");
  delete hidden.canvas.dataset.ready;
  hidden.canvas.classList.add("spare");
  view.canvas.id = "gl";
  view.canvas.classList.remove("spare");
  shown = view;
  if (hadFocus) view.canvas.focus();
  view.nv.drawScene();
}

// Full volumes and neighbours load into spare views in the background, once the reader pauses
// (background_loads.js).
const background = new BackgroundLoads({ now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) });
for (const type of ["keydown", "wheel", "pointerdown"]) {
  window.addEventListener(type, () => background.noteInput(), { capture: true, passive: true });
}
window.addEventListener("pointermove", (event) => {
  if (event.buttons) background.noteInput();  // a drag: window/level, pan
}, { capture: true, passive: true });

// Claims `view` for `args`' full volumes now and loads them in turn (`urgent`: before any neighbour); a view
// released or claimed for another case while queued is not loaded. A view that holds the shown case or a
// wanted neighbour is kept.
function loadInBackground(view, args, urgent) {
  view.claim(args, FULL);
  view.loadStarted = false;
  view.ready = background.add(() => view.prepare(args), () => view.holdsFull(args), urgent);
  return view.ready;
}

function spareView(kept) {
  const free = views.find((view) => view !== shown && !kept.some((args) => view.holds(args)));
  if (free || views.length >= MAX_VIEWS) return free;
  const canvas = document.createElement("canvas");
  canvas.className = "spare";
  canvas.tabIndex = 0;
  wrap.appendChild(canvas);
  const view = new SliceView(canvas);
  views.push(view);
  return view;
}

// A neighbour the server is still reading ahead comes as the URL of a file written once it is ready.
const PENDING_POLL_MS = 500;
const PENDING_POLLS = 240;

async function awaitPending(args, direction) {
  const url = args.neighbours[direction].pending;
  for (let poll = 0; poll < PENDING_POLLS && settings === args; poll++) {
    const response = await fetch(url, { cache: "no-store" }).catch(() => null);
    if (response && response.ok) {
      args.neighbours[direction] = await response.json();
      if (settings === args) prepareNeighbours(args);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, PENDING_POLL_MS));
  }
}

function known(entry) {
  return entry && entry.case_id ? entry : null;
}

function wantedNeighbours(args) {
  const neighbours = args.neighbours || {};
  return ["next", "previous"].map((direction) => known(neighbours[direction])).filter(Boolean);
}

// Neighbours are prepared at full resolution, and only once the shown case is on screen at full resolution.
function prepareNeighbours(args) {
  const neighbours = args.neighbours || {};
  for (const direction of ["next", "previous"]) {
    if (neighbours[direction] && neighbours[direction].pending) awaitPending(args, direction);
  }
  if (!shown.holdsFull(args)) return;
  const wanted = wantedNeighbours(args);
  for (const target of wanted) {
    if (views.some((view) => view.holdsFull(target))) continue;
    const spare = spareView([args, ...wanted]);
    if (!spare) continue;
    loadInBackground(spare, { ...args, ...target }, false);
  }
}

async function render(args) {
  mark("render");
  settings = args;
  fitHeight(args.height);
  document.getElementById("mark").textContent = args.random_weights ? "RANDOM WEIGHTS" : "";
  let prepared = shown.holdsFull(args) ? null : views.find((view) => view !== shown && view.holdsFull(args));
  if (prepared && !prepared.loadStarted) {  // still queued (the reader had not paused): load it here instead
    prepared.release();
    prepared = null;
  }
  if (prepared) {
    await prepared.ready;
    if (prepared.holdsFull(args)) {
      const preview = shown.holds(args) ? shown : null;  // the same case: its full volumes replace its preview
      if (preview) prepared.takeReadingFrom(preview);
      show(prepared);
      if (preview) preview.release();
      mark(preview ? "upgraded" : "swapped");
    }
  }
  const view = shown;
  const newVolumes = !view.holds(args);
  const resolution = args.preview ? PREVIEW : FULL;
  if (newVolumes) mark("fetch");
  const files = newVolumes ? fetchVolumes(args.preview || args) : null;
  if (!view.nv) {
    await view.attach();
    mark("attached");
  }
  if (newVolumes) {
    status.textContent = "loading…";
    const fetched = await files;
    mark("fetched");
    await view.load(args, fetched, true, resolution);
    status.textContent = "";
  } else {
    view.caseId = args.case_id;  // two cases may share their files
    view.apply(args);
  }
  mark("applied");
  view.placeCrosshair(args.focus);
  Object.assign(view.canvas.dataset, counts, programCounts(view.nv.gl));
  view.canvas.dataset.ready = `${args.case_id}|${args.scan_url}|${args.map_url || ""}`;
  view.canvas.dataset.resolution = view.resolution;
  status.textContent = view.resolution === PREVIEW ? "preview, full resolution loading…" : "";
  mark("ready");
  setFrameHeight();
  drawn(view.nv.gl).then(() => {
    if (settings !== args) return;
    if (view.resolution === PREVIEW) loadFullVolumes(args);
    else prepareNeighbours(args);
  });
}

// The shown case's full volumes go into a spare view first (before any neighbour); once drawn there, the
// page's latest render puts them on screen in place of the preview.
function loadFullVolumes(args) {
  if (views.some((view) => view !== shown && view.holdsFull(args))) return;
  const spare = spareView([args, ...wantedNeighbours(args)]) || spareView([args]);
  if (!spare) return;
  loadInBackground(spare, args, true).then(() => {
    if (!settings || !shown.holds(settings)) return;
    if (spare.holdsFull(settings)) queueRender(settings);
    else if (spare.files.scan === null) status.textContent = "full resolution could not be loaded: showing the preview";
  });
}

// Resolve two frames after the GPU has done everything asked of `gl` so far, without blocking the page:
// spare views are prepared only after the shown case is drawn, so they never delay it.
function drawn(gl) {
  return gpuDone(gl).then(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
}

// N and P: the viewer moves to the neighbour the server named at once (prepared, or fetched without
// waiting for the page), and tells the page which case it shows; the page's rerun then sends that case.
function moveCase(direction) {
  const target = known(settings.neighbours && settings.neighbours[direction]);
  sendAction(direction, target ? { case: target.case_id } : {});
  if (target) queueRender({ ...settings, ...target, neighbours: {} });
}

function stepSlice(delta) {
  const plane = settings.layout === "multiplanar" ? (hoverPlane || settings.plane) : settings.layout;
  const step = [0, 0, 0];
  step[PLANE_AXIS[plane] ?? 2] = delta;
  shown.nv.moveCrosshairInVox(step[0], step[1], step[2]);
}

function toggleOverlay() {
  overlayVisible = !overlayVisible;
  if (shown.nv.volumes[1]) shown.apply(settings);
  document.getElementById("overlay-state").textContent = overlayVisible ? "overlay on (O)" : "overlay off (O)";
}

function crosshairSlice() {
  const plane = settings.layout === "multiplanar" ? settings.plane : settings.layout;
  const mm = shown.nv.frac2mm(shown.nv.scene.crosshairPos);
  return { plane, mm: [mm[0], mm[1], mm[2]] };
}

window.addEventListener("keydown", (event) => {
  if (!shown.nv || !settings || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  const handled = { arrowup: () => stepSlice(1), pageup: () => stepSlice(5), arrowdown: () => stepSlice(-1),
    pagedown: () => stepSlice(-5), "+": () => zoom(ZOOM_STEP), "=": () => zoom(ZOOM_STEP),
    "-": () => zoom(1 / ZOOM_STEP), 0: resetZoom, o: toggleOverlay, n: () => moveCase("next"), p: () => moveCase("previous"),
    b: () => sendAction("bookmark", { ...crosshairSlice(), case: shown.caseId }) }[key];
  if (handled) {
    event.preventDefault();
    handled();
  }
}, true);

// Zoom about the crosshair, which stays where it is on screen (as NiiVue's own wheel zoom does).
function zoom(factor) {
  const nv = shown.nv;
  const pan = nv.scene.pan2Dxyzmm;
  const next = Math.min(ZOOM_RANGE[1], Math.max(ZOOM_RANGE[0], pan[3] * factor));
  const change = pan[3] - next;
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  nv.scene.pan2Dxyzmm = [pan[0] + change * mm[0], pan[1] + change * mm[1], pan[2] + change * mm[2], next];
  nv.drawScene();
  document.getElementById("zoom-state").textContent = next === 1 ? "" : `zoom ${next.toFixed(1)}x (0 resets)`;
}

function resetZoom() {
  const nv = shown.nv;
  nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
  nv.drawScene();
  document.getElementById("zoom-state").textContent = "";
}

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

function queueRender(args) {
  nextArgs = args;
  if (!rendering) renderLatest();
}

async function renderLatest() {
  rendering = true;
  while (nextArgs) {
    const args = nextArgs;
    nextArgs = null;
    try {
      await render(args);
    } catch (error) {
      shown.release();
      status.textContent = `viewer error: ${error}`;
      setFrameHeight();
    }
  }
  rendering = false;
}

window.addEventListener("message", (event) => {
  if (event.data && event.data.type === "streamlit:render") queueRender(event.data.args);
});

send("streamlit:componentReady", { apiVersion: 1 });
