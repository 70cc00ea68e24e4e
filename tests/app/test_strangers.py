"""Issue 24, against a fresh app started as a Space starts it: work pays for its memory before it starts, every
event checks its caller's lists (by function index too), numbers that float32 cannot use are refused, number
fields refuse NaN, infinities and non-numbers by name, and messages name the visitor's file, never a server path
or an object's repr. A private server starts whatever is in its runs/ folder."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import warnings
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.helpers import (
    REPO,
    app_dependency,
    assert_one_sentence,
    call_by_index,
    class_image,
    client_owner,
    encoded,
    space_app,
)

SHIPPED = REPO / "checkpoints" / "cifar10.safetensors"
BUDGET = "1G"   # ALEXNET_STUDIO_MEMORY_BUDGET of the app under test: what this process may use


def forged(dest: Path, change=None, raw: str | None = None) -> Path:
    """The shipped CIFAR-10 checkpoint's tensors under its metadata changed by ``change`` (or ``raw`` JSON)."""
    with safe_open(str(SHIPPED), framework="pt") as f:
        header = dict(f.metadata())
    meta = json.loads(header["alexnet_studio"])
    if change is not None:
        change(meta)
    header["alexnet_studio"] = raw if raw is not None else json.dumps(meta)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(SHIPPED)), str(dest), metadata=header)
    return dest


def visitor_checkpoints(home: Path, owner: str) -> Path:
    """Where the app keeps a visitor's uploaded checkpoints (ui.visitors.visitor_folder)."""
    return home / "visitors" / hashlib.sha256(owner.encode()).hexdigest()[:24] / "checkpoints"


def peak_rss_bytes(home: Path) -> int:
    """The app process's peak resident memory so far (VmHWM)."""
    pid = (home / "app.pid").read_text()
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def app(tmp_path_factory, cifar10_dir):
    home = tmp_path_factory.mktemp("space")
    with space_app(home, ALEXNET_STUDIO_MEMORY_BUDGET=BUDGET) as (url, log):
        yield url, home


def test_evaluate_pays_for_its_memory_before_it_decodes_an_image(app, cifar10_dir):
    """Defect 2: a checkpoint whose preprocessing stores images at 2048x2048, evaluated on the shared CIFAR-10,
    took the server's memory and wrote a new 1 GB cache file per call. Now: one sentence that says how many images
    fit, before a pixel is decoded, nothing written, and the app's peak memory about what it was."""
    url, home = app
    client = Client(url, verbose=False)
    checkpoint = forged(visitor_checkpoints(home, client_owner(client)) / "huge-store.safetensors",
                        lambda meta: meta["preprocess"].update(store_size=2048))
    data = str(REPO.parent / "shared" / "data" / "cifar10")
    before = peak_rss_bytes(home)
    with pytest.raises(AppError) as refused:
        client.predict(str(checkpoint), data, "test", 40, "none", api_name="/evaluate")
    text = assert_one_sentence(refused.value, "40 images stored at 2048x2048", "at most", "images fit")
    assert "/" not in text, text
    grown = peak_rss_bytes(home) - before
    assert grown < 200 * 2**20, f"the refused evaluation grew the app's peak memory by {grown / 2**20:.0f} MiB"
    cache = home / "cache"
    assert not cache.is_dir() or not list(cache.glob("images-*")), list(cache.iterdir())
    # What fits still runs: the shipped checkpoint on 20 images.
    summary, *_ = client.predict(str(SHIPPED), data, "test", 20, "none", api_name="/evaluate")
    assert "20 images measured" in summary


