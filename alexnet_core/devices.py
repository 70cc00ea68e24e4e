"""Which device to run on: CUDA, then Ascend NPU (through the optional torch_npu), then Apple MPS, then CPU.

``torch_npu`` is imported only when it is installed and only when asked about; it is never required.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from contextlib import nullcontext
from pathlib import Path

import torch

DEVICE_CHOICES = ("auto", "cuda", "npu", "mps", "cpu")


def npu_available() -> bool:
    """True when torch_npu is installed and sees an Ascend NPU. Importing it registers torch.npu."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        importlib.import_module("torch_npu")
        return bool(torch.npu.is_available())  # type: ignore[attr-defined]
    except Exception:  # a broken driver install must not stop CPU users
        return False


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device names that work here, best first; "cpu" is always last."""
    # Not torch.accelerator: it sees an Ascend NPU only once torch_npu has been imported, which npu_available
    # does on demand, and it names one accelerator where the app lists every device for the user to pick.
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if npu_available():
        found.append("npu")
    if mps_available():
        found.append("mps")
    return found + ["cpu"]


def choose_device(name: str = "auto") -> str:
    """Turns a user's choice ("auto", "cuda", "cuda:1", "npu", "mps", "cpu") into the device name to use.

    Raises ValueError with one clear sentence when the asked-for device is not there.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return available_devices()[0]
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"Unknown device '{name}'. Choose one of: {', '.join(DEVICE_CHOICES)}.")
    if kind != "cpu" and kind not in available_devices():
        raise ValueError(
            f"Device '{name}' is not available on this machine (found: {', '.join(available_devices())})."
        )
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """``choose_device`` as a torch.device ("npu" exists once torch_npu is imported, which choosing does)."""
    return torch.device(choose_device(name))


def describe_device(device: torch.device) -> str:
    """A human-readable name for logs and checkpoint metadata, e.g. 'cuda (NVIDIA H100)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up defensively
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def supports_amp(device: torch.device) -> bool:
    """Whether mixed precision (bf16 autocast) is worth using: on CUDA and NPU, and on CPUs with native bf16
    (on an AMD EPYC with AVX512-BF16, bench/train_speed.py measured 1.4x the fp32 training loop)."""
    if device.type == "cpu":
        return cpu_has_bf16()
    return device.type in ("cuda", "npu")


def synchronize(device: torch.device) -> None:
    """Waits for queued work, so that timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize()  # type: ignore[attr-defined]
    elif device.type == "mps":
        torch.mps.synchronize()


def amp_on(device: torch.device, amp: str) -> bool:
    """Whether --amp (auto, on or off) turns bf16 autocast on for this device."""
    return amp == "on" or (amp == "auto" and supports_amp(device))


def autocast(device: torch.device, amp: str):
    """bf16 autocast where ``amp_on``, else a context that does nothing."""
    if not amp_on(device, amp):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def describe_machine() -> str:
    """The machine in a few words, for model cards: processor and core count."""
    import platform
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"
