"""core.views.math_text: math spans for KaTeX, everything else inert, bidi controls visible."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from core.views.math_text import math_markdown, neutralise_math, show_bidi


def test_inline_and_display_math_pass_through():
    assert math_markdown(r"half is $\frac{1}{2}$.") == r"half is $\frac{1}{2}$\."
    assert math_markdown(r"so \(x^2\) and") == "so $x^2$ and"
    assert "\n$$\nx = 1\n$$\n" in math_markdown(r"then $$x = 1$$ done")
    assert "\n$$\ny\n$$\n" in math_markdown(r"then \[y\] done")


def test_prices_are_not_math():
    assert math_markdown("costs $5 and $6 total") == r"costs \$5 and \$6 total"
    assert math_markdown("$ 5 $") == r"\$ 5 \$"
    assert math_markdown("from $3$4") == r"from \$3\$4"  # a closing $ before a digit is a price


def test_markdown_and_html_outside_math_are_escaped():
    hostile = '<img src="http://x/y.png"> [link](http://evil.example/) **bold** :red[r] # h'
    out = math_markdown(hostile)
    assert not re.search(r"(?<!\\)[<>\[\]()*:#]", out), out  # every markup character is escaped
    assert r"\<img" in out and r"\]\(" in out and r"\*\*bold" in out
    assert "http\u200b" in out  # autolinks broken


def test_line_breaks_are_kept_as_hard_breaks():
    assert math_markdown("a\nb") == "a  \nb"


@pytest.mark.parametrize("command", [r"\href{javascript:alert(1)}{x}", r"\url{http://evil.example}",
                                     r"\includegraphics{http://198.51.100.7/x.png}", r"\htmlClass{a}{b}",
                                     r"\htmlStyle{color:red}{b}", r"\htmlId{i}{b}", r"\htmlData{a=b}{c}",
                                     r"\def\x{1}", r"\newcommand{\h}{\href}", r"\rule{9999em}{9999em}"])  # fmt: skip
def test_commands_that_reach_outside_the_formula_are_neutralised(command):
    out = math_markdown(f"$a {command} b$")
    name = re.match(r"\\([A-Za-z]+)", command).group(1)
    assert f"\\{name}" not in out.replace(r"\backslash\text{" + name + "}", "")
    assert r"\backslash\text{" + name + "}" in out


def test_safe_commands_are_kept():
    assert neutralise_math(r"\frac{1}{2} \sqrt{x} \textbf{y} \hrefx") == r"\frac{1}{2} \sqrt{x} \textbf{y} \hrefx"


def test_bidi_controls_are_shown_not_obeyed():
    assert show_bidi("abc\u202edef\u2066") == "abc⟨U+202E⟩def⟨U+2066⟩"
    assert "\u202e" not in math_markdown("x \u202e $y\u202e$")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab $\\()[]{}<>!*_`:#/\n\u202e") + ["href", "url", "http://"]), max_size=40).map("".join))
def test_no_dangerous_command_or_raw_markup_survives(text):
    out = math_markdown(text)
    spans, outside = split_math(out)
    for span in spans:  # what KaTeX gets
        assert not re.search(r"\\(href|url)(?![A-Za-z])", span), (text, out)
    assert "\u202e" not in out
    assert not re.search(r"[<>\[\]*_`]", outside), (text, out)  # what markdown sees as text, escapes left out


def split_math(markdown: str) -> tuple[list[str], str]:
    """Math spans ($...$, $$...$$) and the text outside them without its backslash escapes, read
    left to right as markdown does: `\\\\$` is an escaped backslash followed by a real `$`."""
    spans, outside, i = [], [], 0
    while i < len(markdown):
        if markdown[i] == "\\":
            i += 2  # an escaped character is text, whatever it is
            continue
        if markdown[i] == "$":
            fence = "$$" if markdown.startswith("$$", i) else "$"
            end = i + len(fence)
            while end < len(markdown) and not markdown.startswith(fence, end):
                end += 2 if markdown[end] == "\\" else 1
            if end >= len(markdown):  # no closing fence: this `$` is text, and the rest is read on
                outside.append(markdown[i])
                i += 1
                continue
            spans.append(markdown[i : end + len(fence)])
            i = end + len(fence)
            continue
        outside.append(markdown[i])
        i += 1
    return spans, "".join(outside)


def test_text_after_an_unclosed_fence_is_read_with_its_escapes():
    """The property's reader: an unclosed `$` is text and what follows keeps its escapes (a case
    hypothesis found: `$\\$<` becomes `$\\$\\<`, whose `<` is escaped, not raw markup)."""
    assert split_math("$\\$\\<") == ([], "$")
    assert split_math("$<") == ([], "$<")  # a raw `<` after an unclosed fence is still seen
    assert math_markdown("$\\$<") == "$\\$\\<"
