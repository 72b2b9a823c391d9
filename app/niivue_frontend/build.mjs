// `npm run build`: bundles viewer.js with NiiVue into ../medclip_viewer/niivue/build (committed, shipped in the
// wheel). Changes to NiiVue on the way: its gradient step goes through gradient_policy.js, its shader programs
// are compiled on first use (lazy_shaders.js; see both there), and the compression codecs of its Zarr reader
// (1.3 MB of WebAssembly, 60 % of the bundle) are left out: the viewer only opens NIfTI, and a Zarr codec asked
// for says so. Each change rewrites exact NiiVue source and stops the build when that source is not found.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const NIIVUE_BUNDLE = /@niivue[\\/]niivue[\\/]build[\\/]niivue[\\/]index\.js$/;
const GRADIENT_POLICY = fileURLToPath(new URL("./gradient_policy.js", import.meta.url));
const LAZY_SHADERS = fileURLToPath(new URL("./lazy_shaders.js", import.meta.url));

const ZARR_CODECS = /^numcodecs\/(blosc|lz4|zstd)$/;

const noZarrCodecs = {
  name: "no-zarr-codecs",
  setup(build) {
    build.onResolve({ filter: ZARR_CODECS }, (args) => ({ path: args.path, namespace: "left-out" }));
    build.onLoad({ filter: /.*/, namespace: "left-out" }, (args) => ({
      contents: `export default { fromConfig() { throw new Error("${args.path} is not part of this viewer"); } };`,
      loader: "js",
    }));
  },
};

// `source` with its one `find` replaced by `replacement`; a NiiVue version without exactly one stops the build.
function replaceOnce(source, find, replacement) {
  if (source.split(find).length !== 2) {
    throw new Error(`NiiVue: expected one ${JSON.stringify(find)} (a NiiVue version this build does not know)`);
  }
  return source.replace(find, () => replacement);
}

// The gradient step (gradientGL) asks gradient_policy.js first.
function routeGradientStep(source) {
  return replaceOnce(source, "function gradientGL(params) {", "function gradientGL(params) { "
    + "return __gradientStep(params, computeGradient); }\nfunction computeGradient(params) {");
}

// NiiVue's Shader class (`var Shader = class {` to its closing `};`), known by its digest: lazy_shaders.js
// stands in for it, so any change to it in a NiiVue update must be looked at before the build goes on.
const SHADER_CLASS_START = "var Shader = class {";
const SHADER_CLASS_END = "\n};\n";
const SHADER_CLASS_SHA256 = "9c0a7b2c7540f6f28dfc1c526ef2258f3d4b6e483ddd07d49e0ea80298fc55c3";
// The shader set-up in Niivue.init(), from its context to the last program it declares (all synchronous).
const SETUP_START = "const gl = this.gl;\n    this.cuboidVertexBuffer = gl.createBuffer();";
const SETUP_END = "this.bmpShader = new Shader(gl, vertBmpShader, fragBmpShader);\n";

// Programs compile on first use, and the init() set-up keeps its uniform values for them until then.
function compileShadersOnFirstUse(source) {
  const start = source.indexOf(SHADER_CLASS_START);
  const end = source.indexOf(SHADER_CLASS_END, start) + SHADER_CLASS_END.length;
  const shaderClass = start < 0 ? "" : source.slice(start, end);
  if (createHash("sha256").update(shaderClass).digest("hex") !== SHADER_CLASS_SHA256) {
    throw new Error("NiiVue: its Shader class is not the one lazy_shaders.js stands in for "
      + "(a NiiVue version this build does not know)");
  }
  const lazy = replaceOnce(source, shaderClass, "var Shader = __lazyShaderClass(compileShader);\n");
  const deferred = replaceOnce(lazy, SETUP_START,
    "const gl = __deferredSetup(this.gl);\n    try {\n    this.cuboidVertexBuffer = gl.createBuffer();");
  return replaceOnce(deferred, SETUP_END, `${SETUP_END}    } finally {\n      __endDeferredSetup();\n    }\n`);
}

const IMPORTS = [
  `import { gradientStep as __gradientStep } from ${JSON.stringify(GRADIENT_POLICY)};`,
  "import { lazyShaderClass as __lazyShaderClass, deferredSetup as __deferredSetup, "
    + `endDeferredSetup as __endDeferredSetup } from ${JSON.stringify(LAZY_SHADERS)};`,
].join("\n");

const patchNiivue = {
  name: "patch-niivue",
  setup(build) {
    build.onLoad({ filter: NIIVUE_BUNDLE }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const patched = compileShadersOnFirstUse(routeGradientStep(source));
      return { contents: `${IMPORTS}\n${patched}`, loader: "js" };
    });
  },
};

await esbuild.build({
  entryPoints: ["viewer.js"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  legalComments: "none",
  outfile: "../medclip_viewer/niivue/build/viewer.js",
  plugins: [patchNiivue, noZarrCodecs],
  metafile: Boolean(process.env.METAFILE),
}).then(async (result) => {
  if (result.metafile) console.log(await esbuild.analyzeMetafile(result.metafile));
});
