"""AlexNet Studio's library: the model zoo, summaries, data, training, checkpoints and prediction.

It never imports gradio: the app (gradio_app.py) and the command line (python -m alexnet_core) both call in.
"""

from .models import MODELS, build_model, get_spec

__all__ = ["MODELS", "build_model", "get_spec"]
__version__ = "0.1.0"
