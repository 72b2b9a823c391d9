// NiiVue computes, whenever the layers reach the GPU, a gradient of the whole scan (a blur and a Sobel pass
// into two RGBA 3-D textures) that only its volume rendering reads. The slice views never do, and on a
// software GPU it costs seconds per case; build.mjs routes NiiVue's gradient step through here, so the
// viewer computes it only while a render is on screen and gives NiiVue a 1x1x1 texture otherwise.
const TEXTURE6_GRADIENT = 33990;  // NiiVue's texture units: gl.TEXTURE6 holds the gradient
const TEXTURE8_PAQD = 33992;  // and gl.TEXTURE8 is bound back to its PAQD texture afterwards, as NiiVue does
const PLACEHOLDER_DIMS = [3, 1, 1, 1];

let needed = () => true;

// `test(gl)` says whether the view drawing with that WebGL context shows a volume render (the viewer
// refreshes its layers when that changes).
export function setGradientNeeded(test) {
  needed = test;
}

// Whether the next layer refresh in that context computes the gradient.
export function gradientNeeded(gl) {
  return needed(gl);
}

export function gradientStep(params, compute) {
  if (needed(params.gl)) return compute(params);
  const { gl, gradientTexture, paqdTexture, unusedVAO, rgbaTex } = params;
  const placeholder = rgbaTex(gradientTexture, TEXTURE6_GRADIENT, PLACEHOLDER_DIMS, true);
  gl.activeTexture(TEXTURE8_PAQD);
  gl.bindTexture(gl.TEXTURE_3D, paqdTexture);
  gl.bindVertexArray(unusedVAO);
  return placeholder;
}
