"""Training runs in background threads, one per owner (a visitor of the app), with snapshots the UI can read.

``TrainingRunner`` is one run: ``start(config)``, ``snapshot()``, ``stop()``, ``wait()``. ``RUNNER`` (a
``RunRegistry``) keeps one runner per owner: the Train tab calls ``RUNNER.start(config, owner)`` and reads
``RUNNER.snapshot(owner)``; Stop calls ``RUNNER.stop(owner)``, which touches no one else's run. At most
``max_active`` runs train at once on the server (``ServerBusyError`` beyond). Because a run lives here and not
in a browser session, reloading the page finds the owner's run still going. Nothing here knows about Gradio.

Training shares the machine's cores with prediction, and would take them all: its thread (and the OpenMP
threads and data workers it starts, which inherit it) runs at a lower OS priority (``training_nice``, 10 by
default, ``ALEXNET_STUDIO_TRAINING_NICE`` to change it; Linux and macOS), so a /predict request gets the CPU
as soon as it asks, and training still has every core while nobody is asking (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig, check_config, check_memory
from .events import EndEvent, EpochEvent, StartEvent, StepEvent
from .train import train


class BusyError(RuntimeError):
    """The owner's run is already going: one run at a time per owner."""


class ServerBusyError(BusyError):
    """As many runs as the server allows are training; a new one has to wait for one of them to end."""


LOCAL = "local"  # the owner of runs started from Python without a visitor (tests, scripts)


@dataclass
class RunSnapshot:
    """What the Train tab shows; a copy, safe to read while the run goes on."""

    status: str = "idle"            # idle | preparing | running | stopping | finished | stopped | failed
    message: str = ""
    config: dict = field(default_factory=dict)
    run_dir: str | None = None
    device: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    images_per_s: float = 0.0
    eta_s: float | None = None
    started_at: float | None = None
    steps: list[tuple[int, float]] = field(default_factory=list)     # (step, loss), thinned for plotting
    history: list[dict] = field(default_factory=list)                # one dict per validated epoch
    best_path: str | None = None
    best_val_acc: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ("preparing", "running", "stopping")


def _lower_this_threads_priority(nice: int) -> None:
    """Raises the calling thread's nice value by ``nice`` (Linux: per thread; threads it starts inherit it)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id() if os.uname().sysname == "Linux" else 0
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not allowed here: train at the usual priority
        pass


def _remove_if_no_checkpoint(folder: Path) -> None:
    """A failed run's folder, removed when it holds no checkpoint: a run that saved nothing leaves nothing on
    disk, and does not count towards a visitor's runs."""
    if folder.is_dir() and not any(folder.rglob("*.safetensors")):
        shutil.rmtree(folder, ignore_errors=True)


