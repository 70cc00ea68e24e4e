"""The Train tab's charts get typed frames from the first poll on (issue 19's screenshot of a run showed no curves:
an untyped empty frame made the chart's axes categories, and it keeps the types of its first value)."""

import gradio as gr

import ui.train


def test_the_training_charts_are_numeric_even_before_a_run():
    _, loss, accuracy, _ = ui.train.training_status()
    for frame, x, y in ((loss, "step", "loss"), (accuracy, "epoch", "accuracy")):
        types = gr.LinePlot(x=x, y=y, color="curve").postprocess(frame).model_dump()["datatypes"]
        assert types == {x: "quantitative", y: "quantitative", "curve": "nominal"}, types
