"""The Predict and Evaluate tabs: their handlers called directly, the checkpoint lists, and /predict over HTTP."""

import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio.data_classes import FileData
from matplotlib.figure import Figure
from PIL import Image

import gradio_app
import ui.choices
import ui.evaluate
import ui.photos
import ui.predict
import ui.settings
import ui.train
from alexnet_core.evaluate import evaluate_checkpoint
from tests.helpers import ODD_FILES, class_image, make_image_folder

CLASSES = ["blue", "green", "red"]


@pytest.fixture(autouse=True)
def app_dirs(tmp_path, monkeypatch):
    """Nothing shipped and no runs, unless a test puts them there."""
    monkeypatch.setattr(ui.settings, "SHIPPED_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(ui.settings, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "cifar10.safetensors")
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "studio-runs")
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    monkeypatch.chdir(tmp_path)  # ./runs is listed too


def ship(checkpoint: Path, name: str = "cifar10.safetensors") -> Path:
    ui.settings.SHIPPED_DIR.mkdir(exist_ok=True)
    return Path(shutil.copyfile(checkpoint, ui.settings.SHIPPED_DIR / name))


def red_photo(size=40) -> Image.Image:
    return class_image(0, size, np.random.default_rng(5))


# --- Predict ---------------------------------------------------------------------------------------------


def test_only_the_image_is_needed_and_the_cifar10_checkpoint_is_the_default(tiny):
    shipped = ship(tiny[0])
    label, info, shown = ui.predict.predict_image(red_photo())
    bars, view = ui.predict.prediction_details(shown)
    assert set(label) == set(CLASSES) and sum(label.values()) == pytest.approx(1, abs=1e-5)
    assert list(bars["class"]) == sorted(label, key=label.get, reverse=True)
    assert bars["probability"].is_monotonic_decreasing and bars["probability"].sum() == pytest.approx(1, abs=1e-5)
    assert isinstance(view, Image.Image) and view.size == (224, 224)
    assert " ms on cpu" in info and "alexnet_cifar_small" in info and shipped.name in info
    assert ui.choices.default_checkpoint() == str(shipped)


@pytest.mark.parametrize("k, tta, shown", [(1, "none", 1), (2.0, "flip", 2), (10, "ten-crop", 3)])
def test_k_and_tta_reach_the_prediction(tiny, k, tta, shown):
    label, info, details = ui.predict.predict_image(red_photo(), str(tiny[0]), k, tta)
    bars, _ = ui.predict.prediction_details(details)
    assert len(label) == shown and len(bars) == 3  # the chart shows every class, the label the top k
    assert ui.predict.TTA_LABELS[tta] in info


def test_without_any_checkpoint_the_answer_is_a_sentence():
    assert ui.choices.default_checkpoint() is None
    label, info, shown = ui.predict.predict_image(red_photo())
    assert label is None and shown is None
    assert info.startswith("⚠️") and "no checkpoint yet" in info
    bars, view = ui.predict.prediction_details(shown)
    assert bars.empty and view is None


def test_without_the_cifar10_checkpoint_the_first_listed_one_is_used(tiny):
    run = ui.settings.RUNS_DIR / "my-run"
    run.mkdir(parents=True)
    shutil.copyfile(tiny[0], run / "best.safetensors")
    assert ui.choices.default_checkpoint() == str(run / "best.safetensors")
    label, *_ = ui.predict.predict_image(red_photo())
    assert set(label) == set(CLASSES)


def test_checkpoints_are_listed_shipped_first_then_runs_from_both_places(tiny):
    for folder in (ui.settings.RUNS_DIR / "app-run", Path.cwd() / "runs" / "cli-run"):
        folder.mkdir(parents=True)
        shutil.copyfile(tiny[0], folder / "best.safetensors")
    ship(tiny[0], "flowers.safetensors")
    paths = [Path(path) for _, path in ui.choices.checkpoint_choices()]
    assert paths[0].name == "flowers.safetensors" and len(paths) == 3
    assert {p.parent.name for p in paths[1:]} == {"app-run", "cli-run"}
    # the selection survives a refresh while its file exists; otherwise the default takes its place
    kept = ui.choices.refresh_checkpoints(str(paths[2]))
    assert kept.value == str(paths[2]) and len(kept.choices) == 3
    assert ui.choices.refresh_checkpoints("/gone.safetensors").value == str(paths[0])
    # Inside's list follows the same rule, its untrained variants included
    assert ui.choices.refresh_inside_choices("untrained:alexnet").value == "untrained:alexnet"
    assert ui.choices.refresh_inside_choices(str(paths[2])).value == str(paths[2])
    assert ui.choices.refresh_inside_choices("/gone.safetensors").value == str(paths[0])


