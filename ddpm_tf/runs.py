"""Run directories: the resolved config, atomic checkpoints, exact resume, and loading for inference.

A run directory holds

    config.json        the resolved training config (a run with a different config is refused;
                       one saved under old key names reads as the same config under the new)
    model.json         the Keras config of the `DiffusionModel` (network, diffusion, EMA settings)
    checkpoints/       `tf.train.Checkpoint`s of the model and optimizer, the newest `keep`
    .lock              while `ddpm-train` trains it: its lock (`ddpm_tf.runlock`), one writer

A checkpoint holds every variable that decides the rest of the run: the network, its EMA copy,
the optimizer (moments, iteration count, loss scale), the model's step counter (the training noise,
timesteps and label drops are stateless draws seeded by (seed, step), and the data stream of
`ddpm_tf.data.step_batches` is a function of (seed, step)), and the timestep sampler's loss history.
Restoring it and continuing therefore gives the same weights as a run that was never stopped.

Saving is atomic: TensorFlow writes a checkpoint's files (into `ckpt-N_temp/`, then moved to
`ckpt-N.index` and `ckpt-N.data-*`) and only then replaces the small `checkpoint` state file in one
rename, so a run killed mid-save resumes from the previous checkpoint, and a reader of a run in
progress (`load_model`: ddpm-sample, ddpm-eval, ddpm-export, which take no lock) sees the newest
complete one. A save that fails (a full disk, a read-only directory) raises `WriteError` naming
the checkpoint and the OS reason, having removed its partial files; the state file still names the
previous checkpoint. The other files of the directory are written to a temporary sibling and
renamed into place (`ddpm_tf.files`).

In a cluster of workers (MultiWorkerMirroredStrategy) only the chief writes the directory. The
other workers read it (to check the config and to resume) and take part in every save, as
TensorFlow requires, but write their checkpoints to temporary directories of their own, removed
at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from ddpm_tf.checks import check_int
from ddpm_tf.config import upgrade
from ddpm_tf.errors import InputError
from ddpm_tf.files import atomic_path, writing
from ddpm_tf.keras_files import load_keras_file
from ddpm_tf.model import DiffusionModel
from ddpm_tf.runlock import LOCK_FILE, run_lock

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
CURVE_FILE = "curve.csv"  # the training program's curve: step, minutes, losses, bound, FID
DATA_DIR = "data"  # the run's decoded training data (pixel caches), made before the run starts

__all__ = [
    "CheckpointError",
    "RunConfigError",
    "RunDirectory",
    "config_diff",
    "load_model",
    "training_checkpoint",
]


def training_checkpoint(model: DiffusionModel) -> tf.train.Checkpoint:
    """A `tf.train.Checkpoint` of the model's variables and its (built) optimizer's."""
    return tf.train.Checkpoint(
        model=model.checkpoint_variables(), optimizer=list(model.optimizer.variables)
    )


class RunConfigError(InputError):
    """The run directory belongs to a run with another config."""


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored (truncated, corrupt or from another model)."""


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_diff(
    old: dict, new: dict, ignore: tuple[str, ...] = (), defaults: dict | None = None
) -> list[str]:
    """Dotted keys whose values differ between two nested configs ("a.b: old -> new").

    A key `old` lacks (a config written before the key existed) reads as its value in `defaults`.
    """
    a, b = {**_flatten(_json_roundtrip(defaults or {})), **_flatten(old)}, _flatten(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(f"{p}.") for p in ignore):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            changed.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return changed


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_path(path, f"the run's {path.name}") as scratch:
        scratch.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _json_roundtrip(config: dict) -> dict:
    """The config as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(config))


class RunDirectory:
    """One training run on disk.

    Args:
        path: the directory (created on `open`).
        keep: how many checkpoints to keep (the newest).
        chief: False for a worker of a cluster other than the chief: it writes nothing here.
    """

    def __init__(self, path: str | os.PathLike, keep: int = 3, *, chief: bool = True):
        self.path = Path(path)
        self.keep = check_int(keep, "keep")
        self.chief = chief
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self.data_dir = self.path / DATA_DIR
        self._manager: tf.train.CheckpointManager | None = None

    # ---------------------------------------------------------------------------------- config
    def saved_config(self) -> dict | None:
        """The run's config.json, its old key names (`ddpm_tf.config.OLD_KEYS`) read as the new."""
        file = self.path / CONFIG_FILE
        if not file.exists():
            return None
        try:
            return upgrade(json.loads(file.read_text()))
        except json.JSONDecodeError as err:
            raise RunConfigError(f"{file} is not valid JSON ({err}); fix or remove it.") from err

    def check_config(
        self, config: dict, may_change: tuple[str, ...] = (), defaults: dict | None = None
    ) -> bool:
        """Raises `RunConfigError` if the directory holds a run with another config.

        Keys listed in `may_change` (dotted prefixes, e.g. "train.steps") may differ: a finished run
        can be extended. A key the saved config lacks counts as its value in `defaults` (a run saved
        before the key existed). Returns True if the directory already holds this run. Writes nothing.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunConfigError(f"run directory {self.path} exists and is not a directory.")
        saved = self.saved_config()
        if saved is None:
            if self.path.is_dir() and any(
                p.name not in (DATA_DIR, LOCK_FILE) for p in self.path.iterdir()
            ):
                raise RunConfigError(
                    f"{self.path} is not empty and holds no {CONFIG_FILE}: it is not a run "
                    "directory. Choose another --run-dir."
                )
            return False
        changes = config_diff(saved, _json_roundtrip(config), may_change, defaults)
        if changes:
            raise RunConfigError(
                f"{self.path} holds a run with a different config; refusing to overwrite it. "
                f"Differences (saved -> requested): {'; '.join(changes)}. "
                "Use another --run-dir for a new run, or the saved values to resume this one."
            )
        return True

    def lock(self) -> contextlib.AbstractContextManager:
        """The run's writer lock (`ddpm_tf.runlock.run_lock`), for the chief, which writes here;
        nothing for the other workers of a cluster. Raises `RunLockedError` if another process
        trains the directory."""
        return run_lock(self.path) if self.chief else contextlib.nullcontext()

    def open(self, config: dict, model: DiffusionModel) -> None:
        """Creates the directory and writes the config and the model's Keras config (the chief)."""
        if not self.chief:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.path / CONFIG_FILE, _json_roundtrip(config))
        _write_json_atomic(self.path / MODEL_FILE, keras.saving.serialize_keras_object(model))

    # ----------------------------------------------------------------------------- checkpoints
    def _manager_for(self, model: DiffusionModel) -> tf.train.CheckpointManager:
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                training_checkpoint(model),
                self.checkpoint_dir,
                max_to_keep=self.keep,
                checkpoint_name="ckpt",
            )
        return self._manager

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.checkpoint_dir)

    def save(self, model: DiffusionModel) -> str:
        """Writes a checkpoint numbered by the model's step counter; returns its path prefix.

        A worker that is not the chief saves into a temporary directory and removes it (the path
        returned no longer exists): TensorFlow's pattern for the other workers of a cluster.
        A save that fails raises `WriteError` ("could not write checkpoint to ...: reason") and
        removes what it wrote (`_discard_unrecorded`): the directory's newest checkpoint is still
        the previous one, and a rerun resumes from it.
        """
        if self.chief:
            manager = self._manager_for(model)
            prefix = self.checkpoint_dir / f"ckpt-{model.step}"
            clean_up = lambda: self._discard_unrecorded(prefix)  # noqa: E731
            with writing("checkpoint", prefix, tensorflow=True, on_error=clean_up):
                return manager.save(checkpoint_number=model.step)
        with tempfile.TemporaryDirectory(prefix="ddpm-train-worker-") as scratch:
            manager = tf.train.CheckpointManager(training_checkpoint(model), scratch, max_to_keep=1)
            with writing("a worker's scratch checkpoint", scratch, tensorflow=True):
                return manager.save(checkpoint_number=model.step)

    def _discard_unrecorded(self, prefix: Path) -> None:
        """Removes the files of a failed save of `prefix`: TensorFlow's temporary ones, and the
        checkpoint's own unless the state file names it (it failed after recording it: sweeping
        the old ones or writing the state a second time, and the checkpoint is complete)."""
        shutil.rmtree(f"{prefix}_temp", ignore_errors=True)
        for scratch in self.checkpoint_dir.glob("checkpoint.tmp*"):  # the state file's own
            scratch.unlink(missing_ok=True)
        state = tf.train.get_checkpoint_state(self.checkpoint_dir)
        recorded = state is not None and any(
            Path(path).name == prefix.name for path in state.all_model_checkpoint_paths
        )
        if not recorded:
            for part in self.checkpoint_dir.glob(f"{prefix.name}.*"):
                part.unlink(missing_ok=True)

    def restore(self, model: DiffusionModel) -> int:
        """Restores the newest checkpoint into a compiled `model`; returns its step (0 if none)."""
        manager = self._manager_for(model)
        latest = manager.latest_checkpoint
        if latest is None:
            return 0
        try:
            manager.checkpoint.restore(latest).assert_consumed()
        except Exception as err:  # noqa: BLE001  (any failure to read it is reported as such)
            older = [p for p in manager.checkpoints if p != latest]
            hint = (
                f" Older checkpoints: {older}; delete {latest}.* to resume from the newest of them,"
                if older
                else ""
            )
            raise CheckpointError(
                f"checkpoint {latest} cannot be restored into this model "
                f"({type(err).__name__}: {str(err).splitlines()[0]}).{hint} or start a new "
                "--run-dir."
            ) from err
        return model.step