class TrainingRunner:
    """Starts, watches and stops one training run at a time."""

    max_plot_points = 2000
    training_nice = int(os.environ.get("ALEXNET_STUDIO_TRAINING_NICE", "10"))  # 0: same priority as serving

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = RunSnapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._new_folder = False
        self.on_finish: list = []      # callables run with the EndEvent (e.g. refresh checkpoint lists)

    def start(self, config: TrainConfig) -> None:
        """Checks the settings and the memory they need (ConfigError before any work), then trains in a
        background thread."""
        with self._lock:
            if self._state.active:
                raise BusyError("A training run is already going: stop it or wait for it to finish.")
            check_config(config)
            check_memory(config)   # a batch too large for this machine is refused here, not mid-step
            self._stop.clear()
            # A folder this run makes is removed again should the run fail before saving any checkpoint.
            self._new_folder = bool(config.out) and not config.resume and not Path(config.out).exists()
            self._state = RunSnapshot(status="preparing", message="Loading the data…",
                                      config=config.to_dict(), epochs=config.epochs, started_at=time.time())
            self._thread = threading.Thread(target=self._run, args=(config,), name="training", daemon=True)
            self._thread.start()

    def stop(self) -> bool:
        """Asks the run to end at its next step; it validates, saves and reports "stopped". False if idle."""
        with self._lock:
            if not self._state.active:
                return False
            self._state.status = "stopping"
            self._state.message = "Stopping after this step; the best checkpoint is kept…"
        self._stop.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the run's thread to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            s = self._state
            return RunSnapshot(**{**s.__dict__, "steps": list(s.steps), "history": list(s.history),
                                  "config": dict(s.config)})

    # -- the background thread ---------------------------------------------------------------------------

    def _run(self, config: TrainConfig) -> None:
        _lower_this_threads_priority(self.training_nice)
        try:
            end = train(config, self._on_event, self._stop)
        except Exception as exc:  # a run must never take the app down with it
            end = EndEvent("failed", str(exc) or type(exc).__name__, config.out or "", None, None, 0.0)
            self._on_event(end)
        if end.status == "failed" and self._new_folder:
            _remove_if_no_checkpoint(Path(config.out))
        for callback in self.on_finish:
            try:
                callback(end)
            except Exception:
                pass

    def _on_event(self, event) -> None:
        with self._lock:
            s = self._state
            if isinstance(event, StartEvent):
                s.status = "stopping" if self._stop.is_set() else "running"
                s.run_dir, s.device, s.total_steps = event.run_dir, event.device, event.total_steps
                s.message = (f"Training on {event.device}: {event.train_images:,} training and "
                             f"{event.val_images:,} validation images.")
            elif isinstance(event, StepEvent):
                s.epoch, s.step, s.total_steps = event.epoch, event.step, event.total_steps
                s.loss, s.images_per_s, s.eta_s = event.loss, event.images_per_s, event.eta_s
                s.steps.append((event.step, event.loss))
                if len(s.steps) > self.max_plot_points:
                    s.steps = s.steps[::2]     # keep the plot light on long runs
            elif isinstance(event, EpochEvent):
                s.history.append({k: getattr(event, k) for k in (
                    "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "wall_time_s")})
                if event.best:
                    s.best_val_acc = event.val_acc
            elif isinstance(event, EndEvent):
                s.status, s.message = event.status, event.message
                s.best_path, s.eta_s = event.best_path, 0.0
                if event.best_val_acc is not None:
                    s.best_val_acc = event.best_val_acc


class RunRegistry:
    """One ``TrainingRunner`` per owner, and at most ``max_active`` runs training at once on the server.

    The last run of each owner is kept (finished or not) so that its page can show it again; owners beyond
    ``max_owners`` lose their oldest finished run's snapshot (its files stay on disk)."""

    max_owners = 1000

    def __init__(self, max_active: int = 1) -> None:
        self.max_active = max_active
        self._lock = threading.Lock()
        self._runs: dict[str, TrainingRunner] = {}
        self.on_finish: list = []      # callables run with the EndEvent of every run

    def _runner(self, owner: str) -> TrainingRunner | None:
        with self._lock:
            return self._runs.get(owner)

    def active_count(self) -> int:
        with self._lock:
            return sum(runner.snapshot().active for runner in self._runs.values())

    def start(self, config: TrainConfig, owner: str = LOCAL) -> None:
        """Starts ``owner``'s run: BusyError while their previous run goes on, ServerBusyError when the server
        trains as many runs as it allows; the config's own errors (ConfigError) before any work."""
        with self._lock:
            current = self._runs.get(owner)
            if current is not None and current.snapshot().active:
                raise BusyError("Your training run is already going: stop it or wait for it to finish.")
            active = sum(runner.snapshot().active for runner in self._runs.values())
            if active >= self.max_active:
                raise ServerBusyError(f"The server trains {self.max_active} run{'s' * (self.max_active != 1)} "
                                      f"at a time and that many are going; yours starts when one ends.")
            runner = TrainingRunner()
            runner.on_finish = self.on_finish
            runner.start(config)
            self._runs.pop(owner, None)
            self._runs[owner] = runner  # newest last: eviction takes the oldest
            if len(self._runs) > self.max_owners:
                idle = next((o for o, r in self._runs.items() if not r.snapshot().active), None)
                if idle is not None:
                    del self._runs[idle]

    def stop(self, owner: str = LOCAL) -> bool:
        """Asks ``owner``'s run to stop (nobody else's); False when they have none going."""
        runner = self._runner(owner)
        return runner.stop() if runner is not None else False

    def snapshot(self, owner: str = LOCAL) -> RunSnapshot:
        """``owner``'s last run as it is now; an idle snapshot when they have started none."""
        runner = self._runner(owner)
        return runner.snapshot() if runner is not None else RunSnapshot()

    def wait(self, timeout: float | None = None, owner: str = LOCAL) -> bool:
        """Waits for ``owner``'s run to end; True if it has (or there is none)."""
        runner = self._runner(owner)
        return runner.wait(timeout) if runner is not None else True

    def stop_all(self) -> None:
        with self._lock:
            runners = list(self._runs.values())
        for runner in runners:
            runner.stop()

    def wait_all(self, timeout: float | None = None) -> bool:
        """Waits (up to ``timeout`` seconds for each) for every run to end; True if all have."""
        with self._lock:
            runners = list(self._runs.values())
        return all([runner.wait(timeout) for runner in runners])  # a list: wait for every one, not the first


RUNNER = RunRegistry()
