// Background loads into spare views (the shown preview's full volumes, the neighbours the server named) run
// one at a time, so their GPU work never piles up: the shown case's full volumes first, then the neighbours.
// A load holds the GPU for a second or two on a software GPU, and a slice step taken meanwhile waits for it,
// so none starts while the reader is at work: an urgent load (the full volumes of the case on screen) waits
// for a pause in input of `urgentPauseMs`, a neighbour for `pauseMs`, both counted from the later of the
// reader's last input and when the load was asked for (for the full volumes: the preview's first image).

/** The times the viewer waits for; a test passes its own clock and sleep. */
export const PAUSES = { urgentPauseMs: 300, pauseMs: 600, pollMs: 100 };

export class BackgroundLoads {
  /**
   * `now()` in milliseconds and `sleep(ms)` (a promise): performance.now and setTimeout in the viewer.
   */
  constructor({ now, sleep, pauses = PAUSES }) {
    this.now = now;
    this.sleep = sleep;
    this.pauses = pauses;
    this.queue = [];
    this.running = false;
    this.lastInput = -Infinity;
  }

  /** The reader did something (a key, the wheel, a click or a drag): loads wait for the next pause. */
  noteInput() {
    this.lastInput = this.now();
  }

  /**
   * Runs `load()` in turn once the reader pauses (an `urgent` one before every other), if `stillWanted()`
   * then; resolves when it is done or dropped.
   */
  add(load, stillWanted, urgent) {
    return new Promise((resolve) => {
      const task = { load, stillWanted, urgent, resolve, asked: this.now() };
      if (urgent) this.queue.unshift(task);
      else this.queue.push(task);
      this.run();
    });
  }

  async run() {
    if (this.running) return;
    this.running = true;
    while (this.queue.length) {
      const [next] = this.queue;
      const pause = next.urgent ? this.pauses.urgentPauseMs : this.pauses.pauseMs;
      if (this.now() - Math.max(this.lastInput, next.asked) < pause) {
        await this.sleep(this.pauses.pollMs);
        continue;
      }
      const task = this.queue.shift();
      if (task.stillWanted()) await task.load();
      task.resolve();
    }
    this.running = false;
  }
}
