// NiiVue builds every shader program it may ever draw with when it attaches to a canvas (48: volume renders,
// meshes, fibres, picking, gradients, one per volume data type), linking and checking each one synchronously;
// under SwiftShader that is half the attach time, and the viewer's 2-D slices draw with 9 of them. build.mjs
// puts LazyShader in place of NiiVue's Shader, and runs the shader set-up in NiiVue's init() on the context
// deferredSetup() returns: a program is compiled when it is first used (bound, or its program or uniforms
// read), and the uniform values set-up gave it before that are set then. A shader that does not compile
// fails there, with NiiVue's own message.
//
// A second view (a spare canvas, its own WebGL context) needs the programs the first one compiled: compileAhead()
// starts them on its context without waiting (compile and link calls only; the GPU process works through them
// while the page goes on), so their first use finds them linked instead of holding the page for a quarter of a
// second while SwiftShader compiles.

import { gpuDone } from "./gpu_fence.js";

// NiiVue's way of finding a shader's uniforms: every "uniform <type> <name>;" declaration in its sources.
const UNIFORM_DECLARATION = /uniform[^;]+[ ](\w+);/g;

// Programs declared and compiled so far, per WebGL context: what a test or a benchmark reads.
const countsByContext = new WeakMap();
// The context set-up is deferred on, while NiiVue's init() sets its shaders up (synchronously), else null.
let settingUp = null;
// The context behind each context deferredSetup() returned.
const realContexts = new WeakMap();
// Every LazyShader made, per WebGL context, and the sources of those compiled on any context (vertex and
// fragment, joined): what compileAhead() starts.
const shadersByContext = new WeakMap();
const usedSources = new Set();
const SOURCE_JOIN = "\u0000";

/**
 * Programs NiiVue declared and compiled so far on `gl`, and how many of those compileAhead() had linked: a test
 * sees that the unused ones stay uncompiled and that a spare view's were linked ahead.
 */
export function programCounts(gl) {
  const { declared, compiled, ahead } = countsFor(gl);
  return { programsDeclared: declared, programsCompiled: compiled, programsAhead: ahead };
}

function countsFor(gl) {
  if (!countsByContext.has(gl)) countsByContext.set(gl, { declared: 0, compiled: 0, ahead: 0 });
  return countsByContext.get(gl);
}

// A not-yet-compiled program, as set-up sees it: it can only name uniforms.
class PendingProgram {
  constructor(shader) {
    this.shader = shader;
  }
}

// A uniform of a not-yet-compiled program: set-up's values for it are kept on its shader.
class PendingUniform {
  constructor(shader, name) {
    this.shader = shader;
    this.name = name;
  }
}

function isUniformSetter(name) {
  return name.startsWith("uniform") && name !== "uniformBlockBinding";
}

/**
 * `gl` as NiiVue's shader set-up should use it: values for uniforms of not-yet-compiled programs are kept
 * until the program is compiled; everything else goes to `gl`. End with `endDeferredSetup()`.
 */
export function deferredSetup(gl) {
  settingUp = gl;
  const deferring = new Proxy(gl, {
    get(context, key) {
      const value = context[key];
      if (typeof value !== "function") return value;
      if (key === "getUniformLocation") {
        return (program, name) => (program instanceof PendingProgram
          ? new PendingUniform(program.shader, name) : context.getUniformLocation(program, name));
      }
      if (typeof key === "string" && isUniformSetter(key)) {
        return (location, ...values) => (location instanceof PendingUniform
          ? location.shader.keepSetUp(key, location.name, values) : value.call(context, location, ...values));
      }
      return value.bind(context);
    },
  });
  realContexts.set(deferring, gl);
  return deferring;
}

/** Ends the set-up deferredSetup() began: from now on a program is compiled whenever it is asked for. */
export function endDeferredSetup() {
  settingUp = null;
}

/**
 * Starts, on `gl`, every program a view compiled before (on any context), and resolves, to how many, once the
 * GPU process has linked them: a fence polled between tasks, then each link status asked of an idle GPU process
 * (a status asked while it is busy waits for all its queued work). A program that linked is then used as it
 * is; one that did not is compiled again at its first use, by NiiVue's compileShader, which reports it.
 */
