"""Number fields that refuse text with a sentence naming the field.

Gradio's Number and Slider compare what they are sent with their bounds before any handler runs, so text such as
"ten" (which only an API client can send: the page's fields take digits) fails there with Gradio's generic
"The upstream Gradio app has raised an exception", and "nan", "inf", "1e400", a list or an object with an error
whose message is None. A field made here checks its value first, as ``photo_input`` checks an image, and the
caller reads "Epochs must be a number, not 'ten'." instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import gradio as gr


def named_numbers(*fields: gr.Number | gr.Slider) -> None:
    """Makes each field refuse a value that is not a finite number (text, NaN, an infinity, a list, an object,
    true or false) with one sentence that names it (its label, without the part in brackets). Text that reads as
    a number ("5", "0.02") passes on as that number; an empty Number (None) passes on as None (blank has a
    meaning there), an empty Slider does not (it has no blank)."""
    for field in fields:
        blank = isinstance(field, gr.Number)
        field.preprocess = _checked(field.preprocess, re.split(r"\s*\(", field.label or "This field")[0], blank)


def _checked(preprocess: Callable, name: str, blank: bool) -> Callable:
    def checked(payload):
        if payload is None and blank:
            return preprocess(payload)
        number = payload
        if isinstance(payload, str):
            try:
                number = float(payload)
            except ValueError:
                number = None
        if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
            shown = {list: "a list", dict: "an object"}.get(type(payload)) or repr(
                payload[:40] if isinstance(payload, str) else payload if isinstance(payload, (int, float)) else None)
            raise gr.Error(f"{name} must be a number, not {shown}.")
        return preprocess(number)

    return checked
