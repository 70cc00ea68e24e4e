"""The app's API through the real client: gradio_client against the running app (the ``live_app`` fixture).

Every api_name is called over HTTP the way a user's script calls it, with real content checked (the layer
table's numbers, the class of a real photo, PNGs that exist and are not blank, a run that starts, reports,
stops and keeps its checkpoint); and the examples of docs/api.md are run as written, against this app.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from tests.helpers import class_image, client_owner

REPO = Path(__file__).resolve().parents[2]
ENDPOINTS = {"/summary", "/train", "/train_status", "/train_stop", "/predict", "/explain", "/evaluate", "/compare",
             "/train_own_classes"}
# Documented by a signature in docs/api.md; /train_own_classes's 22 inputs (ten names, ten photo lists) in words.
SIGNED = ENDPOINTS - {"/train_own_classes"}
ACTIVE = ("**Preparing", "**Running", "**Stopping")  # how /train_status's text starts while a run is going
DOC_URL = "http://127.0.0.1:7860/"
# Test images of the CIFAR-10 copy in ../shared/data that the shipped checkpoint gets right (the app's examples).
CIFAR_IMAGES = {"ship": "test/ship/0000.jpg", "cat": "test/cat/0000.jpg", "automobile": "test/automobile/0000.jpg"}
FLOWER_IMAGE = ("daisy", "val/daisy/10437929963_bc13eebe0c.jpg")


@pytest.fixture(scope="module")
def client(live_app, tmp_path_factory):
    """A gradio_client.Client on the live app; files it receives land in a temporary folder. The app's
    decoded-image caches go under the app's temporary home too, not the user's ~/.cache."""
    from gradio_client import Client

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALEXNET_STUDIO_HOME", str(live_app.home))
        client = Client(live_app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def idle_runner():
    """No training run is going before and after the test (the runner is shared by the session)."""
    from alexnet_core.runner import RUNNER

    def settle():
        RUNNER.stop_all()
        assert RUNNER.wait_all(120), "a training run did not end within 2 minutes of Stop"

    settle()
    yield RUNNER
    settle()


def _handle(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _photo(tmp_path: Path, label: int = 0, size: int = 48) -> Path:
    path = tmp_path / f"photo{label}.png"
    class_image(label, size, np.random.default_rng(label)).save(path)
    return path


def _rows(table: dict) -> list[list]:
    """The rows of a Dataframe output, whether the handler returned a value or a gr.Dataframe update."""
    value = table.get("value", table) if isinstance(table, dict) else None
    return (value or {}).get("data") or []


def _shared_choice(name: str) -> str:
    """The app's data choice for a folder of ../shared/data (the value its dropdowns accept)."""
    import ui.choices
    import ui.predict

    paths = [value for _, value in ui.choices.data_choices() if Path(value).name == name and Path(value).is_dir()]
    assert paths, f"the app does not list the shared {name} folder: {ui.choices.data_choices()}"
    return paths[0]


def _assert_real_png(path: str, min_side: int = 16) -> None:
    assert path and Path(path).is_file(), f"not a file: {path!r}"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side, image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 5, f"{path} is (nearly) one colour"


def _wait_status(client, until, timeout: float = 90.0) -> tuple[str, dict, dict, str | None]:
    """Polls /train_status until ``until(text, loss, accuracy)`` holds; fails with the last status otherwise.
    Returns the status, the plots and the best checkpoint (a file the client downloaded, once the run ended)."""
    deadline = time.monotonic() + timeout
    while True:
        text, loss, accuracy, best = client.predict(api_name="/train_status")
        if until(text, loss, accuracy):
            return text, loss, accuracy, best
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s; /train_status still says: {text!r}"
        time.sleep(0.2)


# --- the endpoints ---------------------------------------------------------------------------------------


