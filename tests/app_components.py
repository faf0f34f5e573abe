"""AppTest and our st.components.v2 elements (Annotate's step controls and keyboard bar).

AppTest runs the page's Python but not a component's JavaScript, and it has no API for a
component's events. These helpers read the data a component was given and send the trigger
event its JavaScript would send (the same widget state Streamlit's frontend sends), so the
page's callbacks run as they do in a browser; tests/test_reliability.py clicks the real ones
in Chromium.
"""

from __future__ import annotations

import json

from streamlit.components.v2.bidi_component.main import _make_trigger_id
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from pages._step_controls import KEYBOARD_KEY, ROW_KEY


def component(at: AppTest, key: str):
    """The component element with this user key (the last one drawn)."""
    found = [node for node in at._tree if getattr(node, "type", None) == "bidi_component" and node.key == key]
    assert found, f"no component {key!r} on the page"
    return found[-1]


def step_controls(at: AppTest, step_id: int) -> dict:
    """What a step row's controls were given: rating, first_error, flagged, greyed, cursor,
    summary, status, error."""
    return json.loads(component(at, f"{ROW_KEY}{step_id}").proto.json)


def click_step(at: AppTest, step_id: int, field: str, value=None) -> AppTest:
    """Click a row's control as its JavaScript does: ("rating", -1 | 0 | 1), ("first_error" |
    "flagged") toggles the shown state, ("highlight"). Runs the page."""
    if value is None:
        value = True if field == "highlight" else not step_controls(at, step_id)[field]
    return send_action(at, step_id, {"field": field, "value": value})


def send_action(at: AppTest, step_id: int, action) -> AppTest:
    """Send any payload as the row's action event (a hostile or broken client included)."""
    return send_event(at, f"{ROW_KEY}{step_id}", "action", action)


def press_key(at: AppTest, key) -> AppTest:
    """Press a keyboard bar button ("ann_key_r1", "ann_down", ...), as the client script does
    for a key. Runs the page."""
    return send_event(at, KEYBOARD_KEY, "key", key)


def keyboard_bar(at: AppTest) -> dict:
    """What the keyboard bar was given: the keys it draws disabled and its caption."""
    return json.loads(component(at, KEYBOARD_KEY).proto.json)


def send_event(at: AppTest, key: str, event: str, value) -> AppTest:
    """The trigger event a component's setTriggerValue(event, value) sends; runs the page."""
    element = component(at, key)
    states = at._tree.get_widget_states()
    state = WidgetState(id=_make_trigger_id(element.proto.id, "events"))
    state.json_trigger_value = json.dumps([{"event": event, "value": value}])
    states.widgets.append(state)
    return at._run(states)
