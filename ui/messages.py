"""Text on the page, shown as text: Gradio renders a toast's message (gr.Error, gr.Warning, gr.Info) and a
Markdown block as HTML, so a library sentence such as "<urlopen error …>" or a class name a visitor chose
("<b>cat</b>", "*dog*") would be interpreted, or vanish. And an answer that an error replaces is cleared, not
left beside the message as if it were the answer to the new input."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator

import gradio as gr

# What Markdown would read as formatting (emphasis, links, code, headings, lists, tables).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def page_text(text: str) -> str:
    """``text`` for a toast or a Markdown block: <, > and & escaped, so that the page shows them as they are."""
    return html.escape(str(text), quote=False)


def markdown_text(text: str) -> str:
    """A name a visitor chose (a class, a data set), for Markdown: shown letter for letter, never formatted."""
    return _MARKDOWN.sub(r"\\\1", page_text(text))


def whole_or_cleared(compute: Callable[[], tuple], cleared: Callable[[str], tuple]) -> Iterator[tuple]:
    """One event's answer, written whole: ``compute()``'s outputs; or, when it refuses the input (gr.Error),
    ``cleared(message)`` — the view emptied and the message in its status line — and then the toast. A generator,
    so that one handler writes both (no follow-up event that a later one could overtake)."""
    try:
        answer = compute()
    except gr.Error as error:
        yield cleared(error.message)
        raise
    yield answer
