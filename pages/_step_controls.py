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

# Buttons: [field, value or null (a toggle), label, tooltip]. A row's state comes in `data`:
# rating, first_error, flagged, greyed (after the first error: rating disabled), cursor
# (the highlighted step: no Highlight button), summary, status, error.
_JS = """
const BUTTONS = [
    ["rating", -1, "\\u22121", "rate this step \\u22121"], ["rating", 0, "0", "rate this step 0"],
    ["rating", 1, "+1", "rate this step +1"],
    ["first_error", null, "1st err", "first error here (E on the highlighted step)"],
    ["flagged", null, "Flag", "flag this step (F on the highlighted step)"],
];

export default function(component) {
    const {data, parentElement} = component;
    let root = parentElement.querySelector(":scope > .ss-step");
    if (!root) {
        root = document.createElement("div");
        root.className = "ss-step";
        const row = document.createElement("div");
        row.className = "ss-buttons";
        for (const [field, value, label, title] of BUTTONS) {
            const button = document.createElement("button");
            button.type = "button";
            button.textContent = label;
            button.title = title;
            button.dataset.field = field;
            if (value !== null) button.dataset.value = String(value);
            button.addEventListener("click", () => {
                const state = root.__state;
                const sent = value !== null ? value : !state[field];
                root.__send("action", {field, value: sent});
            });
            row.appendChild(button);
        }
        const highlight = document.createElement("button");
        highlight.type = "button";
        highlight.textContent = "Highlight";
        highlight.title = "keys act on this step, and its confidence, rationale and note open here";
        highlight.dataset.field = "highlight";
        highlight.addEventListener("click", () => root.__send("action", {field: "highlight", value: true}));
        for (const name of ["summary", "status", "error"]) {
            const line = document.createElement("div");
            line.className = name === "error" ? "ss-error" : "ss-note";
            line.dataset.line = name;
            if (name === "error") line.setAttribute("role", "alert");
            root.appendChild(line);
        }
        root.insertBefore(row, root.firstChild);
        root.appendChild(highlight);
        parentElement.appendChild(root);
    }
    root.__send = component.setTriggerValue;  // the latest render's sender
    root.__state = data;
    for (const button of root.querySelectorAll(".ss-buttons button")) {
        const field = button.dataset.field;
        const on = field === "rating" ? String(data.rating) === button.dataset.value : Boolean(data[field]);
        button.setAttribute("aria-pressed", on ? "true" : "false");
        button.disabled = Boolean(data.greyed) && field !== "flagged";
    }
    root.querySelector("[data-field='highlight']").hidden = Boolean(data.cursor);
    for (const line of root.querySelectorAll("[data-line]")) {
        const text = data[line.dataset.line] || "";
        line.textContent = line.dataset.line === "error" && text ? "Not saved: " + text : text;
    }
}
"""

# The keyboard bar: [key, label, key hint, tooltip]; `data` has the keys to disable and the
# caption. The client script (pages/_annotate_hints.py) presses these buttons for the keys.
_KEYS_JS = """
const KEYS = [
    ["ann_key_r-1", "\\u22121", "1", "rate the highlighted step \\u22121 and move on (1)"],
    ["ann_key_r0", "0", "2", "rate the highlighted step 0 and move on (2)"],
    ["ann_key_r1", "+1", "3", "rate the highlighted step +1 and move on (3)"],
    ["ann_key_fe", "1st err", "E", "first error at the highlighted step (E)"],
    ["ann_key_fl", "Flag", "F", "flag the highlighted step (F)"],
    ["ann_up", "Up", "K", "previous step (K)"], ["ann_down", "Down", "J", "next step (J)"],
    ...[1, 2, 3, 4, 5].map(level => [`ann_key_c${level}`, `c${level}`, `\\u21e7${level}`,
                                     `confidence ${level} on the highlighted step (Shift+${level})`]),
];

export default function(component) {
    const {data, parentElement} = component;
    let root = parentElement.querySelector(":scope > .ss-keys");
    if (!root) {
        root = document.createElement("div");
        root.className = "ss-keys";
        for (const [key, label, hint, title] of KEYS) {
            const button = document.createElement("button");
            button.type = "button";
            button.title = title;
            button.dataset.annKey = key;
            const name = document.createElement("span");
            name.textContent = label;
            const kbd = document.createElement("kbd");
            kbd.textContent = hint;
            button.append(name, kbd);
            button.addEventListener("click", () => root.__send("key", key));
            root.appendChild(button);
        }
        const caption = document.createElement("div");
        caption.className = "ss-note";
        root.appendChild(caption);
        parentElement.appendChild(root);
    }
    root.__send = component.setTriggerValue;
    const disabled = new Set(data.disabled || []);
    for (const button of root.querySelectorAll("button")) button.disabled = disabled.has(button.dataset.annKey);
    root.querySelector(".ss-note").textContent = data.caption || "";
}
"""

ROW_KEY = "ann_ctl_"  # + step id: a row's element (its CSS class is st-key-ann_ctl_<id>)
KEYBOARD_KEY = "ann_keys"

_controls = st.components.v2.component("stepscope_step_controls", js=_JS, css=_CSS, isolate_styles=False)
_keys = st.components.v2.component("stepscope_keyboard_bar", js=_KEYS_JS, css=_CSS, isolate_styles=False)


def step_controls(step_id: int, state: dict, on_action: Callable[[object], None]) -> None:
    """Draw one row's controls; `on_action` gets the clicked action ({"field", "value"} from
    our script, anything from a hostile client) before the next run, as a button's on_click
    would."""
    key = f"{ROW_KEY}{step_id}"
    _controls(key=key, data=state, on_action_change=lambda: on_action(st.session_state[key].get("action")))


def keyboard_controls(disabled: list[str], caption: str, on_key: Callable[[object], None]) -> None:
    """Draw the keyboard bar; `on_key` gets the pressed button's key (core.views.annotate.
    KEYBOARD_ACTIONS; anything from a hostile client) before the next run."""
    _keys(key=KEYBOARD_KEY, data={"disabled": disabled, "caption": caption},
          on_key_change=lambda: on_key(st.session_state[KEYBOARD_KEY].get("key")))
