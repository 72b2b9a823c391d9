// `npm run build`: bundles viewer.js with NiiVue into ../medclip_viewer/niivue/build (committed, shipped in the
// wheel). Two changes to NiiVue on the way: its gradient step goes through gradient_policy.js (see there), and
// the compression codecs of its Zarr reader (1.3 MB of WebAssembly, 60 % of the bundle) are left out: the
// viewer only opens NIfTI, and a Zarr codec asked for says so.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const NIIVUE_BUNDLE = /@niivue[\\/]niivue[\\/]build[\\/]niivue[\\/]index\.js$/;
const GRADIENT_FUNCTION = "function gradientGL(params) {";
const POLICY = fileURLToPath(new URL("./gradient_policy.js", import.meta.url));

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

const gradientOnlyForRenders = {
  name: "gradient-only-for-renders",
  setup(build) {
    build.onLoad({ filter: NIIVUE_BUNDLE }, async (args) => {
      const source = await readFile(args.path, "utf8");
      if (source.split(GRADIENT_FUNCTION).length !== 2) {
        throw new Error(`${args.path}: expected one "${GRADIENT_FUNCTION}" (a NiiVue version this build does not know)`);
      }
      const routed = source.replace(GRADIENT_FUNCTION,
        `function gradientGL(params) { return __gradientStep(params, computeGradient); }\nfunction computeGradient(params) {`);
      return { contents: `import { gradientStep as __gradientStep } from ${JSON.stringify(POLICY)};\n${routed}`, loader: "js" };
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
  plugins: [gradientOnlyForRenders, noZarrCodecs],
  metafile: Boolean(process.env.METAFILE),
}).then(async (result) => {
  if (result.metafile) console.log(await esbuild.analyzeMetafile(result.metafile));
});