def test_a_finished_training_run_appears_in_the_list(tiny):
    before = ui.choices.checkpoint_choices()
    message = ui.train.start_training(dict(model="alexnet_cifar_small", data=str(tiny[1]), device="cpu", epochs=1,
                                           batch_size=16, lr=0.02, batch_norm=False))
    assert message.startswith("Started")
    assert ui.train.RUNNER.wait(120) and ui.train.RUNNER.snapshot().status == "finished"
    after = ui.choices.refresh_checkpoints(None)
    assert len(after.choices) == len(before) + 1
    assert after.choices[0][1] == ui.train.RUNNER.snapshot().best_path


@pytest.mark.parametrize("name", ODD_FILES)
def test_any_image_a_browser_sends_gets_a_prediction(tiny, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ODD_FILES[name]())
    # The way the browser's upload reaches the handler: Gradio's own preprocessing, with the mode kept.
    image = ui.photos.photo_input().preprocess(FileData(path=str(path), orig_name=name))
    label, info, shown = ui.predict.predict_image(image, str(tiny[0]))
    assert label and set(label) <= set(CLASSES) and ui.predict.prediction_details(shown)[1] is not None, info


def test_gradio_keeps_the_image_mode_for_decode_image(tmp_path):
    path = tmp_path / "16bit.png"
    path.write_bytes(ODD_FILES["I16.png"]())
    image = ui.photos.photo_input().preprocess(FileData(path=str(path)))
    assert image.mode.startswith("I")  # not clipped to RGB by Gradio: decode_image scales it


def test_a_file_that_is_not_an_image_gets_one_sentence(tiny, tmp_path):
    upload = tmp_path / "gradio-cache" / "0123abcd" / "notes.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_text("shopping list: eggs")
    image = ui.photos.photo_input().preprocess(FileData(path=str(upload)))
    with pytest.raises(gr.Error) as refused:  # a toast on the page, AppError for the API
        ui.predict.predict_image(image, str(tiny[0]))
    info = refused.value.message
    assert info.startswith("notes.jpg is not an image that can be read") and "\n" not in info
    assert "gradio-cache" not in info  # the user's file name, not the server's temporary path


@pytest.mark.parametrize("args, words", [
    (dict(k=0), "whole number from 1 to 1000"), (dict(tta="five-crop"), "none, flip, ten-crop"),
    (dict(checkpoint="fake"), "not a complete safetensors file"),
    (dict(checkpoint="missing"), "no checkpoint file"),
])
def test_bad_settings_and_wrong_checkpoints_get_one_sentence(tiny, tmp_path, args, words):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a checkpoint")
    paths = {"fake": str(fake), "missing": str(tmp_path / "missing.safetensors")}
    args = {"checkpoint": str(tiny[0]), **args}
    args["checkpoint"] = paths.get(args["checkpoint"], args["checkpoint"])
    with pytest.raises(gr.Error) as refused:
        ui.predict.predict_image(red_photo(), **args)
    info = refused.value.message
    assert words in info and "\n" not in info


# --- Evaluate --------------------------------------------------------------------------------------------


def test_evaluate_shows_accuracy_per_class_confusion_and_confident_mistakes(tiny):
    checkpoint, folder = tiny
    summary, table, figure, gallery = ui.evaluate.evaluate_view(str(checkpoint), str(folder), "val", None)
    expected = evaluate_checkpoint(checkpoint, str(folder), "val")
    assert f"{expected.accuracy:.1%} correct" in summary and f"of {expected.n:,} images" in summary
    assert list(table["class"]) == CLASSES and table["images"].sum() == expected.n == 72
    assert table["correct"].sum() == round(expected.accuracy * expected.n)
    assert isinstance(figure, Figure)
    cells = [int(text.get_text().replace(",", "")) for text in figure.axes[0].texts]
    assert cells == expected.confusion().flatten().tolist()
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == CLASSES
    wrong = int((expected.predictions != expected.labels).sum())
    assert len(gallery) == min(wrong, ui.evaluate.MISTAKES_SHOWN)


def test_the_most_confidently_wrong_images_come_first_with_their_classes(tiny, tmp_path):
    # Folders named after the wrong colours: the red images sit in green/, and so on, so most answers are wrong.
    swapped = make_image_folder(tmp_path / "swapped", ["green", "blue", "red"], n_per_class=10, size=32,
                                splits=("train", "val"), seed=9)
    summary, table, _, gallery = ui.evaluate.evaluate_view(str(tiny[0]), str(swapped), "val", None)
    assert list(table["class"]) == CLASSES and len(gallery) == ui.evaluate.MISTAKES_SHOWN, summary
    confidences = []
    for image, caption in gallery:
        assert isinstance(image, Image.Image) and min(image.size) >= ui.evaluate.GALLERY_MIN_SIDE
        true, predicted = caption.removeprefix("true: ").split(" · predicted: ")
        name, percent = predicted.rsplit(" ", 1)
        assert true in CLASSES and name in CLASSES and true != name and percent.endswith("%")
        confidences.append(int(percent[:-1]))
    assert confidences == sorted(confidences, reverse=True)


