"""The Architecture tab: torchvision's AlexNet at 224 beside the CIFAR-10 net at 32, layer by layer (the paper's
227 one choice away), and any variant at any input size, with the arithmetic of every shape."""

from __future__ import annotations

import html

import gradio as gr
import torch
from matplotlib.figure import Figure

from alexnet_core.geometry import MAX_INPUT_SIZE, SizeError
from alexnet_core.models import MODELS, get_spec
from alexnet_core.plots import shape_plot
from alexnet_core.summary import TABLE_COLUMNS, summarize, table_rows

from .choices import OWN, switch_choices, switch_value
from .fields import named_numbers

# The two sizes every variant is compared at: ImageNet's (as the paper states it) and CIFAR-10's.
COMPARED_SIZES = (224, 32)
# Rows that never change a shape; hiding them keeps two tables readable side by side.
HIDDEN_TYPES = ("ReLU", "Dropout")
# The tab opens on torchvision's AlexNet (what torchvision.models.alexnet() builds, whose weights Predict and
# Inside offer) beside the CIFAR-10 net, each at its own input size: 224 and 32, as the page's introduction
# promises. The paper's AlexNet at 227 is the first choice of the same list.
PAIR = ("alexnet_torchvision", "alexnet_cifar")
LARGE_MODELS = [name for name, spec in MODELS.items() if spec.input_size > 32]   # made for 224/227
SMALL_MODELS = [name for name, spec in MODELS.items() if spec.input_size <= 32]  # made for 32
# The variant looked at closer (its story, any size, the shape plot): the left one of the pair to start with,
# and the custom size starts at its own size.
DEFAULT_MODEL = PAIR[0]
DEFAULT_CUSTOM_SIZE = MODELS[DEFAULT_MODEL].input_size
# The pair's tables, narrow enough that two fit side by side on a 1400 px screen: the batch dimension, the
# layer type (the name says it) and the MACs (in the heading's total) are left out.
COMPACT_COLUMNS = ["Layer", "Output", "Params", "RF", "Arithmetic"]


def _variant_text(model: str) -> str:
    spec = get_spec(model)
    return (
        f"### {spec.title}\n\n"
        f"**Input** {spec.in_channels}×{spec.input_size}×{spec.input_size} · "
        f"**classes** {spec.num_classes}\n\n"
        f"**Source:** {spec.source}\n\n{spec.notes}"
    )


def _size_result(model: str, size: int, batch_norm: bool) -> tuple[str, gr.Dataframe]:
    """A heading with the totals and the table, or the sentence that says why the size does not fit."""
    try:
        summary = summarize(model, size, batch_norm=batch_norm)
    except SizeError as error:
        return f"#### {size}×{size}\n\n⚠️ {error}", gr.Dataframe(value=None, visible=False)
    heading = (f"#### {size}×{size}\n\n{summary.total_params:,} parameters · "
               f"{summary.total_macs:,} MACs")
    rows = table_rows(summary, skip_types=HIDDEN_TYPES)
    return heading, gr.Dataframe(value=rows, headers=TABLE_COLUMNS, visible=True)


def _compact_rows(summary) -> list[list[str]]:
    return [[row.name, "×".join(map(str, row.output_shape[1:])), f"{row.params:,}", str(row.receptive_field),
             row.arithmetic] for row in summary.layers if row.type not in HIDDEN_TYPES]


def _own_size_table(model: str, batch_norm: bool) -> tuple[str, list[list[str]]]:
    """One side of the pair: the variant at its own input size, a heading with its totals and its rows."""
    spec = get_spec(model)
    summary = summarize(model, spec.input_size, batch_norm=batch_norm)
    heading = (f"#### {spec.title} at {spec.input_size}×{spec.input_size}\n\n"
               f"`{model}` · {summary.total_params:,} parameters · {summary.total_macs:,} MACs · "
               f"{spec.num_classes:,} classes")
    return heading, _compact_rows(summary)


def layer_table_html(rows: list[list[str]]) -> str:
    """A plain HTML table (whole, never scrolled: the page decides its width); numbers right-aligned, only the
    arithmetic wraps (CSS's .layers)."""
    kinds = ["name", "shape", "num", "num", "arith"]
    head = "".join(f"<th class='{kind}'>{html.escape(name)}</th>" for kind, name in zip(kinds, COMPACT_COLUMNS))
    body = "".join("<tr>" + "".join(f"<td class='{kind}'>{html.escape(cell)}</td>" for kind, cell in zip(kinds, row))
                   + "</tr>" for row in rows)
    return f"<table class='layers'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def compare(large: str, small: str, batch_norm: str | bool | None = OWN) -> tuple[str, str, str, str]:
    """The Architecture tab's first view: a variant made for 224/227 beside one made for 32, each at its own
    size (torchvision's AlexNet at 224, the CIFAR-10 net at 32 to start with): a heading with the totals
    and the layer table (HTML) of each."""
    outputs: list = []
    batch_norm = switch_value(batch_norm)   # "own": each variant as it is made (BatchNorm or not)
    for model in (large, small):
        heading, rows = _own_size_table(model, batch_norm)
        outputs += [heading, layer_table_html(rows)]
    return tuple(outputs)


