"""Device choice: CUDA, then Ascend NPU, then MPS, then CPU, with each backend faked."""

import types

import pytest
import torch

from alexnet_core import devices


@pytest.fixture
def fake(monkeypatch):
    """Sets which backends look available: fake(cuda=True, npu=False, mps=True)."""

    def apply(cuda=False, npu=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(devices, "npu_available", lambda: npu)
        monkeypatch.setattr(devices, "mps_available", lambda: mps)

    return apply


@pytest.mark.parametrize("cuda, npu, mps, expected", [
    (True, True, True, "cuda"),
    (False, True, True, "npu"),
    (False, False, True, "mps"),
    (False, False, False, "cpu"),
])
def test_auto_prefers_cuda_then_npu_then_mps(fake, cuda, npu, mps, expected):
    fake(cuda, npu, mps)
    assert devices.choose_device("auto") == expected
    assert devices.available_devices()[-1] == "cpu"


def test_explicit_choice_and_clear_errors(fake):
    fake(cuda=False, npu=False, mps=False)
    assert devices.resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="not available"):
        devices.resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        devices.resolve_device("tpu")


def test_npu_needs_torch_npu(monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    assert devices.npu_available() is False            # never imported, never required


def test_npu_detected_through_torch_npu(monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(devices.importlib, "import_module", lambda name: types.ModuleType(name))
    monkeypatch.setattr(torch, "npu", types.SimpleNamespace(is_available=lambda: True), raising=False)
    assert devices.npu_available() is True


def test_amp_only_where_it_pays(monkeypatch):
    assert devices.supports_amp(torch.device("cuda")) is True
    assert devices.supports_amp(torch.device("mps")) is False
    for native in (False, True):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda native=native: native)
        assert devices.supports_amp(torch.device("cpu")) is native
