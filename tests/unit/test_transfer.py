"""A run that starts from a trained network (alexnet_core/transfer.py): the classifier only on features computed
once, or every layer fine-tuned; the start recorded in the checkpoint and the card; a start that does not fit
refused. Random weights of torchvision's shapes stand in for the ImageNet download (as tests/app/test_imagenet.py)."""

from __future__ import annotations

import pytest
import torch

from alexnet_core import checkpoints, imagenet, transfer
from alexnet_core.config import ConfigError, TrainConfig, check_config, check_memory
from alexnet_core.models import build_model
from alexnet_core.train import train
from alexnet_core.train_settings import config_from_settings
from alexnet_core.transforms import Preprocess
from tests.helpers import assert_one_sentence, make_image_folder

NEW_CLASSES = ["apple", "kiwi", "plum"]


@pytest.fixture
def stand_in(monkeypatch):
    """torchvision's AlexNet with random weights, in place of the ImageNet download."""
    from torchvision.models import alexnet

    monkeypatch.setattr(imagenet, "_predictor", None)
    torch.manual_seed(0)
    state_dict = alexnet().state_dict()
    monkeypatch.setattr(imagenet, "_download_state_dict", lambda weights: state_dict)
    return transfer.start_weights(transfer.describe_start("imagenet"))


