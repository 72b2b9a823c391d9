"""The viewer's background loads (app/niivue_frontend/background_loads.js), run in Node on a fake clock: one at a
time, the urgent one (the full volumes of the case on screen) first, each only after the reader has paused
(300 ms for the urgent one, 600 ms for a neighbour, counted from the later of the last input and when the load
was asked for), and a load no longer wanted when its turn comes is dropped but still resolves.
Without Node it is skipped, except in CI, where it must run.
"""

from __future__ import annotations

import pytest

from node_scenario import run_node_scenario

# A clock that only moves when the scheduler sleeps or a load runs (each load takes 100 ms); prints, as JSON,
# when each load started and when each promise resolved.
SCENARIO = """
const { BackgroundLoads, PAUSES } = await import(process.argv[1]);
let clock = 0;
const events = [];
const loads = new BackgroundLoads({
  now: () => clock,
  sleep: async (ms) => {
    await null;  // time passes after the caller's synchronous part (all three loads are asked for at 0)
    clock += ms;
    if (clock === 500) { loads.noteInput(); events.push(["input", clock]); }  // the reader steps at 500 ms
  },
});
const load = (name) => async () => { events.push(["start", name, clock]); clock += 100; };
const done = (name) => () => events.push(["done", name, clock]);
const neighbour = loads.add(load("neighbour"), () => true, false).then(done("neighbour"));
const full = loads.add(load("full"), () => true, true).then(done("full"));
const dropped = loads.add(load("dropped"), () => false, false).then(done("dropped"));
await Promise.all([neighbour, full, dropped]);
console.log(JSON.stringify({ events, pauses: PAUSES }));
"""


@pytest.fixture(scope="module")
def report() -> dict:
    return run_node_scenario(SCENARIO, "background_loads.js")


def test_the_viewer_waits_300_ms_for_the_full_volumes_and_600_ms_for_a_neighbour(report):
    assert report["pauses"] == {"urgentPauseMs": 300, "pauseMs": 600, "pollMs": 100}


def test_loads_run_one_at_a_time_urgent_first_and_only_in_a_pause(report):
    assert report["events"] == [
        ["start", "full", 300],  # asked at 0, urgent: first, once 300 ms passed with no input
        ["done", "full", 400],
        ["input", 500],  # the reader steps: the neighbour's pause starts again
        ["start", "neighbour", 1100],  # 600 ms after the input, not 600 ms after it was asked for
        ["done", "neighbour", 1200],
        ["done", "dropped", 1200],  # no longer wanted: not loaded, but its promise resolves
    ]