def load_model(path: str | os.PathLike, compile: bool = False) -> DiffusionModel:
    """A `DiffusionModel` from a `.keras` file or from a run directory's newest checkpoint.

    For inference (sampling, evaluation, export): the optimizer is not restored.
    """
    path = Path(path)
    if path.suffix == ".keras":
        fix = "pass a .keras file saved from a DiffusionModel, or a run directory of ddpm-train."
        model = load_keras_file(path, "model file", fix, compile=compile)
    elif path.is_dir():
        spec = path / MODEL_FILE
        if not spec.is_file():
            raise FileNotFoundError(
                f"{path} is not a run directory (no {MODEL_FILE}); pass a run directory written "
                "by ddpm-train or a .keras file."
            )
        try:
            described = json.loads(spec.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(
                f"{spec} is not valid JSON ({err}): it was cut short or edited. Rerunning ddpm-train "
                f"on {path} writes it again."
            ) from None
        model = keras.saving.deserialize_keras_object(described)
        _restore_newest(model, path, spec)
    else:
        raise FileNotFoundError(f"{path} is neither a .keras file nor a run directory.")
    if not isinstance(model, DiffusionModel):
        raise InputError(f"{path} holds a {type(model).__name__}, not a DiffusionModel.")
    return model


READ_ATTEMPTS = 5  # how often a reader retries when a trainer replaced the checkpoint it read


def _restore_newest(model: DiffusionModel, path: Path, spec: Path) -> None:
    """Restores the newest complete checkpoint of the run directory `path` into `model`.

    The run may be training (readers take no lock): the `checkpoint` state file names complete
    checkpoints only, but the trainer may delete the one it named (keeping the newest
    `run.keep`) while it is read; then the newer one is read instead.
    """
    directory = path / CHECKPOINT_DIR
    for attempt in range(READ_ATTEMPTS):
        latest = tf.train.latest_checkpoint(directory)
        if latest is None:
            raise FileNotFoundError(f"run directory {path} holds no checkpoint yet.")
        try:
            status = tf.train.Checkpoint(model=model.checkpoint_variables()).restore(latest)
            status.assert_existing_objects_matched().expect_partial()  # optimizer not needed
            return
        except Exception as err:  # noqa: BLE001  (any failure to read it is reported as such)
            newer = tf.train.latest_checkpoint(directory)
            if newer is not None and newer != latest and attempt + 1 < READ_ATTEMPTS:
                continue
            raise CheckpointError(
                f"checkpoint {latest} cannot be restored into the model of {spec} "
                f"({type(err).__name__}: {str(err).splitlines()[0]})."
            ) from err
