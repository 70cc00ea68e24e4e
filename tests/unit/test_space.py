"""The Hugging Face Space settings: README.md's YAML front matter, and what docs/deploy.md says the Hub needs.

A Space installs the Gradio named by ``sdk_version`` and runs ``app_file``; requirements.txt pins the Gradio the
tests ran with. These must agree, or the Space runs a Gradio that nothing here was tested with.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import gradio
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DEPLOY = REPO / "docs" / "deploy.md"
HUB_FILE_LIMIT = 10 * 10 ** 6  # the Hub refuses files over 10 MB that are not stored with LFS (or Xet)
# The colours a Space card takes, and the settings this README uses (a misspelt key is silently ignored).
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
KNOWN_KEYS = {"title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file",
              "app_port", "base_path", "fullWidth", "header", "short_description", "models", "datasets", "tags",
              "thumbnail", "pinned", "license", "suggested_hardware", "suggested_storage", "hf_oauth",
              "disable_embedding", "startup_duration_timeout", "custom_headers", "preload_from_hub"}


def _front_matter() -> tuple[dict, str]:
    text = README.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with a '---' line: the Hub reads the Space's settings from there"
    return yaml.safe_load(match.group(1)), text[match.end():]


def _pinned(package: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{re.escape(package)}==([^\s#;]+)", line.strip(), re.I)
        if match:
            return match.group(1)
    raise AssertionError(f"requirements.txt does not pin {package}")


def test_the_front_matter_runs_the_tested_gradio_and_the_app():
    meta, _ = _front_matter()
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == _pinned("gradio") == gradio.__version__
    app_file = REPO / meta["app_file"]
    assert app_file.is_file() and app_file.suffix == ".py"
    assert 'if __name__ == "__main__":' in app_file.read_text(encoding="utf-8")


def test_the_front_matter_is_a_valid_space_card():
    meta, _ = _front_matter()
    assert set(meta) <= KNOWN_KEYS, f"settings the Hub does not know: {set(meta) - KNOWN_KEYS}"
    assert meta["title"] and isinstance(meta["pinned"], bool)
    assert meta["colorFrom"] in COLOURS and meta["colorTo"] in COLOURS
    assert isinstance(meta["emoji"], str) and len(meta["emoji"]) <= 2
    assert 0 < len(meta["short_description"]) <= 60
    # A string: unquoted, YAML reads 3.10 as the number 3.1.
    version = meta["python_version"]
    assert isinstance(version, str) and re.fullmatch(r"3\.\d+", version), version
    assert tuple(map(int, version.split("."))) >= (3, 11)  # the README's "Python 3.11 or newer"
    assert meta.get("suggested_hardware", "cpu-basic") == "cpu-basic"  # the free tier is what we aim for


def test_the_readme_still_opens_with_its_title_after_the_front_matter():
    _, body = _front_matter()
    assert body.lstrip("\n").startswith("# AlexNet Studio\n")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the files a Space would receive")
    return [REPO / name for name in out.decode().split("\0") if name]


def test_every_file_over_the_hubs_limit_is_stored_with_lfs_as_deploy_md_says():
    text = DEPLOY.read_text(encoding="utf-8")
    block = re.search(r"```gitattributes\n(.*?)```", text, re.S)
    assert block, "docs/deploy.md should show the .gitattributes lines for the Space"
    lfs = [line.split()[0] for line in block.group(1).splitlines() if "filter=lfs" in line]
    large = [path for path in _tracked_files() if path.is_file() and path.stat().st_size > HUB_FILE_LIMIT]
    assert large, "no file over 10 MB? then the shipped checkpoints are gone (tests/unit/test_shipped_checkpoints.py)"
    for path in large:
        relative = path.relative_to(REPO).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(path.name, pattern) for pattern in lfs), (
            f"{relative} is over the Hub's 10 MB limit: docs/deploy.md's .gitattributes must store it with LFS")


def test_deploy_md_names_only_settings_the_code_reads():
    """Every ALEXNET_STUDIO_* variable the deploy guide documents is read somewhere in the app or library."""
    documented = set(re.findall(r"\bALEXNET_STUDIO_[A-Z_]+\b", DEPLOY.read_text(encoding="utf-8")))
    code = "".join(path.read_text(encoding="utf-8") for path in
                   [REPO / "gradio_app.py", *sorted((REPO / "ui").glob("*.py")),
                    *sorted((REPO / "alexnet_core").glob("*.py"))])
    assert documented, "docs/deploy.md documents no ALEXNET_STUDIO_* setting"
    missing = sorted(name for name in documented if name not in code)
    assert not missing, f"docs/deploy.md documents settings nothing reads: {missing}"


def test_deploy_md_links_resolve():
    text = DEPLOY.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DEPLOY.parent / target).exists(), f"docs/deploy.md links to {target}, which is not there"


@pytest.mark.slow
def test_the_app_starts_as_a_space_starts_it_and_caps_training(tmp_path):
    """`python gradio_app.py` with the variables the Hub sets (SYSTEM=spaces, SPACE_ID, the server's address):
    it serves the API through gradio_client (Gradio closes its direct REST routes on a Space) and applies the
    Space's default training caps."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tests.helpers import class_image, space_app

    with space_app(tmp_path / "home") as (url, log_path):
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        try:
            with pytest.raises(AppError, match="^This server allows at most 30 epochs a run; you asked for 31"):
                client.predict(settings={"epochs": 31, "limit": 100}, api_name="/train")
            photo = tmp_path / "photo.png"
            class_image(1, 40, np.random.default_rng(0)).save(photo)
            top, info = client.predict(handle_file(str(photo)), api_name="/predict")
            assert len(top["confidences"]) == 5 and "cifar10.safetensors" in info
        except Exception as error:  # the server's traceback is in its log, not in the client's error
            raise AssertionError(f"{error}\n--- the app's log ---\n{log_path.read_text()[-6000:]}") from error
        finally:
            client.close()
