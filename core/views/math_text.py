"""Untrusted text with LaTeX math, made safe for Streamlit markdown: math renders, nothing else does.

PRM800K and MATH-style problems write math as `$\\frac{1}{2}$`, `$$...$$`, `\\(...\\)` and
`\\[...\\]`. `math_markdown` finds those spans and hands them to the KaTeX that Streamlit's
markdown bundles (as `$...$` and `$$...$$`), and escapes everything else the way
`inputs.escape_markdown` does, so no link, image, HTML tag, directive or emphasis can form
outside math. Inside math, the commands that reach outside the formula are neutralised: links
(`\\href`, `\\url`), images (`\\includegraphics`), HTML attributes (`\\htmlClass`, `\\htmlId`,
`\\htmlStyle`, `\\htmlData`), macro definitions that could assemble them, and `\\rule` (a huge box
could cover the page). They are shown as their name in text, not obeyed.

Bidirectional-override and isolate characters (U+202A..U+202E, U+2066..U+2069, and the marks
U+200E, U+200F, U+061C) are shown visibly as ⟨U+202E⟩, never obeyed: they can make text read
differently from what it is.

A `$` counts as math only when it could not be a price: the opening `$` is followed by a
non-space, the closing one follows a non-space and is not followed by a digit (Pandoc's rule),
so "$5 and $6" stays text.
"""

from __future__ import annotations

import re

from core.views.inputs import escape_markdown

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_BIDI = re.compile(f"[{''.join(sorted(BIDI_CONTROLS))}]")

# Display first, then inline; a span never contains the delimiter that closes it.
_MATH = re.compile(
    r"\$\$(?P<display>[^$]+?)\$\$"
    r"|\\\[(?P<display_bracket>.+?)\\\]"
    r"|\\\((?P<inline_paren>.+?)\\\)"
    r"|\$(?P<inline>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?!\d)",
    re.DOTALL,
)
_DANGEROUS = re.compile(
    r"\\(href|url|includegraphics|html[A-Za-z]*|def|gdef|edef|xdef|let|futurelet|newcommand|renewcommand|"
    r"providecommand|DeclareMathOperator|csname|rule|char|string|input|include)(?![A-Za-z])"
)
MAX_MATH_CHARS = 2000  # a longer "formula" is shown as text


def show_bidi(text: str) -> str:
    """Bidirectional controls replaced by a visible ⟨U+XXXX⟩."""
    return _BIDI.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def neutralise_math(tex: str) -> str:
    """TeX for KaTeX with the commands that link, load, style or define replaced by their name."""
    return _DANGEROUS.sub(lambda m: r"\backslash\text{" + m.group(1) + "}", tex)


def _escape_text(text: str) -> str:
    """Plain text for markdown, line breaks kept (as hard breaks)."""
    lines = []
    for line in text.split("\n"):
        # escape_markdown collapses whitespace; a space that separates text from math stays.
        lead = " " if line[:1].isspace() else ""
        tail = " " if line[-1:].isspace() and line.strip() else ""
        lines.append(lead + escape_markdown(line) + tail)
    return "  \n".join(lines)


def math_markdown(text: str) -> str:
    """Markdown for st.markdown: the math spans of `text` as KaTeX, every other character inert."""
    text = show_bidi(str(text))
    out: list[str] = []
    position = 0
    for match in _MATH.finditer(text):
        tex = next(group for group in match.groups() if group is not None)
        if len(tex) > MAX_MATH_CHARS or not tex.strip():
            continue
        out.append(_escape_text(text[position : match.start()]))
        tex = neutralise_math(tex)
        if match.group("display") is not None or match.group("display_bracket") is not None:
            out.append("\n\n$$\n" + tex.strip().replace("$", "") + "\n$$\n\n")
        else:
            out.append("$" + " ".join(tex.split()).replace("$", "") + "$")
        position = match.end()
    out.append(_escape_text(text[position:]))
    return "".join(out)
