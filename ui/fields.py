"""Number fields that refuse text with a sentence naming the field.

Gradio's Number and Slider compare what they are sent with their bounds before any handler runs, so text such as
"ten" (which only an API client can send: the page's fields take digits) fails there with Gradio's generic
"The upstream Gradio app has raised an exception". A field made here checks its value first, as ``photo_input``
checks an image, and the caller reads "Epochs must be a number, not 'ten'." instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import gradio as gr


def named_numbers(*fields: gr.Number | gr.Slider) -> None:
    """Makes each field refuse a value that is not a number with one sentence that names it (its label, without
    the part in brackets). Text that reads as a number ("5", "0.02") passes on as that number."""
    for field in fields:
        field.preprocess = _checked(field.preprocess, re.split(r"\s*\(", field.label or "This field")[0])


def _checked(preprocess: Callable, name: str) -> Callable:
    def checked(payload):
        if isinstance(payload, str):
            try:
                payload = float(payload)
            except ValueError:
                raise gr.Error(f"{name} must be a number, not {payload[:40]!r}.") from None
        return preprocess(payload)

    return checked
