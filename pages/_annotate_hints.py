"""Annotate's client hints: a small script of ours in the page (st.components.v2, no iframe).

1. Keys are never lost. Streamlit binds a button's shortcut a moment after the button is drawn,
   so a key pressed as a trajectory appears (or while the page reruns) used to be dropped. The
   script takes Annotate's keys itself (core.views.annotate.KEYS, given as data), from the first
   Annotate render on (before any trajectory shows), queues them, and presses the button of
   each (the keyboard bar's, or the page's Submit, Next, Previous) in order, one at a time, once
   the button exists and the previous press has been run, so "3 3 3" rates three steps.
   Keys typed into a text box stay text; other pages are left alone.
2. Dwell times leave out time away: when the tab is shown again after being hidden, it sends the
   hidden seconds (core.views.annotate.DwellClock.hidden_span).

It reads no page content beyond Streamlit's own button keys and sends nothing but that number.
"""

from __future__ import annotations

import streamlit as st

from core.views.annotate import DwellClock, key_codes

_JS = """
const onAnnotate = () => window.location.pathname.replace(/\\/+$/, "").endsWith("/annotate");
const running = () => !document.querySelector("[data-testid='stApp'][data-test-script-state='notRunning']");

export default function(component) {
    window.__stepscopeHidden = component.setTriggerValue;
    window.__stepscopeKeys = component.data;  // {plain, shift}: {KeyboardEvent.code: button to press}
    if (window.__stepscopeHints) return;
    window.__stepscopeHints = true;

    const queue = [];
    let pressedAt = 0, sawRun = false;
    window.addEventListener("keydown", (event) => {
        if (!onAnnotate() || event.ctrlKey || event.altKey || event.metaKey || event.repeat) return;
        if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable='true']")) return;
        const key = window.__stepscopeKeys[event.shiftKey ? "shift" : "plain"][event.code];
        if (!key) return;
        event.preventDefault();
        event.stopImmediatePropagation();  // ours alone: Streamlit's handler would press it twice
        queue.push({key, at: performance.now()});
    }, {capture: true});
    setInterval(() => {
        const now = performance.now();
        while (queue.length && now - queue[0].at > 20000) queue.shift();  // a stale key is dropped
        if (!queue.length || !onAnnotate()) return;
        if (pressedAt) {  // the last press: wait until its run has started and ended (or 3 s)
            if (running()) sawRun = true;
            if ((!sawRun || running()) && now - pressedAt < 3000) return;
            pressedAt = 0;
        }
        if (running()) return;
        const key = CSS.escape(queue[0].key);  // the keyboard bar's buttons, or a Streamlit button (Next, ...)
        const buttons = document.querySelectorAll(`button[data-ann-key="${key}"], .st-key-${key} button`);
        if (!buttons.length) return;  // not drawn yet: keep the key
        queue.shift();
        const button = buttons[buttons.length - 1];
        if (button.disabled) return;
        pressedAt = now; sawRun = false;
        button.click();
    }, 50);

    let hiddenAt = document.visibilityState === "hidden" ? performance.now() : null;
    document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "hidden") { hiddenAt = performance.now(); return; }
        if (hiddenAt !== null) {
            window.__stepscopeHidden("hidden_s", (performance.now() - hiddenAt) / 1000);
            hiddenAt = null;
        }
    });
}
"""

_hints = st.components.v2.component("stepscope_annotate_hints", js=_JS)
_KEY_CODES = key_codes()  # the keys it takes and the buttons it presses: core.views.annotate.KEYS


def client_hints(clock: DwellClock) -> None:
    """Mount the script (once per page view; it persists across reruns) and pass on hidden time."""
    hidden = _hints(key="ann_hints", data=_KEY_CODES, on_hidden_s_change=lambda: None).hidden_s
    if hidden:
        clock.hidden_span(float(hidden))