def own_size(model: str) -> int:
    """The custom size a variant starts at: its own input size."""
    return get_spec(model).input_size


def architecture(model: str, custom_size: float | None, batch_norm: str | bool | None = OWN
                 ) -> tuple[str, str, gr.Dataframe, str, gr.Dataframe, str, Figure]:
    """Everything the Architecture tab shows: the variant's text, the 224 and 32 tables, the totals
    at the custom size (or why it does not fit), and the shape plot. BatchNorm "own": as the variant is made."""
    batch_norm = switch_value(batch_norm)
    spec = get_spec(model)
    outputs: list = [_variant_text(model)]
    for size in COMPARED_SIZES:
        outputs.extend(_size_result(model, size, batch_norm))

    size = spec.input_size if custom_size is None else custom_size
    try:
        summary = summarize(model, size, batch_norm=batch_norm)
        custom = (f"#### Custom size {summary.input_shape[2]}×{summary.input_shape[3]}\n\n"
                  f"{summary.total_params:,} parameters · {summary.total_macs:,} MACs · "
                  f"{summary.total_flops:,} FLOPs")
    except SizeError as error:
        # Still draw something useful: the variant at its own size.
        summary = summarize(model, spec.input_size, batch_norm=batch_norm)
        custom = f"#### Custom size\n\n⚠️ {error} The plot shows {spec.input_size}×{spec.input_size}."
    outputs += [custom, shape_plot(summary)]
    return tuple(outputs)


def tab(app: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown, gr.Button]:
    """The Architecture tab's layout and events; returns the variant, its layer and the button that opens the
    Inside tab on that layer."""
    with gr.Tab("Architecture", id="architecture"):
        with gr.Row(equal_height=False):
            pair = []
            for names, default, label in ((LARGE_MODELS, PAIR[0], "Made for 224/227"),
                                          (SMALL_MODELS, PAIR[1], "Made for 32")):
                # min_width: two tables side by side on a desktop, one above the other on a phone.
                with gr.Column(min_width=520, elem_classes=["layer-table"]):
                    choice = gr.Dropdown(choices=[(f"{name} — {MODELS[name].title}", name) for name in names],
                                         value=default, label=label)
                    heading = gr.Markdown()
                    table = gr.HTML(label=f"Layers ({label.lower()})")
                    pair.append((choice, heading, table))
        gr.Markdown("### One variant closer: its story, any input size, the shapes layer by layer")
        with gr.Row():
            model = gr.Dropdown(
                choices=[(f"{name} — {spec.title}", name) for name, spec in MODELS.items()],
                value=DEFAULT_MODEL, label="Model", scale=3, min_width=280,
            )
            batch_norm = gr.Radio(choices=switch_choices(), value=OWN, label="BatchNorm", scale=1, min_width=200)
            custom_size = gr.Number(value=DEFAULT_CUSTOM_SIZE, label="Custom size",
                                    precision=0, minimum=1, maximum=MAX_INPUT_SIZE, scale=1)
        variant_text = gr.Markdown(label="Variant")
        with gr.Row():
            layer = gr.Dropdown(label="Layer", scale=1)
            look = gr.Button("See what this layer sees in a photo (Inside tab) →", scale=2)
        custom_totals = gr.Markdown(label="Custom size totals")
        plot = gr.Plot(label="Shapes layer by layer", elem_classes=["mpl-figure"])
        # One table above the other: every column of one table takes a 1400 px page's width.
        with gr.Accordion("This variant at 224 and at 32 (all columns)", open=False):
            tables = []
            for size in COMPARED_SIZES:
                tables += [
                    gr.Markdown(label=f"Totals at {size}"),
                    gr.Dataframe(headers=TABLE_COLUMNS, label=f"Layers at {size}", interactive=False, wrap=True,
                                 max_height=1200),  # whole: every layer, no scrolling inside the page
                ]

    named_numbers(custom_size)
    (large, large_heading, large_table), (small, small_heading, small_table) = pair
    gr.on(triggers=[app.load, large.change, small.change, batch_norm.change], fn=compare,
          inputs=[large, small, batch_norm], outputs=[large_heading, large_table, small_heading, small_table],
          api_name=False, trigger_mode="always_last")
    # Picking a variant of the pair looks at it closer below, and the custom size starts at its own size.
    for choice in (large, small):
        choice.input(lambda name: (name, own_size(name)), inputs=choice, outputs=[model, custom_size],
                     api_name=False)
    model.input(own_size, inputs=model, outputs=custom_size, api_name=False)
    gr.on(
        triggers=[app.load, model.change, custom_size.change, batch_norm.change],
        fn=architecture,
        inputs=[model, custom_size, batch_norm],
        outputs=[variant_text, *tables, custom_totals, plot],
        api_name="summary",
        trigger_mode="always_last",
    )
    gr.on(triggers=[app.load, model.change], fn=conv_layer_choices, inputs=model, outputs=layer, api_name=False)
    return model, layer, look


def conv_layer_choices(model: str) -> gr.Dropdown:
    """The Architecture tab's layer picker: the variant's conv layers."""
    names = [name for name, module in get_spec(model).build().features.named_children()
             if isinstance(module, torch.nn.Conv2d)] if model in MODELS else []
    return gr.Dropdown(choices=names, value=names[-1] if names else None)