def test_evaluate_a_limited_look(tiny):
    summary, table, _, _ = ui.evaluate.evaluate_view(str(tiny[0]), str(tiny[1]), "val", 10)
    assert "of 10 images" in summary and table["images"].sum() == 10


def test_evaluate_a_folder_holding_only_test_photos_measures_all_of_them(tiny, tmp_path):
    mine = make_image_folder(tmp_path / "mine", ["red", "blue"], n_per_class=6, size=32, splits=("test",))
    summary, table, _, _ = ui.evaluate.evaluate_view(str(tiny[0]), str(mine), "test", None)
    # The folder by its last parts: the page shows no server path (issue 24).
    assert "of 12 images measured (every image in mine/test (12))" in summary, summary
    assert sorted(table["class"]) == ["blue", "red"] and table["images"].sum() == 12


def test_evaluate_builtin_data_takes_gallery_images_from_the_decoded_split(tiny, monkeypatch):
    import torchvision

    class FakeCifar:  # torchvision's CIFAR10 without the download: the tiny checkpoint's three classes
        classes = CLASSES

        def __init__(self, root, train, download):
            rng = np.random.default_rng(int(train))
            self.data = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 3 for i in range(30)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    summary, table, _, gallery = ui.evaluate.evaluate_view(str(tiny[0]), "cifar10", "test", None)
    assert "of 30 images" in summary and gallery
    noise = FakeCifar(None, False, False).data
    shown = [np.asarray(image)[::4, ::4] for image, _ in gallery]  # 32 → 128 by repeating pixels
    assert all(any(np.array_equal(s, n) for n in noise) for s in shown)


@pytest.mark.parametrize("data, split, words", [
    ("other", "val", "are not the ones this checkpoint was trained on"),
    ("tiny", "test", "no test folder"),
    ("/no/such/folder", "test", "does not exist"),
])
def test_evaluate_problems_get_one_sentence(tiny, tmp_path, data, split, words):
    folders = {"tiny": str(tiny[1]),
               "other": str(make_image_folder(tmp_path / "other", ["cat", "dog"], n_per_class=2, size=32))}
    with pytest.raises(gr.Error) as refused:
        ui.evaluate.evaluate_view(str(tiny[0]), folders.get(data, data), split, None)
    summary = refused.value.message
    assert words in summary and "\n" not in summary


def test_evaluate_without_a_checkpoint_is_a_sentence():
    assert ui.evaluate.evaluate_view(None, "cifar10")[0].startswith("⚠️")


# --- The app -------------------------------------------------------------------------------------------


def test_the_app_serves_predict_and_evaluate_with_only_the_image_required(tiny, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    ship(tiny[0])
    app = gradio_app.build_app()
    api = app.get_api_info()["named_endpoints"]
    parameters = {p["parameter_name"]: p["parameter_has_default"] for p in api["/predict"]["parameters"]}
    assert parameters == {"image": False, "checkpoint": True, "k": True, "tta": True}
    assert "/evaluate" in api
    app.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        photo = tmp_path / "photo.png"
        red_photo().convert("RGBA").save(photo)
        label, info = client.predict(handle_file(str(photo)), api_name="/predict")  # the page's extras stay out
        assert label["label"] in CLASSES and len(label["confidences"]) == 3 and "ms on cpu" in info
        notes = tmp_path / "notes.jpg"
        notes.write_text("not a photo")
        with pytest.raises(AppError, match=r"^notes.jpg is not an image that can be read \(cannot identify"):
            client.predict(handle_file(str(notes)), api_name="/predict")
        # and it keeps serving
        assert client.predict(handle_file(str(photo)), api_name="/predict")[0]["label"] in CLASSES
    finally:
        app.close()


def test_confusion_plot_of_many_classes_stays_readable():
    from alexnet_core.evaluate import EvalResult
    from alexnet_core.plots import confusion_plot

    k = 100
    labels = torch.arange(k).repeat(2)
    result = EvalResult([f"c{i}" for i in range(k)], labels, labels.roll(1), torch.rand(2 * k), 1.0)
    figure = confusion_plot(result)
    axes = figure.axes[0]
    assert len(axes.texts) == 0 and "0.0% correct of 200 images" in axes.get_title()  # no numbers in 10,000 cells
    assert "c0" not in [label.get_text() for label in axes.get_xticklabels()]     # nor 100 names on an axis
