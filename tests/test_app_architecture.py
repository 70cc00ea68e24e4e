"""The Architecture tab: its handler called directly, and the app building."""

import gradio as gr
from matplotlib.figure import Figure

import gradio_app


def test_fitting_custom_size_gives_tables_totals_and_plot():
    variant, md224, table224, md32, table32, custom, plot = gradio_app.architecture(
        "alexnet_torchvision", 100, False)
    assert "torchvision's AlexNet" in variant and "One weird trick" in variant
    assert "61,100,840 parameters" in md224 and "714,682,664 MACs" in md224
    assert table224.visible is True
    rows = table224.value["data"]
    assert rows[0][0] == "conv1" and "= 55.25 → 55" in rows[0][-1]
    assert not any(row[1] in ("ReLU", "Dropout") for row in rows)  # hidden to keep the table short
    # 32 does not fit torchvision's net: the sentence replaces the table.
    assert "pool5" in md32 and "below 1x1" in md32 and table32.visible is False
    assert "Custom size 100×100" in custom and "162,719,272 MACs" in custom
    assert isinstance(plot, Figure) and "100×100" in plot.texts[0].get_text()


def test_non_fitting_custom_size_shows_the_sentence_and_plots_the_own_size():
    variant, md224, table224, md32, table32, custom, plot = gradio_app.architecture("alexnet", 224, True)
    assert "fc6 expects 9,216" in md224 and table224.visible is False
    assert "pool2" in md32 and table32.visible is False
    assert "fc6 expects 9,216" in custom and "227×227" in custom
    assert "227×227" in plot.texts[0].get_text()


def test_cifar_variant_fits_32_only():
    _, md224, table224, md32, table32, _, _ = gradio_app.architecture("alexnet_cifar", None, False)
    assert "fc6 expects 2,304" in md224 and table224.visible is False
    assert table32.visible is True and "6,616,714 parameters" in md32
    shapes = {row[0]: row[2] for row in table32.value["data"]}
    assert shapes["pool2"] == "[1, 256, 3, 3]"


def test_build_app_wires_the_summary_endpoint():
    app = gradio_app.build_app()
    assert isinstance(app, gr.Blocks)
    api_names = [dep.api_name for dep in app.fns.values()]
    assert "summary" in api_names
    labels = [getattr(block, "label", None) for block in app.blocks.values()]
    assert {"Model", "BatchNorm", "Custom size"} <= set(labels)
