"""The viewer's NiiVue compiles a shader program only when it is first used (app/niivue_frontend/lazy_shaders.js,
put in place of NiiVue's Shader by build.mjs). Run in Node against a WebGL context that records its calls: set-up
through deferredSetup() compiles nothing and reaches the context only for what is not a uniform of a pending
program; the first use compiles once and sets the values set-up gave, leaving the program in use as it was; a
program that fails to compile fails at its first use. On a second context (a spare view's), compileAhead() starts
the programs used before without asking the GPU anything, waits on a fence, keeps those that linked (their first
use asks nothing) and leaves one that did not to NiiVue's compile at its first use. That the viewer's first image
compiles fewer programs than NiiVue declares, and still draws, is checked in the browser
(tests/test_viewer_browser.py).
Without Node it is skipped, except in CI, where it must run.
"""

from __future__ import annotations

import pytest

from node_scenario import run_node_scenario

# Drives lazy_shaders.js with a recording context and prints what happened, as JSON.
SCENARIO = """
const { lazyShaderClass, deferredSetup, endDeferredSetup, programCounts, compileAhead } = await import(process.argv[1]);
const calls = [];
let current = "P0";
let programs = 0;
const gl = {
  CURRENT_PROGRAM: 0x8b8d,
  getParameter(name) { return name === this.CURRENT_PROGRAM ? current : null; },
  useProgram(program) { current = program; calls.push(["useProgram", program]); },
  getUniformLocation(program, name) { return `${program}:${name}`; },
  uniform1i(location, value) { calls.push(["uniform1i", location, value]); },
  uniform1fv(location, values) { calls.push(["uniform1fv", location, values]); },
  createBuffer() { calls.push(["createBuffer"]); return "B1"; },
};
const compileShader = (context, vertex, fragment) => {
  if (context !== gl && context !== gl2) throw new Error("compiled on an unknown context");
  if (fragment.includes("broken")) throw new Error("Shader failed to link, see console for log");
  programs += 1;
  calls.push(["compile", `P${programs}`]);
  return `P${programs}`;
};
const Shader = lazyShaderClass(compileShader);
const report = {};

const setup = deferredSetup(gl);
const slice = new Shader(setup, "uniform mat4 mvpMtx;", "uniform sampler3D volume; uniform float opacity;");
const unused = new Shader(setup, "uniform mat4 mvpMtx;", "uniform float gain;");
slice.use(setup);
setup.uniform1i(slice.uniforms.volume, 0);
setup.uniform1fv(setup.getUniformLocation(slice.program, "lut"), [0.5, 1]);
slice.uniforms.clipPlanes = setup.getUniformLocation(slice.program, "clipPlanes[0]");
report.buffer = setup.createBuffer();
endDeferredSetup();
report.afterSetup = { calls: calls.splice(0), counts: programCounts(gl) };

slice.use(gl);
slice.use(gl);
report.firstUse = { calls: calls.splice(0), counts: programCounts(gl), clipPlanes: slice.uniforms.clipPlanes };

report.unusedUniform = unused.uniforms.gain;
report.afterUniformRead = { calls: calls.splice(0), counts: programCounts(gl) };

const broken = new Shader(gl, "", "broken");
report.declaredBroken = programCounts(gl);
try { broken.use(gl); report.brokenError = null; } catch (error) { report.brokenError = error.message; }

// A second context (a spare view's): what the first one compiled is started ahead, linked, and used as it is;
// a program that did not link there is compiled again by NiiVue at its first use; one never used stays pending.
const ahead = [];
let aheadPrograms = 0;
let fenceChecks = 0;
const gl2 = {
  VERTEX_SHADER: 1, FRAGMENT_SHADER: 2, LINK_STATUS: 3, SYNC_GPU_COMMANDS_COMPLETE: 4, SYNC_STATUS: 5, SIGNALED: 6,
  CURRENT_PROGRAM: 0x8b8d,
  getParameter() { return null; },
  useProgram(program) { ahead.push(["useProgram", program]); },
  getUniformLocation(program, name) { return `${program}:${name}`; },
  createProgram() {
    aheadPrograms += 1;
    const program = `A${aheadPrograms}`;
    ahead.push(["createProgram", program]);
    return program;
  },
  createShader(type) { return { type }; },
  shaderSource(shader, source) { shader.source = source; },
  compileShader() {},
  attachShader(program, shader) { if (shader.source.includes("flaky")) this.unlinked.add(program); },
  unlinked: new Set(),
  linkProgram(program) { ahead.push(["linkProgram", program]); },
  getProgramParameter(program) { ahead.push(["linkStatus", program]); return !this.unlinked.has(program); },
  deleteProgram(program) { ahead.push(["deleteProgram", program]); },
  fenceSync() { return "F"; },
  flush() {},
  getSyncParameter() { fenceChecks += 1; return fenceChecks < 3 ? 0 : this.SIGNALED; },
  deleteSync() {},
};
const flaky = new Shader(gl, "flaky", "uniform float gain;");
flaky.use(gl);  // compiled on the first context: its sources are known to be used
calls.splice(0);
const again = new Shader(gl2, "uniform mat4 mvpMtx;", "uniform sampler3D volume; uniform float opacity;");
const neverUsed = new Shader(gl2, "uniform mat4 mvpMtx;", "uniform vec4 unusedEverywhere;");
const flakyAgain = new Shader(gl2, "flaky", "uniform float gain;");
const promise = compileAhead(gl2);
report.startedBeforeFence = ahead.splice(0);
report.aheadCount = await promise;
report.fenceChecks = fenceChecks;
report.afterFence = ahead.splice(0);
again.use(gl2);
flakyAgain.use(gl2);
report.aheadUse = { calls: ahead.splice(0), compiled: calls.splice(0), counts: programCounts(gl2),
  neverUsed: neverUsed.compiled };
console.log(JSON.stringify(report));
"""


