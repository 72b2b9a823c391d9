"""What the browser sends that AppTest has no element API for: a custom component's value (the NiiVue
viewer's actions) and a Vega-Lite chart's selection (a click on the score curve). Each goes into the next
run's widget states beside every other widget's, as the browser sends them all on a rerun."""

from __future__ import annotations

import json

from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest


def run_with_component_value(at: AppTest, element_id: str, value: object) -> AppTest:
    """Rerun with the component `element_id` holding `value` (what its frontend sent last)."""
    states = _current_states(at)
    state = states.widgets.add()
    state.id, state.json_value = element_id, json.dumps(value)
    return at._run(states)


def run_with_chart_selection(at: AppTest, element_id: str, selection: dict) -> AppTest:
    """Rerun as after a click on the chart `element_id` that selected `selection` (by parameter name)."""
    states = _current_states(at)
    state = states.widgets.add()
    state.id, state.string_value = element_id, json.dumps({"selection": selection})
    return at._run(states)


def _current_states(at: AppTest) -> WidgetStates:
    return at._tree.get_widget_states()
