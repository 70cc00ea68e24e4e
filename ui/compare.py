"""The Compare tab: runs side by side, as TensorBoard overlays them (alexnet_core.compare). The visitor picks two
or more of their runs and the shipped checkpoints; their validation accuracy and loss share one chart, against
epoch or training time, above a table of best accuracies and the settings in which the runs differ.

Only checkpoints in the visitor's own list can be compared (``listed_checkpoint``), whatever a request names.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from alexnet_core.checkpoints import CheckpointError
from alexnet_core.compare import comparison_plot, record_of, table

from .choices import checkpoint_choices, listed_checkpoint
from .visitors import for_the_page, owner_of

X_CHOICES = [("epoch", "epoch"), ("training time", "time")]


def compare_runs(chosen: list[str] | None, x: str = "epoch", visitor: str | None = None,
                 request: gr.Request = None) -> tuple:
    """The chart (validation accuracy and loss, a line per run, the legend naming each) and the table for the
    chosen checkpoints; gr.Error with one sentence for fewer than two or one that is not the visitor's
    (listed_checkpoint says so)."""
    owner = owner_of(visitor, request)
    choices = checkpoint_choices(owner)
    labels = {path: label for label, path in choices}
    chosen = list(dict.fromkeys(chosen or []))
    if len(chosen) < 2:
        raise gr.Error("Pick two or more runs to compare.")
    records = []
    for choice in chosen:
        path = listed_checkpoint(choice, owner, choices)
        try:
            records.append(record_of(path, name=labels.get(path)))
        except (CheckpointError, ValueError) as error:
            raise gr.Error(for_the_page(str(error))) from None
    headers, rows = table(records)
    return comparison_plot(records, x if x in ("epoch", "time") else "epoch"), pd.DataFrame(rows, columns=headers)


def refresh(current: list[str] | None, visitor: str | None = None, request: gr.Request = None) -> gr.CheckboxGroup:
    """The visitor's list as it is now (a run may have finished), keeping what is still in it."""
    choices = checkpoint_choices(owner_of(visitor, request))
    paths = {path for _, path in choices}
    return gr.CheckboxGroup(choices=choices, value=[c for c in current or [] if c in paths])


def tab(app: gr.Blocks, visitor: gr.State) -> gr.CheckboxGroup:
    """The Compare tab's layout and events; returns its list of runs (set per visitor)."""
    with gr.Tab("Compare", id="compare") as page:
        gr.Markdown("Overlay runs to see which settings learn faster: your runs and the shipped checkpoints, each "
                    "from the history its checkpoint records.")
        choices = checkpoint_choices()
        runs = gr.CheckboxGroup(choices=choices, value=[path for _, path in choices[:2]], label="Runs",
                                elem_id="compare-runs")
        with gr.Row():
            x = gr.Radio(X_CHOICES, value="epoch", label="Against")
            go = gr.Button("Compare", variant="primary")
        # matplotlib, not gr.LinePlot: Gradio 6.31's line chart keeps the colours (and legend) of the first runs it
        # drew, and drops the data of an update that names colours (tried in Chromium).
        chart = gr.Plot(label="Validation accuracy and loss, a line per run", elem_classes=["mpl-figure"],
                        elem_id="compare-chart")
        differences = gr.Dataframe(label="Best accuracies and the settings that differ", interactive=False,
                                   wrap=True, elem_id="compare-table")
    page.select(refresh, inputs=[runs, visitor], outputs=runs, api_name=False)
    gr.on([go.click, x.change], compare_runs, inputs=[runs, x, visitor], outputs=[chart, differences],
          api_name="compare", trigger_mode="always_last")
    return runs
