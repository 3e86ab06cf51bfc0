"""The training curve of a run: `curve.csv`, one row per logged step, for plots and spreadsheets.

Columns (`COLUMNS`): the step; the minutes of training wall time so far (evaluations included,
summed over resumed sessions); the training losses averaged over the last `run.log_every` steps
and the learning rate; the test losses of the evaluation; the exact bound on its fixed subset of
test images with its standard error; and the FID of a few samples with its real-vs-real floor at
the same count. A cell is empty where that step logged nothing of its kind.

Rows are written when their step ends, so a killed run leaves the rows of every finished step;
a resumed run drops the rows after its checkpoint (the steps it trains again) and counts its
minutes on from the last row it keeps.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import keras

from ddpm_tf.files import atomic_path, writing

COLUMNS = (
    "step",
    "minutes",
    "loss",
    "mse",
    "vb",
    "grad_norm",
    "lr",
    "test_loss",
    "test_mse",
    "test_vb",
    "test_vlb_bpd",
    "bpd",
    "bpd_stderr",
    "fid",
    "fid_floor",
)


def read_curve(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """The rows of a curve.csv as dicts of floats (None for an empty cell); step as int."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            key: (int(value) if key == "step" else float(value)) if value else None
            for key, value in row.items()
            if key in COLUMNS  # a row cut short by a kill reads None for its missing cells
        }
        for row in rows
    ]


class TrainingCurve(keras.callbacks.Callback):
    """Collects the values logged at a step (`record`) and appends them as one row when it ends.

    Place it after the callbacks that record, so that their values of a step share one row.
    """

    def __init__(self, path: str | os.PathLike, start_step: int):
        super().__init__()
        self.path = Path(path)
        kept = self._resume(start_step)
        self._minutes0 = kept[-1]["minutes"] if kept else 0.0
        self._t0 = time.perf_counter()
        self._step: int | None = None
        self._row: dict[str, float] = {}

    def _resume(self, start_step: int) -> list[dict[str, float | None]]:
        """Keeps the rows up to `start_step` (rewritten atomically) and returns them."""
        rows = read_curve(self.path) if self.path.is_file() else []
        kept = [row for row in rows if row["step"] <= start_step]
        if not self.path.is_file() or len(kept) != len(rows):
            with (
                atomic_path(self.path, "training curve") as scratch,
                open(scratch, "w", newline="") as f,
            ):
                writer = csv.DictWriter(f, COLUMNS)
                writer.writeheader()
                writer.writerows(
                    {k: "" if v is None else v for k, v in row.items() if k in COLUMNS}
                    for row in kept
                )
        return kept

    @property
    def minutes(self) -> float:
        """Training wall time of the run so far, in minutes."""
        return self._minutes0 + (time.perf_counter() - self._t0) / 60

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()

    def record(self, step: int, values: dict[str, float]) -> None:
        """Adds `values` (names of `COLUMNS`; others are left to TensorBoard) to the row of `step`."""
        if self._step is not None and step != self._step:
            self.flush()
        self._step = step
        self._row.update({k: v for k, v in values.items() if k in COLUMNS and math.isfinite(v)})

    def flush(self) -> None:
        """Appends the pending row, if any."""
        if self._step is None:
            return
        values = {k: f"{v:.7g}" for k, v in self._row.items()}
        row = {"step": self._step, "minutes": f"{self.minutes:.3f}", **values}
        with writing("training curve", self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        self._step, self._row = None, {}

    def on_train_batch_end(self, batch, logs=None):
        self.flush()

    def on_train_end(self, logs=None):
        self.flush()
