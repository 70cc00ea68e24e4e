"""Hardening, paths and uploads: an uploaded zip never writes outside its folder and never fills the disk, and the
live app reads no path a caller makes up (its checkpoints and data come only from its own lists, its files only
from Gradio's upload cache)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ui.choices
import ui.settings
import ui.train
import ui.visitors
from alexnet_core import uploads
from alexnet_core.caps import SharingLimits
from alexnet_core.uploads import MAX_ZIP_BYTES, UploadError, extract_zip
from tests.helpers import assert_one_sentence, class_image


def png_bytes(label: int = 0) -> bytes:
    buffer = io.BytesIO()
    class_image(label, 16, np.random.default_rng(label)).save(buffer, "PNG")
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return path


def good_members() -> dict[str, bytes]:
    return {f"colours/train/{c}/{i}.png": png_bytes(label) for label, c in enumerate(["red", "green"])
            for i in range(3)}


def nothing_escaped(tmp_path: Path) -> None:
    """No file named evil anywhere under the test's folder or at the absolute paths tried, no unpacked folder."""
    assert not list(tmp_path.rglob("*evil*")), list(tmp_path.rglob("*evil*"))
    assert not Path("/tmp/evil.png").exists()
    assert not (tmp_path / "out").exists()


def refused(zip_path: Path, dest: Path, *words: str, **caps) -> str:
    with pytest.raises(UploadError) as error:
        extract_zip(zip_path, dest, **caps)
    assert_one_sentence(str(error.value), *words)
    return str(error.value)


# --- what unpacks -----------------------------------------------------------------------------------------


def test_a_good_zip_unpacks_to_its_one_top_folder_without_mac_litter(tmp_path):
    members = good_members() | {"__MACOSX/colours/._x.png": b"junk", "colours/.DS_Store": b"junk"}
    root = extract_zip(make_zip(tmp_path / "up.zip", members), tmp_path / "out")
    assert root == tmp_path / "out" / "colours"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(name.split("/", 1)[1] for name in good_members())
    assert not (tmp_path / "out" / "__MACOSX").exists()


# --- zip-slip and links -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "../evil.png", "colours/../../evil.png", "/tmp/evil.png", "C:/evil.png", "..\\evil.png",
    "colours\\..\\..\\evil.png", "c:evil.png", "colours/train/red/\x1b[2Jevil.png",
])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, name):
    path = make_zip(tmp_path / "up.zip", good_members() | {name: b"owned"})
    refused(path, tmp_path / "out", "control characters" if "\x1b" in name else "outside")
    nothing_escaped(tmp_path)