export function compileAhead(gl) {
  const waiting = (shadersByContext.get(gl) ?? []).filter((shader) => shader.compiled === null
    && shader.started === null && usedSources.has(shader.sources.join(SOURCE_JOIN)));
  for (const shader of waiting) shader.start();
  return gpuDone(gl).then(() => {
    for (const shader of waiting) shader.checkLink();
    return waiting.length;
  });
}

function uniformNames(...sources) {
  return sources.flatMap((source) => [...source.matchAll(UNIFORM_DECLARATION)].map((match) => match[1]));
}

/**
 * NiiVue's Shader, compiled on first use. `compileShader(gl, vertexSource, fragmentSource)` is NiiVue's own
 * (it links, checks and throws), so failures read as they always did.
 */
export function lazyShaderClass(compileShader) {
  return class LazyShader {
    constructor(gl, vertexSource, fragmentSource) {
      this.gl = realContexts.get(gl) ?? gl;
      this.sources = [vertexSource, fragmentSource];
      this.compiled = null;
      this.pendingProgram = new PendingProgram(this);
      this.pendingUniforms = Object.fromEntries(uniformNames(...this.sources)
        .map((name) => [name, new PendingUniform(this, name)]));
      this.setUp = [];
      this.isMatcap = undefined;
      this.isCrosscut = undefined;
      this.started = null;
      this.linked = null;
      countsFor(this.gl).declared += 1;
      if (!shadersByContext.has(this.gl)) shadersByContext.set(this.gl, []);
      shadersByContext.get(this.gl).push(this);
    }

    get program() {
      return this.deferring() ? this.pendingProgram : this.compile().program;
    }

    get uniforms() {
      return this.deferring() ? this.pendingUniforms : this.compile().uniforms;
    }

    use(gl) {
      if (!this.deferring()) gl.useProgram(this.compile().program);
    }

    keepSetUp(setter, name, values) {
      this.setUp.push([setter, name, values]);
    }

    deferring() {
      return settingUp === this.gl && this.compiled === null;
    }

    // The compile and link calls, with no status asked (asking waits for everything the GPU process has queued).
    start() {
      const gl = this.gl;
      const program = gl.createProgram();
      for (const [type, source] of [[gl.VERTEX_SHADER, this.sources[0]], [gl.FRAGMENT_SHADER, this.sources[1]]]) {
        const shader = gl.createShader(type);
        gl.shaderSource(shader, source);
        gl.compileShader(shader);
        gl.attachShader(program, shader);
      }
      gl.linkProgram(program);
      this.started = program;
    }

    // Keeps a started program that linked (its first use then asks the GPU process nothing); drops one that did not.
    checkLink() {
      const gl = this.gl;
      if (this.started === null || this.compiled !== null) return;
      if (gl.getProgramParameter(this.started, gl.LINK_STATUS)) {
        this.linked = this.started;
      } else {
        gl.deleteProgram(this.started);
      }
      this.started = null;
    }

    // Compiles once; set-up's uniform values are set on the program, the program in use is left in use.
    compile() {
      if (this.compiled) return this.compiled;
      const gl = this.gl;
      const program = this.linked ?? compileShader(gl, ...this.sources);
      const uniforms = {};
      for (const [key, pending] of Object.entries(this.pendingUniforms)) {
        uniforms[key] = gl.getUniformLocation(program, pending.name);
      }
      if (this.setUp.length) {
        const inUse = gl.getParameter(gl.CURRENT_PROGRAM);
        gl.useProgram(program);
        for (const [setter, name, values] of this.setUp) gl[setter](gl.getUniformLocation(program, name), ...values);
        gl.useProgram(inUse);
      }
      if (this.linked !== null) countsFor(gl).ahead += 1;
      this.compiled = { program, uniforms };
      this.pendingUniforms = null;
      this.setUp = null;
      this.linked = null;
      usedSources.add(this.sources.join(SOURCE_JOIN));
      countsFor(gl).compiled += 1;
      return this.compiled;
    }
  };
}
