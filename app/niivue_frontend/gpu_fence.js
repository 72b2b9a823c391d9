// Waiting on the GPU without blocking the page: a fence, polled between tasks. Asking the GPU process
// anything else (a link status, a pixel) while it is busy blocks the browser thread until its queue is done.

const FENCE_POLL_MS = 50;

/** Resolves once the GPU has done everything asked of `gl` so far. */
export function gpuDone(gl) {
  const fence = gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0);
  gl.flush();
  return new Promise((resolve) => {
    const poll = () => {
      if (gl.getSyncParameter(fence, gl.SYNC_STATUS) !== gl.SIGNALED) {
        setTimeout(poll, FENCE_POLL_MS);
        return;
      }
      gl.deleteSync(fence);
      resolve();
    };
    poll();
  });
}
