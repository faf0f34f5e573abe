"""Annotate's controls: one small element per step row and one for the keyboard bar
(st.components.v2, no iframe).

A row's rating buttons, first-error and flag toggles, Highlight and status lines were eight
Streamlit widgets and a dozen layout blocks, and the keyboard bar 13 buttons in 14 columns;
each Streamlit element in a rerun costs the browser a React render and its styling, so every
save paid for the row's. Here each is one element that draws plain buttons and updates their
state in place when its data changes (benchmarks/reliability_load.py, 8 annotators: save p50
1.20 -> 0.94 s for the rows; the bar, which a key or a trajectory switch redraws, made no
measurable difference to saves). A click sends one trigger event; the label is committed by
the page's callback before the row is drawn again, so "chosen" on the page still means "in
the file".

The element's text (status, error, the summary of the optional fields, which quotes the
annotator's own rationale and note) is set as text, never parsed as HTML.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from core.views.annotate import keyboard_bar_buttons, row_buttons

_CSS = """
.ss-keys { display: flex; gap: 0.3rem; flex-wrap: wrap; align-items: center; font-family: var(--st-font, inherit); }
.ss-keys .ss-note { flex-basis: 100%; }
.ss-keys kbd { margin-left: 0.35rem; font-size: 0.75rem; opacity: 0.6; font-family: inherit; }
.ss-step { display: flex; flex-direction: column; gap: 0.35rem; font-family: var(--st-font, inherit); }
.ss-step .ss-buttons { display: flex; gap: 0.3rem; flex-wrap: wrap; }
.ss-step button, .ss-keys button {
    min-width: 2.6rem; padding: 0.25rem 0.6rem; border-radius: var(--st-base-radius, 0.5rem);
    border: 1px solid var(--st-border-color, rgba(49, 51, 63, 0.2)); background: var(--st-background-color, #fff);
    color: var(--st-text-color, #31333f); font: inherit; font-size: 0.95rem; cursor: pointer;
}
.ss-step button:hover:not(:disabled), .ss-keys button:hover:not(:disabled) { border-color: var(--st-primary-color, #ff4b4b); color: var(--st-primary-color, #ff4b4b); }
.ss-step button[aria-pressed="true"] {
    background: var(--st-primary-color, #ff4b4b); border-color: var(--st-primary-color, #ff4b4b); color: #fff;
}
.ss-step button:disabled, .ss-keys button:disabled { opacity: 0.4; cursor: not-allowed; }
.ss-step > button { align-self: flex-start; }
.ss-step .ss-note, .ss-keys .ss-note { font-size: 0.85rem; color: var(--st-text-color, #31333f); opacity: 0.7; overflow-wrap: anywhere; }
.ss-step .ss-error { font-size: 0.9rem; color: #7d353b; background: #ffecec; padding: 0.3rem 0.5rem; border-radius: 0.4rem; }
.ss-step .ss-note:empty, .ss-step .ss-error:empty { display: none; }
"""

# Both elements draw their buttons from `data.buttons`, core.views.annotate's key map (one map for
# the bar, the rows and the client script's keys). `mounted` builds an element's DOM on its first
# render and finds it on the later ones; `button` makes one button.
_HELPERS_JS = """
function mounted(parentElement, className, build) {
    let root = parentElement.querySelector(`:scope > .${className}`);
    if (!root) {
        root = document.createElement("div");
        root.className = className;
        build(root);
        parentElement.appendChild(root);
    }
    return root;
}

function button(label, title, onClick) {
    const made = document.createElement("button");
    made.type = "button";
    made.title = title;
    made.append(...label);
    made.addEventListener("click", onClick);
    return made;
}
"""

# A row: data.buttons is [field, value or null (a toggle), label, tooltip] (core.views.annotate.
# row_buttons); the row's state, also in `data`: rating, first_error, flagged, greyed (after the
# first error: rating disabled), cursor (the highlighted step: no Highlight button), summary,
# status, error.
_JS = _HELPERS_JS + """
export default function(component) {
    const {data, parentElement} = component;
    const root = mounted(parentElement, "ss-step", (root) => {
        const row = document.createElement("div");
        row.className = "ss-buttons";
        for (const [field, value, label, title] of data.buttons) {
            const sent = () => value !== null ? value : !root.__state[field];
            const made = button([label], title, () => root.__send("action", {field, value: sent()}));
            made.dataset.field = field;
            if (value !== null) made.dataset.value = String(value);
            row.appendChild(made);
        }
        const highlight = button(["Highlight"], "keys act on this step, and its confidence, rationale and note open here",
                                 () => root.__send("action", {field: "highlight", value: true}));
        highlight.dataset.field = "highlight";
        for (const name of ["summary", "status", "error"]) {
            const line = document.createElement("div");
            line.className = name === "error" ? "ss-error" : "ss-note";
            line.dataset.line = name;
            if (name === "error") line.setAttribute("role", "alert");
            root.appendChild(line);
        }
        root.insertBefore(row, root.firstChild);
        root.appendChild(highlight);
    });
    root.__send = component.setTriggerValue;  // the latest render's sender
    root.__state = data;
    for (const made of root.querySelectorAll(".ss-buttons button")) {
        const field = made.dataset.field;
        const on = field === "rating" ? String(data.rating) === made.dataset.value : Boolean(data[field]);
        made.setAttribute("aria-pressed", on ? "true" : "false");
        made.disabled = Boolean(data.greyed) && field !== "flagged";
    }
    root.querySelector("[data-field='highlight']").hidden = Boolean(data.cursor);
    for (const line of root.querySelectorAll("[data-line]")) {
        const text = data[line.dataset.line] || "";
        line.textContent = line.dataset.line === "error" && text ? "Not saved: " + text : text;
    }
}
"""

# The keyboard bar: data.buttons is [button, label, key hint, tooltip] (core.views.annotate.
# keyboard_bar_buttons); `data` also has the buttons to disable and the caption. The client
# script (pages/_annotate_hints.py) presses these buttons for the keys.
_KEYS_JS = _HELPERS_JS + """
export default function(component) {
    const {data, parentElement} = component;
    const root = mounted(parentElement, "ss-keys", (root) => {
        for (const [key, label, hint, title] of data.buttons) {
            const name = document.createElement("span");
            name.textContent = label;
            const kbd = document.createElement("kbd");
            kbd.textContent = hint;
            const made = button([name, kbd], title, () => root.__send("key", key));
            made.dataset.annKey = key;
            root.appendChild(made);
        }
        const caption = document.createElement("div");
        caption.className = "ss-note";
        root.appendChild(caption);
    });
    root.__send = component.setTriggerValue;
    const disabled = new Set(data.disabled || []);
    for (const made of root.querySelectorAll("button")) made.disabled = disabled.has(made.dataset.annKey);
    root.querySelector(".ss-note").textContent = data.caption || "";
}
"""

ROW_KEY = "ann_ctl_"  # + step id: a row's element (its CSS class is st-key-ann_ctl_<id>)
KEYBOARD_KEY = "ann_keys"
_ROW_BUTTONS, _BAR_BUTTONS = row_buttons(), keyboard_bar_buttons()

_controls = st.components.v2.component("stepscope_step_controls", js=_JS, css=_CSS, isolate_styles=False)
_keys = st.components.v2.component("stepscope_keyboard_bar", js=_KEYS_JS, css=_CSS, isolate_styles=False)


def step_controls(step_id: int, state: dict, on_action: Callable[[object], None]) -> None:
    """Draw one row's controls; `on_action` gets the clicked action ({"field", "value"} from
    our script, anything from a hostile client) before the next run, as a button's on_click
    would."""
    key = f"{ROW_KEY}{step_id}"
    _controls(key=key, data={**state, "buttons": _ROW_BUTTONS},
              on_action_change=lambda: on_action(st.session_state[key].get("action")))


def keyboard_controls(disabled: list[str], caption: str, on_key: Callable[[object], None]) -> None:
    """Draw the keyboard bar; `on_key` gets the pressed button's key (core.views.annotate.
    KEYBOARD_ACTIONS; anything from a hostile client) before the next run."""
    _keys(key=KEYBOARD_KEY, data={"buttons": _BAR_BUTTONS, "disabled": disabled, "caption": caption},
          on_key_change=lambda: on_key(st.session_state[KEYBOARD_KEY].get("key")))