def test_the_inside_class_list_checks_the_callers_list_even_by_function_index(app):
    """Defect 8 (first half): the Inside tab's class-list event has no api_name, but any client can call it by
    its function index; it returned the class names of any checkpoint path, another visitor's included."""
    url, home = app
    secret = forged(visitor_checkpoints(home, "someone-else") / "private.safetensors",
                    lambda meta: meta.update(classes=[f"secret-{i}" for i in range(10)]))
    index = app_dependency(url, output_label="Grad-CAM explains", input_label="Checkpoint")
    ok, outputs = call_by_index(url, index, [str(secret), None], secrets.token_hex(8))
    assert ok, outputs
    assert "secret-0" not in json.dumps(outputs), outputs
    # The caller's own list still gives its classes.
    ok, outputs = call_by_index(url, index, [str(SHIPPED), None], secrets.token_hex(8))
    assert ok and "airplane" in json.dumps(outputs), outputs


def _upload_checkpoint(url: str, path: Path, name: str) -> tuple[bool, object]:
    """Predict's "Upload a checkpoint" event (no api_name), called by its function index with a bare upload."""
    with path.open("rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": (name, f)}, timeout=60).json()[0]
    index = app_dependency(url, input_label="Checkpoint", input_type="file")
    payload = {"path": uploaded, "orig_name": name, "meta": {"_type": "gradio.FileData"}}
    # The page says a refused checkpoint in a warning toast and keeps the Checkpoint list as it was (issue 25).
    return call_by_index(url, index, [payload, None], secrets.token_hex(8), warning_refuses=True)


FLOAT32_UNUSABLE = {
    "std 1e-46": (lambda meta: meta["preprocess"].update(std=[1e-46] * 3), "preprocess.std has a value below"),
    "std 1e-300": (lambda meta: meta["preprocess"].update(std=[0.25, 1e-300, 0.25]), "preprocess.std has a value"),
    "mean 1e308": (lambda meta: meta["preprocess"].update(mean=[1e308] * 3), "preprocess.mean has a value"),
}


@pytest.mark.parametrize("case", FLOAT32_UNUSABLE)
def test_an_uploaded_checkpoint_whose_numbers_float32_cannot_use_is_refused(app, tmp_path, case):
    """Defect 10: numbers finite in JSON but not in float32 were accepted; every confidence was null."""
    url, _ = app
    change, words = FLOAT32_UNUSABLE[case]
    ok, message = _upload_checkpoint(url, forged(tmp_path / "f.safetensors", change), "mine.safetensors")
    assert not ok
    assert_one_sentence(message, "mine.safetensors", words)


def test_an_uploaded_checkpoint_with_a_huge_integer_gets_the_apps_sentence(app, tmp_path):
    """Defect 12 (second half): an integer of over 4,300 digits gave Python's own "Exceeds the limit"."""
    url, _ = app
    with safe_open(str(SHIPPED), framework="pt") as f:
        meta = f.metadata()["alexnet_studio"]
    ok, message = _upload_checkpoint(url, forged(tmp_path / "f.safetensors", raw=meta[:-1] + ', "epochs": '
                                                 + "9" * 5000 + "}"), "digits.safetensors")
    assert not ok
    text = assert_one_sentence(message, "digits.safetensors", "thousands of digits")
    assert "Exceeds" not in text and "sys." not in text, text


NOT_NUMBERS = ["nan", "inf", "-inf", "1e400", None, [1], {"a": 1}]


def test_number_fields_refuse_nan_infinities_and_non_numbers_naming_the_field(app):
    """Defect 12: "nan", "inf", "1e400" in a number field, and k sent as null, a list or an object, gave an error
    whose message was None."""
    url, _ = app
    client = Client(url, verbose=False)
    photo = handle_file(str(next(p for p in (REPO / "examples").iterdir() if p.suffix == ".jpg")))
    data = str(REPO.parent / "shared" / "data" / "cifar10")
    for value in NOT_NUMBERS:
        if value is not None:   # a blank Images field means every image, a blank custom size the variant's own
            with pytest.raises(AppError) as refused:
                client.predict(str(SHIPPED), data, "test", value, "none", api_name="/evaluate")
            assert_one_sentence(refused.value, "Images must be a number")
            with pytest.raises(AppError) as refused:
                client.predict("alexnet_cifar", value, False, api_name="/summary")
            assert_one_sentence(refused.value, "Custom size must be a number")
        with pytest.raises(AppError) as refused:
            client.predict(photo, str(SHIPPED), value, "none", api_name="/predict")
        assert_one_sentence(refused.value, "Top classes must be a number")
    train = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train"]["parameters"]
    defaults = {p["parameter_name"]: p.get("parameter_default") for p in train}
    labels = {p["parameter_name"]: p["label"] for p in train}
    for name in [n for n, label in labels.items() if label.split(" (")[0] in ("Epochs", "Batch size",
                                                                                "Images per split")]:
        for value in ("nan", "1e400"):
            with pytest.raises(AppError) as refused:
                client.predict(**{**defaults, name: value}, api_name="/train")
            assert_one_sentence(refused.value, f"{labels[name].split(' (')[0]} must be a number")


