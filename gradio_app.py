"""AlexNet Studio in the browser: ``python gradio_app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply).

This file puts the tabs on one page and serves it. Each tab's layout and handlers live in its own module of
``ui/`` (``ui.predict``, ``ui.architecture``, ``ui.inside``, ``ui.train``, ``ui.evaluate``); the handlers are plain
functions that call alexnet_core, so tests and the API can call them directly.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import ui  # noqa: F401  (first: sets GRADIO_TEMP_DIR and TORCH_HOME, which gradio and torchvision read once)

# isort: split
import gradio as gr
from starlette.middleware import Middleware

from alexnet_core.models import get_spec
from alexnet_core.summary import summarize
from ui import architecture, compare, evaluate, inside, predict, settings, train, train_own_classes
from ui.choices import visitor_lists
from ui.room import UploadGuard
from ui.train import upload_dataset
from ui.visitors import remember_visitor

# Phones and dark pages (tests/e2e/test_browser.py looks at both):
# - matplotlib draws on white; on a dark page its figures are inverted (hue kept), so they are dark too;
# - tables wrap long cells instead of pushing the page sideways; a figure never grows wider than its box.
CSS = """
.dark .mpl-figure img { filter: invert(0.88) hue-rotate(180deg); }
.mpl-figure img { max-width: 100%; height: auto; }
.layers { width: 100%; border-collapse: collapse; font-size: 14px; }
.layers th, .layers td { padding: 3px 6px; text-align: left; vertical-align: top; white-space: nowrap;
                         border-bottom: 1px solid var(--border-color-primary); }
