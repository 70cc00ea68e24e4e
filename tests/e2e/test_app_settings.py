"""Where the app writes, as a fresh process sees it: everything under $ALEXNET_STUDIO_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, gradio_app, ui.settings, alexnet_core.data
from gradio import route_utils, utils
print(json.dumps({"runs": str(ui.settings.RUNS_DIR), "uploads": str(ui.settings.UPLOADS_DIR),
                  "visitors": str(ui.settings.VISITORS_DIR),
                  "gradio_uploads": utils.get_upload_folder(), "gradio_cache": route_utils.DEFAULT_TEMP_DIR,
                  "torch_home": os.environ["TORCH_HOME"], "data_home": str(alexnet_core.data.default_home())}))
"""


def test_every_folder_the_app_writes_is_inside_its_data_directory(tmp_path):
    home = tmp_path / "studio"
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "TORCH_HOME")}
    env["ALEXNET_STUDIO_HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    folders = json.loads(out.strip().splitlines()[-1])
    for name, folder in folders.items():
        assert Path(folder).resolve().is_relative_to(home.resolve()), (name, folder)