def test_the_api_lists_every_endpoint_and_predict_needs_only_the_image(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == ENDPOINTS
    predict = {p["parameter_name"]: p for p in api["/predict"]["parameters"]}
    assert list(predict) == ["image", "checkpoint", "k", "tta"]
    assert [name for name, p in predict.items() if not p["parameter_has_default"]] == ["image"]
    assert predict["checkpoint"]["parameter_default"] == str(REPO / "checkpoints" / "cifar10.safetensors")
    assert (predict["k"]["parameter_default"], predict["tta"]["parameter_default"]) == (5, "none")
    assert api["/train_status"]["parameters"] == api["/train_stop"]["parameters"] == []


def test_summary_gives_conv1s_55x55_maps_and_the_parameter_count(client):
    variant, totals_224, layers_224, totals_32, layers_32, custom, plot = client.predict(
        "alexnet_torchvision", 224, "off", api_name="/summary")
    assert "torchvision" in variant
    assert "61,100,840 parameters" in totals_224
    rows = {row[0]: row for row in _rows(layers_224)}
    assert rows["conv1"][1:4] == ["Conv2d", "[1, 64, 55, 55]", "23,296"]
    assert rows["conv1"][6].endswith("= 55.25 → 55")
    assert list(rows.values())[-1][2] == "[1, 1000]"
    assert "ReLU" not in {row[1] for row in rows.values()}
    assert "Custom size 224×224" in custom and "61,100,840 parameters" in custom
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    # 32x32 is below the 63x63 torchvision's net needs: no rows, and the sentence that says why.
    assert "⚠️ alexnet_torchvision cannot take 32x32 inputs" in totals_32 and not _rows(layers_32)
    assert layers_32["visible"] is False
    _, totals_224, layers_224, totals_32, _, custom, _ = client.predict(model="alexnet", custom_size=227,
                                                                   api_name="/summary")
    assert "⚠️ alexnet cannot take 224x224 inputs" in totals_224 and "use 227" in totals_224
    assert not _rows(layers_224) and "⚠️" in totals_32
    assert "Custom size 227×227" in custom and "62,378,344 parameters" in custom


def _drawn(rows: list[list]) -> list[list]:
    """A chart's rows with a value. A curve with no value yet has one empty row at x 0 (NaN, which JSON sends as
    null), so that the chart knows every curve from its first frame (ui/train.py, _curves_frame)."""
    empty = [row for row in rows if row[1] is None]
    assert all(row[0] == 0 for row in empty), empty
    return [row for row in rows if row[1] is not None]


def test_train_streams_its_run_stops_on_train_stop_and_hands_over_its_checkpoint(client, live_app, idle_runner):
    from alexnet_core.checkpoints import read_metadata
    from alexnet_core.runner import RUNNER

    settings = dict(model="alexnet_cifar_small", data=str(live_app.tiny_data), device="cpu", limit=16,
                    epochs=500, batch_size=8)
    job = client.submit(settings=settings, api_name="/train")  # streams (status, loss, accuracy, checkpoint) to the end
    text, loss, _, best = _wait_status(client, lambda text, loss, acc: text.startswith("**Running")
                                       and _drawn(loss["data"]))  # a step's loss, not only the empty rows
    step, total = (int(n.replace(",", "")) for n in re.search(r"Step ([\d,]+) / ([\d,]+)", text).groups())
    assert 1 <= step < total == 500 * 2, text         # 16 images, batches of 8: two steps an epoch
    assert loss["columns"] == ["step", "loss", "curve"]
    assert {curve for _, _, curve in loss["data"]} == {"train (per step)", "validation"}
    assert all(value > 0 for _, value, _ in _drawn(loss["data"])) and _drawn(loss["data"])
    assert best is None                                # no checkpoint to download while the run goes on
    assert RUNNER.snapshot(client_owner(client)).active

    assert client.predict(api_name="/train_stop") == "Stopping after this step…"
    text, loss, accuracy, best = _wait_status(client, lambda text, loss, acc: not text.startswith(ACTIVE))
    assert text.startswith("**Stopped**"), text
    assert str(live_app.home) not in text              # the run's name, not a server path
    on_server = Path(RUNNER.snapshot(client_owner(client)).best_path)
    assert on_server.is_relative_to(live_app.home / "visitors") and (on_server.parent / "last.safetensors").is_file()
    assert f"`{on_server.parent.name}`" in text
    # The best checkpoint came down to the client, byte for byte, named after its run.
    assert Path(best).is_file() and Path(best).read_bytes() == on_server.read_bytes()
    assert Path(best).name == f"{on_server.parent.name}-best.safetensors"
    meta = read_metadata(best)
    assert meta["model"] == "alexnet_cifar_small" and meta["classes"] == ["green", "red"]
    assert accuracy["columns"] == ["epoch", "accuracy", "curve"]
    assert {curve for _, _, curve in accuracy["data"]} == {"train", "validation"}
    assert all(0 <= value <= 1 for _, value, _ in _drawn(accuracy["data"]))
    assert job.outputs() and job.outputs()[0][0].startswith("**")   # what the stream had sent
    assert client.predict(api_name="/train_stop") == "No run of yours is going."


def test_two_api_clients_are_two_visitors_each_with_their_own_run(client, live_app, idle_runner):
    """B neither sees nor stops A's run; B's /train waits in the training queue until A's run has ended."""
    from gradio_client import Client
    from gradio_client.utils import Status

    from alexnet_core.runner import RUNNER

    a, b = client, Client(live_app.url, verbose=False)
    try:
        settings = dict(model="alexnet_cifar_small", data=str(live_app.tiny_data), device="cpu", limit=16,
                        batch_size=8)
        job_a = a.submit(settings={**settings, "epochs": 500}, api_name="/train")
        _wait_status(a, lambda text, loss, acc: text.startswith("**Running"))
        assert b.predict(api_name="/train_status")[0].startswith("No run yet")
        assert b.predict(api_name="/train_stop") == "No run of yours is going."
        assert RUNNER.snapshot(client_owner(a)).status == "running"
        job_b = b.submit(settings={**settings, "epochs": 1}, api_name="/train")
        deadline = time.monotonic() + 30
        while job_b.status().code != Status.IN_QUEUE:
            assert time.monotonic() < deadline, job_b.status()
            time.sleep(0.1)
        assert job_b.status().rank == 0 and not RUNNER.snapshot(client_owner(b)).active  # first in line, waiting
        assert a.predict(api_name="/train_stop") == "Stopping after this step…"
        text = job_b.result(timeout=120)[0]            # B's run starts once A's has ended, and finishes
        assert text.startswith("**Finished**"), text
        assert RUNNER.snapshot(client_owner(a)).status == "stopped"
        # Each lists their own run's checkpoint, not the other's.
        own_b = RUNNER.snapshot(client_owner(b)).best_path
        assert own_b in _endpoint_checkpoints(live_app, b) and own_b not in _endpoint_checkpoints(live_app, a)
        job_a.cancel()
    finally:
        b.close()


def _endpoint_checkpoints(live_app, client) -> list[str]:
    import ui.choices
    import ui.predict

    return [path for _, path in ui.choices.checkpoint_choices(client_owner(client))]


def test_train_refuses_settings_outside_their_range_before_starting(client, live_app, idle_runner):
    tiny = dict(model="alexnet_cifar_small", data=str(live_app.tiny_data), limit=16)
    with pytest.raises(AppError, match="Learning rate must be a number above 0"):
        client.predict(settings={**tiny, "lr": -0.1}, api_name="/train")
    with pytest.raises(AppError, match="not in the list of choices"):     # only the caller's Data list
        client.predict(settings={**tiny, "data": "/etc"}, api_name="/train")
    with pytest.raises(AppError, match="names a folder on the server"):   # the run folders are the app's
        client.predict(settings={**tiny, "out": "/tmp/x"}, api_name="/train")
    with pytest.raises(AppError, match="There is no setting 'learning_rate'"):
        client.predict(settings={**tiny, "learning_rate": 0.1}, api_name="/train")
    assert idle_runner.snapshot().status in ("idle", "finished", "stopped", "failed")


def test_predict_runs_without_shared_data_and_says_what_is_not_an_image(client, tmp_path):
    from alexnet_core.data import CIFAR10_CLASSES

    top, info = client.predict(_handle(_photo(tmp_path)), k=3, api_name="/predict")
    confidences = [c["confidence"] for c in top["confidences"]]
    assert [c["label"] for c in top["confidences"]][0] == top["label"] and top["label"] in CIFAR10_CLASSES
    assert len(confidences) == 3 and confidences == sorted(confidences, reverse=True) and sum(confidences) <= 1
    assert "cifar10.safetensors" in info and "no test-time augmentation" in info

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(AppError) as refused:  # a refused input fails the call, with the page's sentence
        client.predict(_handle(bad), api_name="/predict")
    assert str(refused.value).startswith("notes.png is not an image that can be read (cannot identify image file")


@pytest.mark.shared_data
@pytest.mark.parametrize("label", list(CIFAR_IMAGES))
def test_predict_with_only_the_image_classifies_a_cifar10_photo(client, cifar10_dir, label):
    top, info = client.predict(_handle(cifar10_dir / CIFAR_IMAGES[label]), api_name="/predict")
    assert top["label"] == label, top
    assert len(top["confidences"]) == 5 and top["confidences"][0]["confidence"] > 0.4
    assert "alexnet_cifar_fast from `cifar10.safetensors`" in info and " ms on cpu" in info


@pytest.mark.shared_data
def test_predict_with_the_flowers_checkpoint_k_and_ten_crops(client, flowers_dir):
    label, image = FLOWER_IMAGE
    flowers = str(REPO / "checkpoints" / "flowers.safetensors")
    top, info = client.predict(_handle(flowers_dir / image), checkpoint=flowers, k=3, tta="ten-crop",
                               api_name="/predict")
    assert top["label"] == label and len(top["confidences"]) == 3, top
    assert "ten crops" in info and "flowers.safetensors" in info


@pytest.mark.shared_data
def test_explain_returns_gradcam_filters_and_layer_images_that_are_not_blank(client, cifar10_dir):
    top, gradcam, filters, layers, info = client.predict(_handle(cifar10_dir / CIFAR_IMAGES["ship"]),
                                                         api_name="/explain")
    assert top["label"] == "ship" and len(top["confidences"]) == 5
    assert info.startswith("Grad-CAM explains **ship**")
    _assert_real_png(gradcam, min_side=32)
    _assert_real_png(filters, min_side=32)
    assert [layer["caption"].split(" · ")[0] for layer in layers] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for layer in layers:
        _assert_real_png(layer["image"])


def test_explain_an_untrained_variant_and_a_file_that_is_not_an_image(client, tmp_path):
    top, gradcam, filters, layers, info = client.predict(
        _handle(_photo(tmp_path, 2)), checkpoint="untrained:alexnet_cifar_small", api_name="/explain")
    assert len(top["confidences"]) == 5 and "alexnet_cifar_small" in info
    _assert_real_png(gradcam)
    _assert_real_png(filters)
    assert len(layers) == 2  # the small net has two convs
    for layer in layers:
        assert Path(layer["image"]).is_file()

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(AppError, match=r"^notes.png is not an image that can be read"):
        client.predict(_handle(bad), api_name="/explain")


@pytest.mark.shared_data
def test_evaluate_on_twenty_cifar10_test_images(client, cifar10_dir):
    summary, per_class, confusion, mistakes = client.predict(data=_shared_choice("cifar10"), limit=20,
                                                             api_name="/evaluate")
    correct, total = map(int, re.search(r"(\d+) of (\d+) images measured \(the test split", summary).groups())
    assert total == 20 and correct >= 12, summary      # the checkpoint gets about 89% of the test split
    accuracy = float(re.search(r"### ([\d.]+)% correct", summary).group(1))
    assert accuracy == pytest.approx(100 * correct / total, abs=0.05)
    rows = per_class["data"]
    assert per_class["headers"] == ["class", "accuracy", "correct", "images"]
    assert sum(row[3] for row in rows) == 20 and sum(row[2] for row in rows) == correct
    assert confusion["type"] == "matplotlib" and confusion["plot"].startswith("data:image/")
    assert len(mistakes) == min(12, total - correct)
    for mistake in mistakes:
        true, predicted = re.match(r"true: (\w+) · predicted: (\w+) \d+%", mistake["caption"]).groups()
        assert true != predicted
        assert Path(mistake["image"]).is_file()


def test_evaluate_says_when_the_data_is_not_the_checkpoints(client, live_app):
    with pytest.raises(AppError) as refused:
        client.predict(data=str(live_app.tiny_data), split="val", limit=10, api_name="/evaluate")
    assert str(refused.value).startswith("The data's classes (green, red") and "airplane" in str(refused.value)


# --- checkpoints trained since start, classes named by the caller, paths nobody listed ----------------------


def test_a_checkpoint_made_after_the_app_started_can_be_used_by_predict(client, live_app, tmp_path):
    # Checked against the caller's list when the call comes, not against the list the app started with.
    new = live_app.home / "runs" / "copied-after-start" / "best.safetensors"
    new.parent.mkdir(parents=True)
    shutil.copyfile(REPO / "checkpoints" / "cifar10.safetensors", new)
    try:
        top, info = client.predict(_handle(_photo(tmp_path)), checkpoint=str(new), api_name="/predict")
        assert top["confidences"] and "best.safetensors" in info
        *_, info = client.predict(_handle(_photo(tmp_path)), checkpoint=str(new), api_name="/explain")
        assert info.startswith("Grad-CAM explains")
    finally:
        shutil.rmtree(new.parent)


def test_a_checkpoint_trained_through_the_api_downloads_and_predicts_for_whoever_uploads_it(client, live_app,
                                                                                           tmp_path, idle_runner):
    """A trains and downloads their best checkpoint; another visitor, who cannot use A's run, uploads the file
    and predicts with it; a file that is not a checkpoint gets one sentence."""
    import gradio as gr

    import ui.choices
    import ui.predict
    from alexnet_core.checkpoints import read_metadata

    settings = dict(recipe="paper", model="alexnet_cifar_small", data=str(live_app.tiny_data), device="cpu",
                    limit=16, epochs=1, batch_size=8)
    *_, best = client.predict(settings=settings, api_name="/train")
    assert Path(best).is_file() and Path(best).name.endswith("-best.safetensors")
    trained = read_metadata(best)["config"]   # the recipe's settings, the ones given over them, as --recipe does
    assert (trained["nesterov"], trained["pca_lighting"], trained["schedule"], trained["batch_size"]) == \
        (False, 0.1, "plateau", 8)
    other = "d" * 32
    on_server = next(p for _, p in ui.choices.checkpoint_choices(client_owner(client)) if "visitors" in p)
    with pytest.raises(gr.Error, match="not in the list of choices"):
        ui.predict.predict_image(str(_photo(tmp_path)), on_server, visitor=other)
    uploaded = ui.predict.upload_checkpoint(best, visitor=other)
    assert uploaded.value in [p for _, p in uploaded.choices] and "visitors" in uploaded.value
    label, info, _ = ui.predict.predict_image(str(_photo(tmp_path)), uploaded.value, visitor=other)
    assert set(label) == {"green", "red"} and "alexnet_cifar_small" in info
    # and the file is only theirs
    assert uploaded.value not in [p for _, p in ui.choices.checkpoint_choices("e" * 32)]
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not a checkpoint")
    with pytest.raises(gr.Error) as refused:
        ui.predict.upload_checkpoint(str(notes), visitor=other)
    assert refused.value.message.startswith("notes.safetensors is not a checkpoint AlexNet Studio can use")
    assert str(tmp_path) not in refused.value.message


def test_explain_can_explain_a_class_the_caller_names(client, tmp_path):
    *_, info = client.predict(_handle(_photo(tmp_path)), target="cat", api_name="/explain")
    assert info.startswith("Grad-CAM explains **cat**")
    with pytest.raises(AppError, match="'unicorn' is neither one of the model's classes"):
        client.predict(_handle(_photo(tmp_path)), target="unicorn", api_name="/explain")



# --- the API reference, docs/api.md --------------------------------------------------------------------


def _api_doc() -> str:
    """docs/api.md below its title (the API reference moved there from the README)."""
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    title, _, body = text.partition("\n")
    assert title.startswith("# ") and "## `/predict`" in body, "docs/api.md has lost its endpoints"
    return body


def test_the_api_doc_documents_every_endpoint_with_the_apps_inputs_and_defaults(client):
    section = " ".join(_api_doc().split())
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    signatures = dict(re.findall(r"`(\w+)\(([^`]*)\)` →", section))
    assert {f"/{name}" for name in signatures} == SIGNED
    for name, inner in signatures.items():
        documented = re.findall(r'(\w+)(?:=(<[^>]*>|"[^"]*"|[-\w.]+))?\s*(?:,|$)', inner.strip())
        params = api[f"/{name}"]["parameters"]
        assert [p for p, _ in documented] == [p["parameter_name"] for p in params], name
        for (param, default), spec in zip(documented, params):
            assert bool(default) == spec["parameter_has_default"], (name, param)
            if default and not default.startswith("<"):
                assert ast.literal_eval(default) == spec["parameter_default"], (name, param, default)
    assert "predict(image, checkpoint=<checkpoints/cifar10.safetensors>, k=5, tta=\"none\")" in section


@pytest.mark.shared_data
def test_the_api_doc_examples_run_against_the_app(live_app, client, cifar10_dir, idle_runner):
    """Runs the section's python blocks in order, in one namespace, as a reader would paste them: only the
    address, the photo, and the data and sizes (CIFAR-10 is a download; here the tiny and shared folders) change."""
    section = _api_doc()
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 6
    photo = str(cifar10_dir / CIFAR_IMAGES["ship"])
    replacements = [
        (DOC_URL, live_app.url),
        ('"photo.jpg"', repr(photo)),
        ('"data": "cifar10", "limit": 2000, "epochs": 2, "batch_size": 64',
         f'"data": {str(live_app.tiny_data)!r}, "limit": 16, "epochs": 2, "batch_size": 8'),
        ("time.sleep(5)", "time.sleep(0.2)"),
        ('data="cifar10", split="test", limit=200', f'data={_shared_choice("cifar10")!r}, split="test", limit=20'),
    ]
    code = "\n".join(blocks)
    for old, new in replacements:
        assert old in code, f"docs/api.md's examples no longer contain {old!r}: update this test"
        code = code.replace(old, new)
    namespace: dict = {"__name__": "readme_api"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/api.md", "exec"), namespace)
    out = printed.getvalue()
    assert "61,100,840 parameters" in out and "'conv1', 'Conv2d', '[1, 64, 55, 55]'" in out
    assert "⚠️ alexnet cannot take 224x224 inputs" in out
    assert "**Finished**" in out and "No run of yours is going." in out
    assert namespace["status"].startswith("**Finished**"), namespace["status"]
    assert Path(namespace["checkpoint"]).is_file() and namespace["checkpoint"].endswith("-best.safetensors")
    assert "ship [('ship'," in out
    assert "Grad-CAM explains **ship**" in out
    assert re.search(r"### [\d.]+% correct", out)
    namespace["client"].close()