def test_symbolic_links_in_the_zip_are_refused(tmp_path):
    path = tmp_path / "up.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in good_members().items():
            archive.writestr(name, content)
        link = zipfile.ZipInfo("colours/train/red/evil.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    refused(path, tmp_path / "out", "symbolic link")
    nothing_escaped(tmp_path)


# --- bombs and caps ------------------------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_by_its_compression_ratio_before_a_byte_is_written(tmp_path):
    path = make_zip(tmp_path / "up.zip", good_members() | {"colours/train/red/evil.png": bytes(30 << 20)})
    assert path.stat().st_size < 1 << 20  # 30 MiB of zeros packs into a few dozen KiB
    refused(path, tmp_path / "out", "zip bomb")
    nothing_escaped(tmp_path)


def test_the_file_count_and_unpacked_size_caps(tmp_path):
    path = make_zip(tmp_path / "up.zip", good_members(), compression=zipfile.ZIP_STORED)
    refused(path, tmp_path / "out", "6 entries", "at most 5", max_files=5)
    refused(path, tmp_path / "out", "at most", "MiB", max_total_bytes=len(png_bytes()) * 2)
    nothing_escaped(tmp_path)
    assert uploads.MAX_FILES == 50_000 and uploads.MAX_TOTAL_BYTES == 2 << 30  # the caps docs/security.md states


def test_an_upload_over_the_size_cap_is_refused_before_it_is_opened(tmp_path):
    huge = tmp_path / "huge.zip"
    with open(huge, "wb") as f:  # sparse: takes no disk
        f.truncate(MAX_ZIP_BYTES + 1)
    refused(huge, tmp_path / "out", "1,024 MiB")
    refused(tmp_path / "gone.zip", tmp_path / "out", "upload the zip again")
    nothing_escaped(tmp_path)


def _patch_member_header(path: Path, name: str, *, flags: int | None = None, method: int | None = None,
                         size: int | None = None) -> None:
    """Rewrites one member's fields in both its local header and the central directory."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, flag_at, method_at, size_at, name_len_at, name_at in (
            (b"PK\x03\x04", 6, 8, 22, 26, 30), (b"PK\x01\x02", 8, 10, 24, 28, 46)):
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            length = int.from_bytes(raw[start + name_len_at:start + name_len_at + 2], "little")
            if raw[start + name_at:start + name_at + length] == encoded:
                if flags is not None:
                    raw[start + flag_at:start + flag_at + 2] = flags.to_bytes(2, "little")
                if method is not None:
                    raw[start + method_at:start + method_at + 2] = method.to_bytes(2, "little")
                if size is not None:
                    raw[start + size_at:start + size_at + 4] = size.to_bytes(4, "little")
            start += 4
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, words", [
    (dict(size=10), "could not be unpacked"),               # a header that lies about the size
    (dict(flags=1), "could not be unpacked"),               # encrypted: zipfile asks for a password
    (dict(method=99), "could not be unpacked"),             # a compression method zipfile cannot read
])
def test_damaged_encrypted_or_lying_members_get_one_sentence_and_leave_nothing(tmp_path, damage, words):
    members = good_members()
    victim = "colours/train/green/2.png"
    members[victim] = os.urandom(4000)  # incompressible, so that the sizes stay under the bomb ratio
    path = make_zip(tmp_path / "up.zip", members)
    _patch_member_header(path, victim, **damage)
    refused(path, tmp_path / "out", words)
    nothing_escaped(tmp_path)


def test_names_the_disk_refuses_and_clashing_names_get_one_sentence(tmp_path):
    long_name = make_zip(tmp_path / "long.zip", good_members() | {"colours/train/red/" + "x" * 300 + ".png": b"1"})
    refused(long_name, tmp_path / "out", "could not be unpacked")
    clash = make_zip(tmp_path / "clash.zip", good_members() | {"colours/train/red/0.png/inner.png": b"1"})
    refused(clash, tmp_path / "out", "could not be unpacked")
    nothing_escaped(tmp_path)
    (tmp_path / "out").mkdir()
    refused(make_zip(tmp_path / "good.zip", good_members()), tmp_path / "out", "exists already")


# --- the app ---------------------------------------------------------------------------------------------


def _refused_upload(zip_path: Path, visitor: str | None = None) -> str:
    import gradio as gr

    with pytest.raises(gr.Error) as error:  # a toast on the page
        ui.train.upload_dataset(str(zip_path), visitor)
    assert_one_sentence(error.value.message, zip_path.name)  # named as the user named it, no server path
    assert str(zip_path.parent) not in error.value.message
    return error.value.message


def test_the_upload_handler_says_why_and_writes_nothing_outside_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    before = ui.choices.data_choices()
    slip = make_zip(tmp_path / "slip.zip", good_members() | {"../../evil.png": b"owned"})
    assert "outside" in _refused_upload(slip)
    bomb = make_zip(tmp_path / "bomb.zip", good_members() | {"colours/train/red/evil.png": bytes(30 << 20)})
    assert "zip bomb" in _refused_upload(bomb)
    assert ui.choices.data_choices() == before
    assert not list(tmp_path.rglob("evil*"))
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


@pytest.fixture
def visitors(tmp_path, monkeypatch):
    monkeypatch.setattr(ui.settings, "UPLOADS_DIR", tmp_path / "uploads")
    monkeypatch.setattr(ui.settings, "VISITORS_DIR", tmp_path / "visitors")
    monkeypatch.setattr(ui.settings, "RUNS_DIR", tmp_path / "runs")
    return tmp_path / "visitors"


def zip_r(folder: Path, zip_path: Path) -> Path:
    """What `cd parent && zip -r flowers.zip flowers/` makes: directory entries too, everything under one folder."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted([folder, *folder.rglob("*")]):
            name = path.relative_to(folder.parent).as_posix() + ("/" if path.is_dir() else "")
            archive.write(path, name)
    return zip_path


def test_a_zip_r_zip_of_class_folders_in_one_top_folder_is_selected_listed_and_trains(tmp_path, visitors):
    from alexnet_core.runner import RUNNER
    from tests.helpers import make_image_folder

    visitor, other = "a" * 32, "b" * 32
    flowers = make_image_folder(tmp_path / "src" / "flowers", ["daisy", "tulip"], n_per_class=8, size=32, splits=None)
    (flowers / "daisy" / "broken.jpg").write_bytes(b"not a photo")
    train_data, evaluate_data, note = ui.train.upload_dataset(str(zip_r(flowers, tmp_path / "flowers.zip")), visitor)
    root = train_data.value
    assert Path(root).name == "flowers" and "2 classes: daisy, tulip" in note
    # The value is one of the choices (the Data box does not go blank), in Train and in Evaluate, after a reload
    # too (the lists are built again from the visitor's folder) and for that visitor only.
    assert root in [v for _, v in train_data.choices] and evaluate_data.value == root
    assert root in [v for _, v in ui.choices.data_choices(visitor)]
    assert root not in [v for _, v in ui.choices.data_choices(other)]
    assert not (Path(root) / "daisy" / "broken.jpg").exists()  # checked whole: the unreadable file is left out
    assert ui.train.start_training(dict(model="alexnet_cifar_small", data=root, device="cpu", epochs=1, batch_size=8,
                                        lr=0.02, weight_decay=0.0, schedule="constant", batch_norm=False),
                                   visitor=visitor).startswith("Started")
    assert RUNNER.wait(120, visitor) and RUNNER.snapshot(visitor).status == "finished", RUNNER.snapshot(visitor).message


@pytest.mark.parametrize("members, words", [
    (None, "in no class folder"),                                              # an empty zip
    ({"flowers/daisy/0.png": png_bytes(0), "flowers/daisy/1.png": png_bytes(1)}, "only in daisy/"),
    ({"flowers/daisy/0.png": b"text", "flowers/tulip/0.png": b"text"}, "in no class folder"),
    ({"notes.txt": b"hello"}, "in no class folder"),
])
def test_a_refused_zip_leaves_no_folder_and_no_data_choice(tmp_path, visitors, members, words):
    visitor = "a" * 32
    path = tmp_path / "refused.zip"
    if members is None:
        path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: just the end-of-archive record
    else:
        make_zip(path, members)
    before = ui.choices.data_choices(visitor)
    assert words in _refused_upload(path, visitor)
    assert ui.choices.data_choices(visitor) == before
    assert not [p for p in visitors.rglob("*") if p.is_file() or p.name.startswith("refused")]


def test_uploads_are_bounded_per_visitor(tmp_path, visitors, monkeypatch):
    import gradio as gr

    monkeypatch.setattr(ui.settings, "SHARING", SharingLimits(upload_mb_per_visitor=1))
    visitor = "a" * 32
    big = make_zip(tmp_path / "big.zip", {f"c/{k}/{i}.png": os.urandom(1 << 17) for k in "ab" for i in range(3)},
                   compression=zipfile.ZIP_STORED)  # 768 KiB... and a second one does not fit any more
    members = {f"c/{k}/{i}.png": png_bytes(i) for k in "ab" for i in range(2)}
    ui.train.upload_dataset(str(make_zip(tmp_path / "first.zip", members)), visitor)
    with pytest.raises(gr.Error):
        ui.train.upload_dataset(str(big), visitor)
    (ui.visitors.visitor_folder(visitor) / "uploads" / "filler").write_bytes(bytes(10**6))
    with pytest.raises(gr.Error, match="no room for more uploads"):
        ui.train.upload_dataset(str(make_zip(tmp_path / "second.zip", members)), visitor)
    # another visitor still has room
    assert ui.train.upload_dataset(str(make_zip(tmp_path / "third.zip", members)), "b" * 32)[0].value


def _app_error(client, *args, api_name: str, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        client.predict(*args, api_name=api_name, **kwargs)
    return str(error.value)


def test_the_live_app_reads_only_checkpoints_and_data_from_its_own_lists(live_app, tmp_path):
    from gradio_client import Client, handle_file

    from alexnet_core.runner import RUNNER

    client = Client(live_app.url, verbose=False)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes())
    outside = tmp_path / "elsewhere" / "best.safetensors"  # a real checkpoint, but not one the app lists
    outside.parent.mkdir()
    shutil.copyfile(ui.settings.DEFAULT_CHECKPOINT, outside)
    for path in ("/etc/passwd", str(outside), "../checkpoints/cifar10.safetensors", "checkpoints/../../x"):
        assert "not in the list of choices" in _app_error(client, handle_file(str(photo)), path,
                                                          api_name="/predict")
        assert "not in the list of choices" in _app_error(client, path, str(live_app.tiny_data),
                                                          api_name="/evaluate")
    runs_before = sorted(live_app.home.rglob("*.safetensors"))
    for data in ("/etc", str(tmp_path), "../../", str(live_app.tiny_data / "..")):
        assert "not in the list of choices" in _app_error(client, dict(model="alexnet_cifar_small", data=data),
                                                          api_name="/train")
    assert not RUNNER.snapshot().active and sorted(live_app.home.rglob("*.safetensors")) == runs_before


@pytest.mark.parametrize("target", ["/etc/passwd", "gradio_app.py", "checkpoints/cifar10.safetensors", "../x"])
def test_the_live_app_serves_no_file_outside_gradios_cache(live_app, target):
    path = str(Path(ui.settings.REPO, target).resolve()) if not target.startswith("/") else target
    for url in (f"{live_app.url}gradio_api/file={path}", f"{live_app.url}file={path}"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url, timeout=30).close()
        assert error.value.code in (403, 404), url


def test_the_live_app_refuses_uploads_over_its_size_limit_and_keeps_serving(live_app, tmp_path, monkeypatch):
    """gradio_app.launch sets Gradio's max_file_size (ALEXNET_STUDIO_MAX_UPLOAD); Gradio refuses a larger upload
    while it streams in, before any handler. Here the limit is lowered to 64 KiB to send a small file over it."""
    from gradio import utils
    from gradio_client import Client, handle_file

    assert live_app.app.max_file_size == utils._parse_file_size(ui.settings.MAX_UPLOAD) >= 100 * 10**6
    client = Client(live_app.url, verbose=False)
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes() + os.urandom(128 << 10))  # a real PNG (Pillow ignores what follows it)
    monkeypatch.setattr(live_app.app, "max_file_size", 64 << 10)
    with pytest.raises(Exception) as error:
        client.predict(handle_file(str(big)), api_name="/predict")
    assert "413" in str(error.value), str(error.value)  # Request Entity Too Large
    monkeypatch.undo()
    label, info = client.predict(handle_file(str(big)), api_name="/predict")
    assert label["confidences"] and "ms on cpu" in info