@pytest.fixture
def start_checkpoint(tmp_path):
    """A 10-class alexnet_cifar_small checkpoint (random weights) to start from."""
    torch.manual_seed(1)
    model = build_model("alexnet_cifar_small", num_classes=10, in_channels=3, batch_norm=False)
    pre = Preprocess(input_size=32, store_size=32, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    meta = checkpoints.model_meta("alexnet_cifar_small", batch_norm=False, num_classes=10, in_channels=3,
                                  classes=[f"c{i}" for i in range(10)], preprocess=pre.to_dict(), data="cifar10",
                                  best_val_acc=0.8)
    path = tmp_path / "start.safetensors"
    checkpoints.save_checkpoint(path, model.state_dict(), meta, half=False)
    return path


def _settings(tmp_path, **asked):
    data = make_image_folder(tmp_path / "fruit", NEW_CLASSES, n_per_class=8, size=40, splits=None)
    config, _ = config_from_settings({"data": str(data), "epochs": 2, "batch_size": 8, "device": "cpu",
                                      "val_fraction": 0.25, "out": str(tmp_path / "run"), "half": False, **asked})
    return config


def _count_feature_images(seen: list[int]):
    """A hook that notes the number of images each forward pass of a model's conv layers (``features``) sees."""
    def hook(module, args, output):
        if isinstance(module, torch.nn.Sequential) and hasattr(module, "conv1") and args[0].device.type != "meta":
            seen.append(len(args[0]))

    return torch.nn.modules.module.register_module_forward_hook(hook)


def test_classifier_only_keeps_the_conv_layers_and_computes_features_once(tmp_path, stand_in):
    config = _settings(tmp_path, start_from="imagenet", retrain="classifier")
    assert (config.model, config.input_size, config.batch_norm) == ("alexnet_torchvision", 224, False)
    seen = []
    handle = _count_feature_images(seen)
    try:
        end = train(config, snapshots=False)   # the snapshots' own passes (issue 27) are not the features' cache
    finally:
        handle.remove()
    assert end.status == "finished", end.message
    trained, meta = checkpoints.load_checkpoint(end.best_path)
    # 12 training images (24 less a quarter held out for validation and a quarter for test) and their mirrors
    # once; then the 6 validation images once per epoch: no training step ran the conv layers.
    assert seen == [2 * 12, 6, 6], seen
    for name, tensor in stand_in.items():
        if name.startswith("features."):
            assert torch.equal(trained[name], tensor), f"{name} changed in a classifier-only run"
    assert not torch.equal(trained["classifier.fc6.weight"], stand_in["classifier.fc6.weight"])
    assert trained["classifier.fc8.weight"].shape == (3, 4096) and meta["classes"] == NEW_CLASSES
    started = meta["started_from"]
    assert started["start_from"] == "imagenet" and started["retrain"] == "classifier"
    assert "IMAGENET1K_V1" in started["weights"] and started["feature_seconds"] >= 0


def test_fine_tuning_everything_changes_the_pretrained_layers_at_a_smaller_rate(tmp_path, start_checkpoint):
    config = _settings(tmp_path, start_from=str(start_checkpoint), retrain="all", lr=0.05)
    assert (config.model, config.input_size) == ("alexnet_cifar_small", 32)
    end = train(config)
    assert end.status == "finished", end.message
    start, _ = checkpoints.load_checkpoint(start_checkpoint)
    trained, meta = checkpoints.load_checkpoint(end.best_path)
    assert not torch.equal(trained["features.conv1.weight"], start["features.conv1.weight"])
    assert trained["classifier.fc5.weight"].shape == (3, 192) and meta["classes"] == NEW_CLASSES
    assert meta["started_from"]["name"] == "start.safetensors" and meta["started_from"]["data"] == "cifar10"
    # The copied layers learn at a tenth of the rate of the new last layer.
    from alexnet_core.optim import make_optimizer

    model = build_model("alexnet_cifar_small", num_classes=3, in_channels=3, batch_norm=False)
    pretrained = transfer.load_start(model, transfer.describe_start(str(start_checkpoint)), "alexnet_cifar_small")
    scales = {id(p): g["lr_scale"] for g in make_optimizer(model, config, pretrained, 0.1).param_groups
              for p in g["params"]}
    assert scales[id(model.features.conv1.weight)] == 0.1 and scales[id(model.classifier.fc5.weight)] == 1.0


def test_the_model_card_names_the_start(tmp_path, start_checkpoint):
    from alexnet_core.cards import model_card
    from alexnet_core.evaluate import evaluate_checkpoint

    end = train(_settings(tmp_path, start_from=str(start_checkpoint), retrain="classifier", epochs=1))
    result = evaluate_checkpoint(end.best_path, str(tmp_path / "fruit"), "val")
    card = model_card(end.best_path, {"none": result}, "val", "confusion.png")
    assert ("Started from: start.safetensors (trained on cifar10; 10 classes; best validation accuracy 80.0%); "
            "retrained the classifier only") in card


def test_a_start_whose_layers_do_not_fit_is_refused_in_one_sentence(tmp_path, start_checkpoint):
    config = _settings(tmp_path, start_from=str(start_checkpoint), model="alexnet_cifar")
    with pytest.raises(ConfigError) as refused:
        train(config)
    assert_one_sentence(refused, "start.safetensors", "alexnet_cifar")
    assert not (tmp_path / "run" / "best.safetensors").exists()
    with pytest.raises(ConfigError) as missing:
        _settings(tmp_path / "b", start_from=str(tmp_path / "nothing.safetensors"))
    assert_one_sentence(missing, "nothing.safetensors")


def test_retraining_the_classifier_needs_a_start_and_a_start_keeps_conv1():
    with pytest.raises(ConfigError) as refused:
        check_config(TrainConfig(retrain="classifier", device="cpu"))
    assert_one_sentence(refused, "start from")
    with pytest.raises(ConfigError) as whitened:
        check_config(TrainConfig(start_from="imagenet", whiten=True, device="cpu"))
    assert_one_sentence(whitened, "whiten")


def test_the_feature_cache_is_counted_in_the_memory_estimate(tmp_path, start_checkpoint):
    config = _settings(tmp_path, start_from=str(start_checkpoint), retrain="classifier")
    cached = check_memory(config).parts["feature cache"]
    assert cached == 2 * 12 * (64 * 4 * 4) * 4     # 12 images and their mirrors, 1,024 fp32 numbers each
    assert check_memory(_settings(tmp_path / "b", start_from=str(start_checkpoint))).parts["feature cache"] == 0


def test_the_command_line_names_the_start_and_what_to_retrain(tmp_path, start_checkpoint):
    from alexnet_core.cli import train_config

    config, given = train_config(["--start-from", str(start_checkpoint), "--retrain", "classifier",
                                  "--data", str(tmp_path)])
    assert (config.model, config.retrain, config.start_from) == ("alexnet_cifar_small", "classifier",
                                                                 str(start_checkpoint))
