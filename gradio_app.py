"""AlexNet Studio in the browser: ``python gradio_app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply).

The layout lives in ``build_app`` and one small ``_<name>_tab`` function per tab; the handlers are plain
module-level functions that call alexnet_core, so tests and the API can call them directly.
"""

from __future__ import annotations

import gradio as gr
from matplotlib.figure import Figure

from alexnet_core.models import MODELS, get_spec
from alexnet_core.plots import shape_plot
from alexnet_core.summary import TABLE_COLUMNS, SizeError, summarize, table_rows

# The two sizes every variant is compared at: ImageNet's (as the paper states it) and CIFAR-10's.
COMPARED_SIZES = (224, 32)
# Rows that never change a shape; hiding them keeps two tables readable side by side.
HIDDEN_TYPES = ("ReLU", "Dropout")
# Opens on torchvision's net so that the first view has a table (the paper's net fits neither 224 nor 32),
# with the custom size at the paper's 227.
DEFAULT_MODEL = "alexnet_torchvision"
DEFAULT_CUSTOM_SIZE = 227


# --- Architecture tab -----------------------------------------------------------------------------------


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


def architecture(model: str, custom_size: float | None, batch_norm: bool
                 ) -> tuple[str, str, gr.Dataframe, str, gr.Dataframe, str, Figure]:
    """Everything the Architecture tab shows: the variant's text, the 224 and 32 tables, the totals
    at the custom size (or why it does not fit), and the shape plot."""
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


def _architecture_tab(app: gr.Blocks) -> None:
    with gr.Tab("Architecture"):
        with gr.Row():
            model = gr.Dropdown(
                choices=[(f"{name} — {spec.title}", name) for name, spec in MODELS.items()],
                value=DEFAULT_MODEL, label="Model", scale=3,
            )
            batch_norm = gr.Checkbox(label="BatchNorm", value=False, scale=1)
            custom_size = gr.Number(value=DEFAULT_CUSTOM_SIZE, label="Custom size",
                                    precision=0, minimum=1, maximum=1024, scale=1)
        variant_text = gr.Markdown(label="Variant")
        with gr.Row(equal_height=False):
            tables = []
            for size in COMPARED_SIZES:
                with gr.Column():
                    tables += [
                        gr.Markdown(label=f"Totals at {size}"),
                        gr.Dataframe(headers=TABLE_COLUMNS, label=f"Layers at {size}", interactive=False,
                                     wrap=True),
                    ]
        custom_totals = gr.Markdown(label="Custom size totals")
        plot = gr.Plot(label="Shapes layer by layer")

    gr.on(
        triggers=[app.load, model.change, custom_size.change, batch_norm.change],
        fn=architecture,
        inputs=[model, custom_size, batch_norm],
        outputs=[variant_text, *tables, custom_totals, plot],
        api_name="summary",
    )


# --- The app ----------------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    # The first meta-device pass sets PyTorch's meta kernels up (about a second): pay that at start,
    # not on the first page load.
    summarize(DEFAULT_MODEL, get_spec(DEFAULT_MODEL).input_size)
    with gr.Blocks(title="AlexNet Studio") as app:
        gr.Markdown("# AlexNet Studio\nInspect, train and use AlexNet and its variants.")
        with gr.Tabs():
            _architecture_tab(app)
    return app


if __name__ == "__main__":
    build_app().queue().launch()