.layers .num { text-align: right; font-variant-numeric: tabular-nums; }
.layers td.arith { white-space: normal; font-family: var(--font-mono); font-size: 0.9em; }
@media (max-width: 640px) { .layers { font-size: 11.5px; } .layers th, .layers td { padding: 2px 3px; } }
#intro p { margin: 0.2em 0; }
@media (max-width: 640px) {
  /* a checkbox squeezed between number fields on a phone: give it room and let the row wrap */
  .row { flex-wrap: wrap; }
  .block:has(input[type=checkbox]) { min-width: min(150px, 100%) !important; }
  /* a long accordion title wraps, and its ▼ stays inside the box */
  .label-wrap > span:not(.icon) { white-space: normal; text-align: left; flex: 1 1 auto; min-width: 0; }
  .label-wrap > .icon { flex-shrink: 0; margin-right: 6px; }  /* turned 90°, it juts out by a few pixels */
  /* narrower tab buttons: the seven tabs (gr.Tabs wraps them) take two rows on a 390 px screen, not three */
  .tab-container button { padding: 0 7px !important; font-size: 14px !important; }
  /* a dropdown takes the whole row, so that its value is readable rather than cut under the arrow */
  .form { flex-wrap: wrap; }
  .form > .block:has(input[role=combobox]) { min-width: 100% !important; }
}
/* a long dropdown value ends in "…" before the arrow instead of running under it */
input[role=combobox] { text-overflow: ellipsis; padding-right: 4px; }
/* a figure's label sits above it, not over its title (on a phone the title starts where the label is) */
.mpl-figure [data-testid=block-label] { position: static; margin-bottom: 4px; }
/* Evaluate's captions ("true: dandelion · predicted: tulips 80%") wrap instead of ending in "…" */
#mistakes .caption-label { white-space: normal; max-width: calc(100% - 8px); }
"""


def build_app() -> gr.Blocks:
    """The page: an introduction, the visitor's id, the tabs, and the events that join tabs."""
    # The first meta-device pass sets PyTorch's meta kernels up (about a second): pay that at start,
    # not on the first page load.
    summarize(architecture.DEFAULT_MODEL, get_spec(architecture.DEFAULT_MODEL).input_size)
    # pyplot whole before the preload thread imports Grad-CAM (which imports it): Gradio switches matplotlib's
    # backend around every event, and a first request during that import met a half-initialised pyplot.
    import matplotlib.pyplot  # noqa: F401
    threading.Thread(target=predict.preload_shipped, name="preload-checkpoints", daemon=True).start()
    # Gradio deletes the files it caches (uploads, downloads) once they are CACHE_SECONDS old.
    with gr.Blocks(title="AlexNet Studio", delete_cache=(settings.CACHE_SECONDS, settings.CACHE_SECONDS)) as app:
        gr.Markdown("# AlexNet Studio\n**Drop a photo below, or click an example**, and a trained AlexNet says what "
                    "it shows. Then look **Inside** it, compare its layers at 224 and at 32 in **Architecture**, "
                    "or **Train** your own.", elem_id="intro")
        # Who this page's visitor is: a random id their browser keeps (encrypted, in localStorage), so that a
        # reload finds their run, uploads and checkpoints; gr.State hands it to each handler. Outside gr.Tabs.
        if os.environ.get("OAUTH_CLIENT_ID") and importlib.util.find_spec("authlib"):
            # On a Space with hf_oauth: a signed-in visitor's caps count their Hugging Face user (ui/room.py).
            gr.LoginButton(value="Sign in with Hugging Face for more room to train and upload", size="sm")
        saved = gr.BrowserState(None, storage_key="alexnet-studio-visitor")
        visitor = gr.State(None)
        visited = app.load(remember_visitor, inputs=saved, outputs=[visitor, saved], api_name=False,
                           show_progress="hidden")
        # Predict first: a visitor classifies a photo from the first screen, on a phone too. wrap: on a phone the
        # seven tabs take two rows, every one a tap away, none hidden behind "…".
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            predict_checkpoint = predict.tab(app, visitor)
            model, layer, look = architecture.tab(app)
            image, inside_checkpoint, focus, _ = inside.tab(app, visitor)
            train_data, zip_file, upload_note = train.tab(app, visitor, visited)
            evaluate_checkpoint, evaluate_data = evaluate.tab(app, visitor)
            train_own_classes.tab(app, visitor, predict_checkpoint, inside_checkpoint, evaluate_checkpoint,
                                  evaluate_data, train_data)
            compare.tab(app, visitor)
        # The Architecture tab links each layer to its activations in the Inside tab.
        look.click(inside.show_layer_inside, inputs=[model, layer, inside_checkpoint, image, visitor],
                   outputs=[tabs, inside_checkpoint, image, focus], api_name=False)
        # Then the visitor's own lists (a reload included), and their run if one is going.
        visited.then(visitor_lists, inputs=visitor,
                     outputs=[train_data, evaluate_data, predict_checkpoint, evaluate_checkpoint, inside_checkpoint],
                     api_name=False, show_progress="hidden")
        # An uploaded data set goes into the Data lists of Train and Evaluate.
        zip_file.upload(upload_dataset, inputs=[zip_file, visitor], outputs=[train_data, evaluate_data, upload_note],
                        api_name=False)
    return app


def launch(app: gr.Blocks | None = None, **kwargs) -> gr.Blocks:
    """Queues and serves the app (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and GRADIO_ROOT_PATH apply)."""
    app = app or build_app()
    app.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=100)
    kwargs.setdefault("css", CSS)
    # No allowed_paths: Gradio serves only its own upload folder, and a file there that is not an image (a
    # checkpoint to download, an .html someone uploaded) only as an attachment. UploadGuard caps the room and
    # the rate of Gradio's upload route before it reads a byte (ui/room.py).
    app_kwargs = kwargs.pop("app_kwargs", None) or {}
    app_kwargs.setdefault("middleware", []).append(Middleware(UploadGuard))
    app.launch(max_file_size=settings.MAX_UPLOAD, app_kwargs=app_kwargs, **kwargs)
    return app


if __name__ == "__main__":
    launch()