def test_messages_name_the_visitors_own_file_never_a_server_path_or_an_object(app, tmp_path):
    """Defect 11: "ImageFolder /…/shared/data/cifar10", "<_io.BytesIO object at 0x…>", "[Errno 17] File exists:
    '…/visitors/…'"."""
    url, home = app
    client = Client(url, verbose=False)
    data = str(REPO.parent / "shared" / "data" / "cifar10")
    summary, *_ = client.predict(str(SHIPPED), data, "test", 20, "none", api_name="/evaluate")
    assert "cifar10" in summary and str(REPO.parent) not in summary and "/shared/" not in summary, summary
    # Text sent as a photo in a data: URL: Pillow's reason names the in-memory file's repr.
    text_url = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    with pytest.raises(AppError) as refused:
        client.predict({"url": text_url, "meta": {"_type": "gradio.FileData"}}, str(SHIPPED), 5, "none",
                       api_name="/predict")
    text = assert_one_sentence(refused.value, "not an image")
    assert "0x" not in text and "object at" not in text and "BytesIO" not in text, text
    # A zip whose two members share a name: the second cannot be written ("File exists").
    zipped = io.BytesIO()
    png = encoded(class_image(0, 16, np.random.default_rng(0)), "PNG")
    with zipfile.ZipFile(zipped, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns of the duplicate name, which is the point
        for name in ("a/1.png", "b/1.png", "a/1.png"):
            archive.writestr(name, png)
    path = tmp_path / "twice.zip"
    path.write_bytes(zipped.getvalue())
    with path.open("rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": ("twice.zip", f)}, timeout=60).json()[0]
    index = app_dependency(url, input_label="Zip", input_type="file")
    ok, message = call_by_index(url, index, [{"path": uploaded, "orig_name": "twice.zip",
                                              "meta": {"_type": "gradio.FileData"}}, None], secrets.token_hex(8))
    assert not ok
    text = assert_one_sentence(message, "twice.zip")
    assert str(home) not in text and "/visitors/" not in text and "/" not in text.replace("a/1.png", ""), text


def test_a_private_server_starts_whatever_its_runs_folder_holds(tmp_path):
    """Defect 6: a checkpoint in runs/ whose metadata holds an integer of over 4,300 digits made list_checkpoints
    raise at start-up. Now the app starts, lists the good checkpoint, and logs one line for the other."""
    home = tmp_path / "home"
    with safe_open(str(SHIPPED), framework="pt") as f:
        meta = f.metadata()["alexnet_studio"]
    forged(home / "runs" / "digits" / "best.safetensors", raw=meta[:-1] + ', "epochs": ' + "9" * 5000 + "}")
    forged(home / "runs" / "good" / "best.safetensors")
    with space_app(home, SPACE_ID="") as (url, log):   # no SPACE_ID: a private server, which lists runs/
        client = Client(url, verbose=False)
        photo = handle_file(str(next(p for p in (REPO / "examples").iterdir() if p.suffix == ".jpg")))
        top, _ = client.predict(photo, str(home / "runs" / "good" / "best.safetensors"), 3, "none",
                                api_name="/predict")
        assert top["label"]
        lines = [line for line in log.read_text().splitlines() if "digits" in line]
        assert len(lines) == 1 and "Left out of the checkpoint lists" in lines[0], lines
