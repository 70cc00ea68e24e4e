"""Messages whole (issue 25): what a visitor chose (a file name with quotes or markup, a class name) and what the
library says ("… (<urlopen error …>)") reach the page as text. Gradio renders a toast's message and a Markdown
block as HTML; here they are rendered as the page does (HTML, and Markdown then HTML) and read as a browser
shows them."""

from __future__ import annotations

from html.parser import HTMLParser

import gradio as gr
import pytest
from markdown_it import MarkdownIt

import ui.choices
import ui.predict
import ui.visitors

MARKUP_CLASSES = ["<b>cat</b>", "*dog*", "snake_case_name", "[link](x)", "<img src=x onerror=alert(1)>"]


def shown(markup: str) -> str:
    """The text a browser shows for ``markup`` (tags dropped, entities decoded), and whether it holds a tag."""
    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts, self.tags = [], []

        def handle_data(self, data):
            self.parts.append(data)

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    parser = Text()
    parser.feed(markup)
    parser.close()
    assert parser.tags == [], f"{markup!r} holds markup: {parser.tags}"
    return "".join(parser.parts)


def shown_markdown(text: str) -> str:
    html = MarkdownIt("commonmark", {"html": True}).render(text)
    return shown(html.replace("<p>", "").replace("</p>", "").replace("<strong>", "").replace("</strong>", ""))


def test_a_library_sentence_with_angle_brackets_reaches_the_toast_whole():
    sentence = "Could not download the flowers data set into data (<urlopen error [Errno -2] Name not known>)."
    assert shown(ui.visitors.for_the_page(sentence)) == sentence


def test_class_names_with_markup_are_shown_letter_for_letter():
    line = shown_markdown(ui.choices.knows_line(MARKUP_CLASSES))
    assert ", ".join(MARKUP_CLASSES) in line, line


def test_a_file_name_with_quotes_and_markup_is_shown_as_text_in_the_upload_refusal(tmp_path):
    name = 'my "best" <b>run & co.txt'
    path = tmp_path / name
    path.write_text("not a checkpoint")
    with pytest.raises(gr.Error) as refused:
        ui.predict.upload_checkpoint(str(path), visitor="a" * 32)
    assert shown(refused.value.message).startswith(f"{name} is not a .safetensors file"), refused.value.message
