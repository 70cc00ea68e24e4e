"""The Gradio app's parts: one module per tab (layout and thin handlers that call alexnet_core), and what the
tabs share. ``gradio_app.py`` puts the tabs on one page and serves it.

settings    where the app keeps things and what a shared server allows (read from the environment)
visitors    whose work a request is, where it is kept, and messages without server paths
choices     the lists a visitor picks from: data sets, checkpoints, models
photos      the photo box every tab uses (size checks before decoding) and the example photos
fields      number fields that refuse text in a sentence naming the field
architecture, predict, inside, train, evaluate: the tabs

Importing the package sets GRADIO_TEMP_DIR and TORCH_HOME (settings) before any of its modules imports gradio.
"""

from . import settings  # noqa: F401  (first: gradio and torchvision read their folders once, at import)
