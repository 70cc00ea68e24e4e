"""The Inside tab's handler and the explain command, wired to alexnet_core.explain."""

import numpy as np
from PIL import Image


def test_cli_explain_writes_the_files(tmp_path):
    from alexnet_core.cli import main
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)
    assert main(["explain", "--model", "alexnet_cifar_small", str(photo), "--out", str(tmp_path / "out"),
                 "--target-class", "class 3"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["activations_conv1.png", "activations_conv2.png", "filters_conv1.png", "gradcam.png"]
    assert main(["explain", "--model", "alexnet_cifar_small", str(photo), "--out", str(tmp_path / "o2"),
                 "--target-class", "cow"]) == 2   # one sentence on stderr

def test_explain_photo_handler(tmp_path):
    import ui.architecture
    import ui.inside
    top, gradcam, filters, gallery, info = ui.inside.explain_photo(
        Image.new("RGB", (40, 30), "red"), "untrained:alexnet_cifar_hires", "class 2")
    assert len(top) == 5 and "class 2" in info and len(gallery) == 5
    assert gallery[2][1] == "conv3 · 384×8×8" and min(gradcam.size) >= 224
    assert ui.inside.explain_photo(None)[-1] == ui.inside.INSIDE_PROMPT


def test_architecture_links_a_layer_to_its_activations():
    import gradio as gr

    import ui.architecture
    import ui.inside
    assert ui.architecture.conv_layer_choices("alexnet_cifar_small").choices == [("conv1", "conv1"), ("conv2", "conv2")]
    tabs, checkpoint, image, layer = ui.inside.show_layer_inside(
        "alexnet_cifar_small", "conv2", None, Image.new("RGB", (32, 32), "blue"))
    assert tabs.selected == "inside" and layer == "conv2"
    assert checkpoint.value in ("untrained:alexnet_cifar_small",) or checkpoint.value.endswith(".safetensors")
    *_, gallery, info = ui.inside.explain_photo(image, checkpoint.value, ui.inside.PREDICTED, layer)
    assert isinstance(gallery, gr.Gallery) and gallery.selected_index == 1     # opened on conv2