@pytest.fixture(scope="module")
def report() -> dict:
    return run_node_scenario(SCENARIO, "lazy_shaders.js")


def test_set_up_compiles_nothing_and_passes_other_calls_on(report):
    assert report["afterSetup"] == {"calls": [["createBuffer"]],
                                    "counts": {"programsDeclared": 2, "programsCompiled": 0, "programsAhead": 0}}
    assert report["buffer"] == "B1"


def test_first_use_compiles_once_and_sets_the_set_up_values(report):
    first_use = report["firstUse"]
    assert first_use["calls"] == [
        ["compile", "P1"],
        ["useProgram", "P1"], ["uniform1i", "P1:volume", 0], ["uniform1fv", "P1:lut", [0.5, 1]],
        ["useProgram", "P0"],  # the program in use before the compile, bound again
        ["useProgram", "P1"], ["useProgram", "P1"],  # the two use() calls, one compile
    ]
    assert first_use["counts"] == {"programsDeclared": 2, "programsCompiled": 1, "programsAhead": 0}
    assert first_use["clipPlanes"] == "P1:clipPlanes[0]"  # a uniform set-up named by location, looked up


def test_reading_uniforms_after_set_up_compiles(report):
    assert report["unusedUniform"] == "P2:gain"
    assert report["afterUniformRead"] == {"calls": [["compile", "P2"]],
                                          "counts": {"programsDeclared": 2, "programsCompiled": 2, "programsAhead": 0}}


def test_a_broken_program_fails_at_first_use(report):
    assert report["declaredBroken"] == {"programsDeclared": 3, "programsCompiled": 2, "programsAhead": 0}
    assert report["brokenError"] == "Shader failed to link, see console for log"


def test_a_second_context_links_the_used_programs_ahead_without_asking_the_gpu(report):
    # compile and link calls only, for the two programs compiled before (not the one never used anywhere)
    assert report["startedBeforeFence"] == [["createProgram", "A1"], ["linkProgram", "A1"],
                                            ["createProgram", "A2"], ["linkProgram", "A2"]]
    assert report["aheadCount"] == 2
    assert report["fenceChecks"] == 3  # polled until the GPU process had done them
    assert report["afterFence"] == [["linkStatus", "A1"], ["linkStatus", "A2"], ["deleteProgram", "A2"]]


def test_a_program_linked_ahead_is_used_as_it_is_and_one_that_failed_is_compiled_again(report):
    use = report["aheadUse"]
    # the first is used without a status query; the one that did not link is compiled again by NiiVue
    assert use["calls"] == [["useProgram", "A1"], ["useProgram", "P4"]]
    assert use["compiled"] == [["compile", "P4"]]
    assert use["counts"] == {"programsDeclared": 3, "programsCompiled": 2, "programsAhead": 1}
    assert use["neverUsed"] is None
