"""The limits a shared server (a Hugging Face Space) puts on the app's visitors, read from the environment.

``TrainingCaps``: how long and on how much data one training run from the app may train. ``SharingLimits``: how
many runs train at once, and the runs and upload disk one visitor, and all of them together, may take. Both are
plain data with ``from_env`` and ``describe`` (the sentence the Train tab shows); the command line is never
capped. Nothing here knows about Gradio.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .config import TrainConfig


def _env_number(env, name: str, kind: type[int] | type[float]) -> int | float | None:
    """The setting ``name`` as a number of ``kind`` from 0 up (0 means no bound), None where it is not set; a
    ValueError sentence for anything else ("ten", "-3", "1.5" for a whole number)."""
    raw = env.get(name)
    if raw is None:
        return None
    try:
        value = kind(raw) if kind is float or raw.isdigit() else -1  # digits only: not " 7", "+7" or "7_0"
    except ValueError:
        value = -1
    if not value >= 0:  # also NaN
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be 0 (no bound) or {what} above 0, not {raw!r}.")
    return value


@dataclass(frozen=True)
class TrainingCaps:
    """Limits on training runs started from the app, for a server that many people share (a Space).

    Set by ALEXNET_STUDIO_MAX_EPOCHS, ALEXNET_STUDIO_MAX_TRAIN_MINUTES and ALEXNET_STUDIO_MAX_IMAGES (images per
    split); "0" or unset means no cap, except on a Hugging Face Space (SPACE_ID is set), where the defaults
    below keep one visitor from holding the shared CPU for long. The command line is never capped."""

    epochs: int | None = None
    minutes: float | None = None
    images: int | None = None

    SPACE_DEFAULTS = {"epochs": 30, "minutes": 15, "images": 5000}

    @classmethod
    def from_env(cls, env=os.environ) -> TrainingCaps:
        on_space = bool(env.get("SPACE_ID"))

        def cap(name: str, key: str, kind):
            value = _env_number(env, name, kind)
            if value is None:
                return cls.SPACE_DEFAULTS[key] if on_space else None
            return value or None

        return cls(epochs=cap("ALEXNET_STUDIO_MAX_EPOCHS", "epochs", int),
                   minutes=cap("ALEXNET_STUDIO_MAX_TRAIN_MINUTES", "minutes", float),
                   images=cap("ALEXNET_STUDIO_MAX_IMAGES", "images", int))

    def describe(self) -> str:
        parts = [f"at most {self.epochs} epochs" if self.epochs else "",
                 f"{self.minutes:g} minutes a run" if self.minutes else "",
                 f"{self.images:,} images per split" if self.images else ""]
        parts = [p for p in parts if p]
        return ("This server caps training: " + ", ".join(parts) + ". A run that reaches the time cap stops "
                "and keeps its best checkpoint. No caps apply to the command line.") if parts else ""

    def apply(self, config: TrainConfig) -> TrainConfig:
        """The config within the caps: too many epochs is refused (say so, do not train something else);
        the image count and the time are capped quietly, as the Train tab states."""
        if self.epochs and config.epochs > self.epochs:
            raise ValueError(f"This server allows at most {self.epochs} epochs a run; you asked for "
                             f"{config.epochs}. Train longer with the command line on your own machine.")
        changes = {}
        if self.images:
            changes["limit"] = min(config.limit or self.images, self.images)
        if self.minutes:
            changes["time_limit"] = min(config.time_limit or self.minutes * 60, self.minutes * 60)
        return dataclasses.replace(config, **changes)


@dataclass(frozen=True)
class SharingLimits:
    """What one visitor, and all of them together, may take of a shared server: runs training at once (the
    training event's concurrency limit), runs kept, the disk their uploads fill, the disk of one run and of the
    whole server, and how many runs and uploads one address may make a minute. ``None``: no bound. A "visitor"
    here is who the caps count (ui.room.identity_of): a signed-in Hugging Face user, who gets
    ``signed_in_factor`` times the per-visitor bounds, or else a client address.

    Set by ALEXNET_STUDIO_RUNS_AT_ONCE, ALEXNET_STUDIO_MAX_RUNS_PER_VISITOR, ALEXNET_STUDIO_MAX_RUNS_PER_SERVER,
    ALEXNET_STUDIO_MAX_UPLOAD_MB_PER_VISITOR, ALEXNET_STUDIO_MAX_UPLOAD_MB_PER_SERVER, ALEXNET_STUDIO_MAX_RUN_MB,
    ALEXNET_STUDIO_MAX_DISK_MB_PER_SERVER, ALEXNET_STUDIO_MAX_RUNS_PER_MINUTE, ALEXNET_STUDIO_MAX_UPLOADS_PER_MINUTE
    ("0": no bound), ALEXNET_STUDIO_SIGNED_IN_FACTOR and ALEXNET_STUDIO_AWAY_MINUTES (after how long without a
    request a visitor's old files may be removed to make room); on a Space the defaults below apply, elsewhere
    only one run trains at a time."""

    runs_at_once: int = 1
    runs_per_visitor: int | None = None
    runs_per_server: int | None = None
    upload_mb_per_visitor: int | None = None
    upload_mb_per_server: int | None = None
    run_mb: int | None = None
    disk_mb_per_server: int | None = None
    runs_per_minute: int | None = None
    uploads_per_minute: int | None = None
    signed_in_factor: int = 4
    away_minutes: float = 30

    SPACE_DEFAULTS = {"runs_per_visitor": 5, "runs_per_server": 200, "upload_mb_per_visitor": 1024,
                      "upload_mb_per_server": 20 * 1024, "run_mb": 1200, "disk_mb_per_server": 30 * 1024,
                      "runs_per_minute": 6, "uploads_per_minute": 120}
    BOUNDS = ("runs_per_visitor", "runs_per_server", "upload_mb_per_visitor", "upload_mb_per_server", "run_mb",
              "disk_mb_per_server", "runs_per_minute", "uploads_per_minute")

    @classmethod
    def from_env(cls, env=os.environ) -> SharingLimits:
        on_space = bool(env.get("SPACE_ID"))
        values = {}
        for key in ("runs_at_once", *cls.BOUNDS):
            name = "ALEXNET_STUDIO_" + ("RUNS_AT_ONCE" if key == "runs_at_once" else "MAX_" + key.upper())
            value = _env_number(env, name, int)
            if value is None:
                if on_space and key in cls.SPACE_DEFAULTS:
                    values[key] = cls.SPACE_DEFAULTS[key]
                continue
            values[key] = value or (1 if key == "runs_at_once" else None)
        factor = _env_number(env, "ALEXNET_STUDIO_SIGNED_IN_FACTOR", int)
        away = _env_number(env, "ALEXNET_STUDIO_AWAY_MINUTES", float)
        return cls(**values, **({"signed_in_factor": max(1, factor)} if factor is not None else {}),
                   **({"away_minutes": away} if away is not None else {}))

    def describe(self) -> str:
        parts = [f"{self.runs_at_once} training run{'s' * (self.runs_at_once != 1)} at a time (others wait in "
                 f"line)"]
        if self.runs_per_visitor:
            parts.append(f"{self.runs_per_visitor} runs per visitor")
        if self.runs_per_server:
            parts.append(f"{self.runs_per_server} runs on the server")
        if self.upload_mb_per_visitor:
            parts.append(f"{self.upload_mb_per_visitor:,} MB of uploads per visitor")
        if self.upload_mb_per_server:
            parts.append(f"{self.upload_mb_per_server:,} MB of uploads on the server")
        if self.run_mb:
            parts.append(f"{self.run_mb:,} MB a run")
        if self.disk_mb_per_server:
            parts.append(f"{self.disk_mb_per_server:,} MB of disk on the server")
        if self.runs_per_minute or self.uploads_per_minute:
            parts.append(f"{self.runs_per_minute or 'any number of'} runs and zip uploads and "
                         f"{self.uploads_per_minute or 'any number of'} file uploads a minute per address")
        said = "This server shares itself: " + ", ".join(parts) + "."
        if self.runs_per_visitor or self.upload_mb_per_visitor:
            said += (" A visitor is a signed-in Hugging Face user (who gets "
                     f"{self.signed_in_factor} times the room) or else an address.")
        return said
