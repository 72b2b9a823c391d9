"""What the reader pressed inside the viewer (N, P, B), as the page receives it: every action once, in order.

A component's value is only what the browser sent last, and one script rerun may follow several key presses
(N, then B before the page has rerun). So the viewer sends its recent actions, each numbered in the order
pressed since its page loaded (that load is named by `epoch`); the page remembers the highest number it has
handled and runs every newer action, oldest first. A reloaded viewer (a new epoch) numbers from 1 again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

KEY_VIEWER = "niivue.viewer"
KEY_HANDLED = "niivue.handled"
MOVES: tuple[str, ...] = ("next", "previous")
BOOKMARK = "bookmark"


@dataclass(frozen=True)
class ViewerAction:
    """One press inside the viewer: `next` or `previous` (with the `case_id` the viewer moved to when it had
    that case prepared), or `bookmark` (the crosshair's `mm` in `plane`, on the case `case_id` it was made
    on). `count`: its place among the viewer's actions."""

    action: str
    plane: str | None = None
    mm: tuple[float, float, float] | None = None
    case_id: str | None = None
    count: int = 0


@dataclass(frozen=True)
class ActionMark:
    """How far the page had received the viewer's actions: the viewer's page load and its last count."""

    epoch: str | None = None
    count: int = 0


def received(value: object) -> tuple[str | None, list[ViewerAction]]:
    """The viewer's epoch and its recent actions from a component value, oldest first (malformed entries
    are left out)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("actions"), list):
        return None, []
    epoch = value.get("epoch") if isinstance(value.get("epoch"), str) else None
    actions = [action for action in map(_action, value["actions"]) if action is not None]
    return epoch, sorted(actions, key=lambda action: action.count)


def _action(entry: object) -> ViewerAction | None:
    if not isinstance(entry, Mapping) or entry.get("action") not in (*MOVES, BOOKMARK):
        return None
    count, mm, plane, case_id = entry.get("count"), entry.get("mm"), entry.get("plane"), entry.get("case")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return None
    numbers = isinstance(mm, list) and len(mm) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in mm)
    return ViewerAction(entry["action"], plane if isinstance(plane, str) else None,
                        tuple(float(v) for v in mm) if numbers else None,
                        case_id if isinstance(case_id, str) else None, count)


def take_unhandled() -> list[ViewerAction]:
    """The viewer's actions the page has not handled yet, oldest first; they count as handled from now on."""
    epoch, actions = received(st.session_state.get(KEY_VIEWER))
    handled: ActionMark = st.session_state.get(KEY_HANDLED) or ActionMark()
    done = handled.count if handled.epoch == epoch else 0
    if actions:
        st.session_state[KEY_HANDLED] = ActionMark(epoch, max(done, actions[-1].count))
    return [action for action in actions if action.count > done]


def received_mark() -> ActionMark:
    """How far the viewer's actions have reached the page now (what a form drawn now has seen)."""
    epoch, actions = received(st.session_state.get(KEY_VIEWER))
    return ActionMark(epoch, actions[-1].count if actions else 0)


def moved_since(mark: ActionMark) -> bool:
    """Whether the viewer has moved to another case (N or P) since `mark`, handled by the page yet or not."""
    epoch, actions = received(st.session_state.get(KEY_VIEWER))
    return any(action.action in MOVES and (epoch != mark.epoch or action.count > mark.count) for action in actions)
