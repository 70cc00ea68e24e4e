"""The Architecture tab: its handler called directly, and the app building."""

import gradio as gr
from matplotlib.figure import Figure

import gradio_app
import ui.architecture


def test_fitting_custom_size_gives_tables_totals_and_plot():
    variant, md224, table224, md32, table32, custom, plot = ui.architecture.architecture(
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
    variant, md224, table224, md32, table32, custom, plot = ui.architecture.architecture("alexnet", 224, True)
    assert "fc6 expects 9,216" in md224 and table224.visible is False
    assert "pool2" in md32 and table32.visible is False
    assert "fc6 expects 9,216" in custom and "227×227" in custom
    assert "227×227" in plot.texts[0].get_text()


def test_cifar_variant_fits_32_only():
    _, md224, table224, md32, table32, _, _ = ui.architecture.architecture("alexnet_cifar", None, False)
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


def test_the_first_view_keeps_the_pages_promise_224_beside_32():
    # Issue 25: the page promises "its layers at 224 and at 32": torchvision's AlexNet at 224 beside the CIFAR-10
    # net at 32 (issue 19: each at its own size, both with tables); the paper's 227 is one choice away.
    assert ui.architecture.PAIR == ("alexnet_torchvision", "alexnet_cifar")
    large_heading, large_table, small_heading, small_table = ui.architecture.compare(*ui.architecture.PAIR)
    assert "at 224×224" in large_heading and "61,100,840 parameters" in large_heading
    assert "at 32×32" in small_heading and "6,616,714 parameters" in small_heading
    assert "<td class='name'>conv1</td><td class='shape'>64×55×55</td>" in large_table
    assert "(224 − 11 + 2·2) / 4 + 1 = 55.25 → 55" in large_table and "<td class='arith'>" in large_table
    assert ui.architecture.LARGE_MODELS[0] == "alexnet"  # the paper's AlexNet at 227: the list's first choice
    paper_heading, paper_table, *_ = ui.architecture.compare("alexnet", "alexnet_cifar")
    assert "at 227×227" in paper_heading and "(227 − 11 + 2·0) / 4 + 1 = 55" in paper_table
    assert "<td class='name'>pool2</td><td class='shape'>256×3×3</td>" in small_table
    assert "relu" not in large_table and "drop" not in small_table  # shape-preserving rows left out
    assert set(ui.architecture.SMALL_MODELS) >= {"alexnet_cifar", "alexnet_cifar_small", "alexnet_cifar_fast"}
    assert "alexnet" in ui.architecture.LARGE_MODELS and "alexnet_cifar" not in ui.architecture.LARGE_MODELS


def test_the_custom_size_starts_at_the_models_own_size():
    assert ui.architecture.DEFAULT_CUSTOM_SIZE == 224 == ui.architecture.own_size("alexnet_torchvision")
    assert ui.architecture.own_size("alexnet") == 227
    assert ui.architecture.own_size("alexnet_cifar_fast") == 32
    assert ui.architecture.own_size("alexnet_torchvision") == 224
