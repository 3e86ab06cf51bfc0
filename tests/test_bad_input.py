"""Bad input to the six programs: exit 2, one error line naming the mistake, nothing written.

One table of cases runs each program in-process through its `main(argv)` on shared fixtures: a
tiny class-conditional and an unconditional run of the embedded digits, damaged copies of them, a
prepared data directory, broken `.keras` files. Around every case each file under the fixtures and
under the case's own directory (its working directory too) is recorded by size, mtime and, for
small files, a hash; a refused command must leave that record as it was: nothing created, changed
or removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_training import SMALL as TRAINING_SMALL

from ddpm_tf import cli
from ddpm_tf.classifier import ImageClassifier
from ddpm_tf.data import image_shape
from ddpm_tf.export.ddpm_export import main as export_main
from ddpm_tf.training.ddpm_classifier import main as classifier_main
from ddpm_tf.training.ddpm_eval import main as eval_main
from ddpm_tf.training.ddpm_prepare import main as prepare_main
from ddpm_tf.training.ddpm_sample import main as sample_main
from ddpm_tf.training.ddpm_train import main as train_main

PROGRAMS: dict[str, Callable[[list[str]], int]] = {
    "ddpm-train": train_main,
    "ddpm-sample": sample_main,
    "ddpm-eval": eval_main,
    "ddpm-classifier": classifier_main,
    "ddpm-prepare": prepare_main,
    "ddpm-export": export_main,
}

# The smallest training on the embedded digits: tests/test_training.py's, one step.
SMALL = [*TRAINING_SMALL, "train.steps=1"]
HASHED_BYTES = 1 << 20  # files up to this size are hashed as well


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The paths the cases name: runs, their damaged copies, the data directory, broken files."""
    base = tmp_path_factory.mktemp("bad_input")
    data = base / "tfds"
    image_shape("sklearn_digits", str(data))  # prepared here, not inside a case
    paths = {"base": base, "data": data}
    for name, extra in (("cond", []), ("uncond", ["data.class_conditional=false"])):
        paths[name] = base / name
        argv = ["--run-dir", str(paths[name]), "--data-dir", str(data), *SMALL, *extra]
        assert train_main(argv) == 0
    paths.update(_damaged_runs(base, paths["cond"], paths["uncond"]))
    paths.update(_broken_keras_files(base))
    return paths


def _copy(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def _damaged_runs(base: Path, cond: Path, uncond: Path) -> dict[str, Path]:
    """Copies of the conditional run, each damaged in one way."""
    other_net = _copy(cond, base / "other_net")  # model.json of a narrower network
    spec = json.loads((other_net / "model.json").read_text())
    spec["config"]["network"]["config"]["ch"] = 8
    (other_net / "model.json").write_text(json.dumps(spec))

    cut_json = _copy(cond, base / "cut_json")  # model.json cut short
    text = (cut_json / "model.json").read_text()
    (cut_json / "model.json").write_text(text[: len(text) // 2])

    foreign = _copy(cond, base / "foreign_checkpoint")  # the unconditional run's checkpoints
    shutil.rmtree(foreign / "checkpoints")
    shutil.copytree(uncond / "checkpoints", foreign / "checkpoints")

    cut_cache = _copy(cond, base / "cut_cache")  # a pixel cache with half its rows
    pixels = cut_cache / "data" / "train" / "pixels.u8"
    pixels.write_bytes(pixels.read_bytes()[: pixels.stat().st_size // 2])

    bad_meta = _copy(cond, base / "bad_meta")  # a cache description that is no JSON
    (bad_meta / "data" / "test" / "meta.json").write_text("{")
    return {
        "bad_meta": bad_meta,
        "other_net": other_net,
        "cut_json": cut_json,
        "foreign_checkpoint": foreign,
        "cut_cache": cut_cache,
    }


def _broken_keras_files(base: Path) -> dict[str, Path]:
    """A `.keras` file that is not a zip, and one cut in half (a valid classifier's)."""
    junk = base / "junk.keras"
    junk.write_bytes(b"this is not a zip archive\n" * 40)
    whole = base / "whole.keras"
    ImageClassifier((8, 8, 1), 10, width=4, feature_dim=8).save(whole)  # untrained: only bytes
    cut = base / "cut.keras"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return {"junk_keras": junk, "cut_keras": cut}


# ------------------------------------------------------------------------- what a case sets up
def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _images(tmp: Path) -> None:
    for i in range(4):
        _png(tmp / "images" / f"{i}.png", i)


def _broken_image(tmp: Path) -> None:
    _images(tmp)
    (tmp / "images" / "broken.png").write_bytes((tmp / "images" / "0.png").read_bytes()[:60])


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_text(text)

    return setup


def _mkdir(relative: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / relative).mkdir(parents=True)


def _bad_idx(tmp: Path) -> None:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    names += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in names:
        _write(f"idx/{name}", "not an idx file")(tmp)


def _nothing(tmp: Path) -> None:
    pass


@dataclass(frozen=True)
class Case:
    """One bad command: the program, its arguments ({tmp}, {data} and the `world` names are
    filled in), the text its error line must hold, what it needs on disk, its environment."""

    id: str
    program: str
    argv: tuple[str, ...]
    names: str  # a fragment of the expected error line
    setup: Callable[[Path], None] = _nothing
    env: dict[str, str] = field(default_factory=dict)
    decodes: bool = False  # found while decoding: the new run directory is made, then removed
    locks: bool = False  # found under the run's lock: its .lock is made, then removed


def case(
    id: str,
    program: str,
    argv: list[str],
    names: str,
    setup: Callable[[Path], None] = _nothing,
    env: dict[str, str] | None = None,
    decodes: bool = False,
    locks: bool = False,
) -> Case:
    """A `Case`, written as one line of the table."""
    return Case(id, program, tuple(argv), names, setup, env or {}, decodes, locks)


TRAIN = ["--data-dir", "{data}", *SMALL]  # a new run in {tmp}/run unless a case says otherwise
NEW_RUN = ["--run-dir", "{tmp}/run", *TRAIN]
CLUSTER = '{"cluster": {"worker": ["localhost:2222", "localhost:2223"]}'
SAMPLE = ["--out", "{tmp}/out", "--num-samples", "2", "--method", "ddim", "--steps", "2"]
EVAL = ["--data-dir", "{data}", "--out", "{tmp}/out", "--bpd-examples", "0", "--num-samples", "2"]
EVAL_RUN = ["{cond}", *EVAL, "--method", "ddim", "--steps", "2"]
CLASSIFIER = ["--dataset", "sklearn_digits", "--data-dir", "{data}", "--epochs", "1"]
EXPORT = ["--out", "{tmp}/out", "--format", "saved_model", "--steps", "2"]

# One case a line: id, program, argv, a fragment of its error line (then setup, env, decodes,
# locks).
# fmt: off
CASES = [
    # ddpm-train: configs and overrides
    case("train-unknown-preset", "ddpm-train", ["--config", "nosuch", *NEW_RUN], "unknown config preset 'nosuch'"),
    case("train-unknown-key", "ddpm-train", [*NEW_RUN, "train.stepz=3"], "unknown config key 'train.stepz'"),
    case("train-wrong-type", "ddpm-train", [*NEW_RUN, "train.batch_size=abc"], "train.batch_size must be a int"),
    case("train-out-of-range", "ddpm-train", [*NEW_RUN, "train.learning_rate=-1"], "train.learning_rate must be > 0"),
    case("train-betas-outside-0-1", "ddpm-train", [*NEW_RUN, "diffusion.num_timesteps=10"], "must lie strictly inside (0, 1); index 5 has 1.1155"),
    case("train-unknown-schedule", "ddpm-train", [*NEW_RUN, "diffusion.schedule=steep"], "Unknown beta schedule 'steep'"),
    case("train-sampling-section", "ddpm-train", [*NEW_RUN, "sampling.eta=2"], "[sampling]"),
    case("train-precision", "ddpm-train", [*NEW_RUN, "train.mixed_precision='float64'"], "train.mixed_precision must be false"),
    case("train-override-without-value", "ddpm-train", [*NEW_RUN, "train.steps"], "must look like section.key=value"),
    case("train-missing-toml", "ddpm-train", ["--config", "{tmp}/none.toml", *NEW_RUN], "none.toml does not exist"),
    case("train-malformed-toml", "ddpm-train", ["--config", "{tmp}/bad.toml", *NEW_RUN], "is not valid TOML", _write("bad.toml", "[train\nsteps = 3\n")),
    case("train-toml-not-a-table", "ddpm-train", ["--config", "{tmp}/flat.toml", *NEW_RUN], "'steps' must be a [section] table", _write("flat.toml", "steps = 3\n")),
    # ddpm-train: data
    case("train-unknown-dataset", "ddpm-train", [*NEW_RUN, "data.dataset=no_such_set"], "'no_such_set' is not a known tfds dataset"),
    case("train-no-dataset", "ddpm-train", [*NEW_RUN, "data.dataset=''"], "set data.dataset"),
    case("train-dataset-not-prepared", "ddpm-train", [*NEW_RUN, "data.dataset=mnist"], "'mnist' is not prepared"),
    case("train-unknown-split", "ddpm-train", [*NEW_RUN, "data.test_split=validation"], "'validation' is not a split"),
    case("train-missing-folder", "ddpm-train", ["--images", "{tmp}/nowhere", *NEW_RUN, "data.image_size=8"], "nowhere does not exist"),
    case("train-empty-folder", "ddpm-train", ["--images", "{tmp}/empty", *NEW_RUN, "data.image_size=8"], "holds no .png", _mkdir("empty")),
    case("train-corrupt-image", "ddpm-train", ["--images", "{tmp}/images", *NEW_RUN, "data.image_size=8"], "broken.png cannot be decoded", _broken_image, decodes=True),
    case("train-two-channels", "ddpm-train", ["--images", "{tmp}/images", *NEW_RUN, "data.image_size=8", "data.channels=2"], "data.channels must be 1 (gray) or 3", _images),
    case("train-corrupt-pixel-cache", "ddpm-train", ["--run-dir", "{cut_cache}", *TRAIN], "train/pixels.u8 has 47904 bytes where 1497 images of (8, 8, 1) need 95808", locks=True),
    case("train-corrupt-cache-description", "ddpm-train", ["--run-dir", "{bad_meta}", *TRAIN], "test/meta.json is not a valid pixel cache description", locks=True),
    # ddpm-train: run directories and checkpoints
    case("train-other-config", "ddpm-train", ["--run-dir", "{cond}", *TRAIN, "model.ch=32"], "model.ch: 16 -> 32"),
    case("train-foreign-checkpoint", "ddpm-train", ["--run-dir", "{foreign_checkpoint}", *TRAIN, "train.steps=2"], "cannot be restored into this model", locks=True),
    case("train-run-dir-is-a-file", "ddpm-train", NEW_RUN, "exists and is not a directory", _write("run", "a file")),
    case("train-foreign-directory", "ddpm-train", NEW_RUN, "is not a run directory", _write("run/notes.txt", "mine")),
    case("train-missing-fid-classifier", "ddpm-train", [*NEW_RUN, "run.fid_samples=4", "run.classifier='{tmp}/none.keras'"], "none.keras' does not exist"),
    case("train-junk-fid-classifier", "ddpm-train", [*NEW_RUN, "run.fid_samples=4", "run.classifier='{junk_keras}'"], "run.classifier: classifier model '{junk_keras}' is not a .keras archive"),
    case("train-cut-fid-classifier", "ddpm-train", [*NEW_RUN, "run.fid_samples=4", "run.classifier='{cut_keras}'"], "run.classifier: classifier model '{cut_keras}' is not a .keras archive"),
    # ddpm-train: TF_CONFIG
    case("train-tf-config-unset", "ddpm-train", [*NEW_RUN, "train.strategy=multi_worker"], "TF_CONFIG environment variable, which is not set"),
    case("train-tf-config-not-json", "ddpm-train", [*NEW_RUN, "train.strategy=multi_worker"], "TF_CONFIG is not valid JSON", env={"TF_CONFIG": "{cluster: workers"}),
    case("train-tf-config-index", "ddpm-train", [*NEW_RUN, "train.strategy=multi_worker"], "is not a task of its cluster (worker 0..1)", env={"TF_CONFIG": CLUSTER + ', "task": {"type": "worker", "index": 2}}'}),
    case("train-tf-config-no-task", "ddpm-train", [*NEW_RUN, "train.strategy=multi_worker"], "TF_CONFIG's task None", env={"TF_CONFIG": CLUSTER + "}"}),
    case("train-unknown-strategy", "ddpm-train", [*NEW_RUN, "train.strategy=everywhere"], "'everywhere'"),
    # ddpm-sample
    case("sample-missing-run", "ddpm-sample", ["{tmp}/nothing", *SAMPLE], "nothing is neither a .keras file nor a run directory"),
    case("sample-checkpoint-of-another-network", "ddpm-sample", ["{other_net}", *SAMPLE], "cannot be restored into the model of"),
    case("eval-checkpoint-of-another-network", "ddpm-eval", ["{other_net}", *EVAL], "cannot be restored into the model of"),
    case("sample-truncated-model-json", "ddpm-sample", ["{cut_json}", *SAMPLE], "model.json is not valid JSON"),
    case("sample-junk-keras", "ddpm-sample", ["{junk_keras}", *SAMPLE], "junk.keras' is not a .keras archive"),
    case("sample-cut-keras", "ddpm-sample", ["{cut_keras}", *SAMPLE], "cut.keras' is not a .keras archive"),
    case("sample-steps-0", "ddpm-sample", ["{cond}", *SAMPLE, "--steps", "0"], "steps"),
    case("sample-eta-nan", "ddpm-sample", ["{cond}", *SAMPLE, "--eta", "nan"], "eta must be a number in [0.0, 1.0], got nan"),
    case("sample-label-out-of-range", "ddpm-sample", ["{cond}", *SAMPLE, "--labels", "11"], "`labels` must lie in [0, 11); got values from 11 to 11"),
    case("sample-label-negative", "ddpm-sample", ["{cond}", *SAMPLE, "--labels", "-1"], "`labels` must lie in [0, 11); got values from -1 to -1"),
    case("sample-label-in-a-later-batch", "ddpm-sample", ["{cond}", *SAMPLE, "--batch-size", "1", "--labels", "0,11"], "got values from 0 to 11"),
    case("sample-labels-unconditional", "ddpm-sample", ["{uncond}", *SAMPLE, "--labels", "1"], "`labels` were given but the network is unconditional"),
    case("sample-labels-not-ints", "ddpm-sample", ["{cond}", *SAMPLE, "--labels", "3,x"], "--labels must be integers"),
    case("sample-labels-count", "ddpm-sample", ["{cond}", *SAMPLE, "--labels", "1,2,3"], "--labels has 3 entries for --num-samples 2"),
    case("sample-guidance-nan", "ddpm-sample", ["{cond}", *SAMPLE, "--guidance-scale", "nan"], "--guidance-scale: must be a finite number, got 'nan'"),
    case("sample-guidance-unconditional", "ddpm-sample", ["{uncond}", *SAMPLE, "--guidance-scale", "2"], "applies to class-conditional models"),
    case("sample-too-many", "ddpm-sample", ["{cond}", *SAMPLE, "--num-samples", "1000000000000"], "--num-samples 1000000000000 needs 58.2 TiB"),
    case("sample-zero-samples", "ddpm-sample", ["{cond}", *SAMPLE, "--num-samples", "0"], "num_samples must be an int >= 1"),
    case("sample-batch-size-0", "ddpm-sample", ["{cond}", *SAMPLE, "--batch-size", "0"], "batch"),
    case("sample-output-exists", "ddpm-sample", ["{cond}", *SAMPLE], "samples.png'] exist; pass --overwrite", _write("out/samples.png", "mine")),
    case("sample-seed-triple", "ddpm-sample", ["{cond}", *SAMPLE, "--seed", "1", "2", "3"], "--seed takes one int or two"),
    case("sample-unknown-method", "ddpm-sample", ["{cond}", *SAMPLE, "--method", "euler"], "invalid choice: 'euler'"),
    # ddpm-eval
    case("eval-missing-run", "ddpm-eval", ["{tmp}/nothing", *EVAL], "nothing is neither a .keras file nor a run directory"),
    case("eval-truncated-model-json", "ddpm-eval", ["{cut_json}", *EVAL], "model.json is not valid JSON"),
    case("eval-junk-classifier", "ddpm-eval", [*EVAL_RUN, "--classifier", "{junk_keras}"], "junk.keras' is not a .keras archive"),
    case("eval-cut-classifier", "ddpm-eval", [*EVAL_RUN, "--classifier", "{cut_keras}"], "cut.keras' is not a .keras archive"),
    case("eval-missing-classifier", "ddpm-eval", [*EVAL_RUN, "--classifier", "{tmp}/none.keras"], "none.keras' does not exist"),
    case("eval-missing-inception", "ddpm-eval", [*EVAL_RUN, "--inception-weights", "{tmp}/none.h5"], "none.h5'"),
    case("eval-inception-not-h5", "ddpm-eval", [*EVAL_RUN, "--inception-weights", "{tmp}/w.bin"], "must be a Keras .h5", _write("w.bin", "weights")),
    case("eval-report-exists", "ddpm-eval", EVAL_RUN, "report.json exists; pass --overwrite", _write("out/report.json", "{}")),
    case("eval-compare-syntax", "ddpm-eval", [*EVAL_RUN, "--classifier", "{junk_keras}", "--compare", "ddim"], "--compare item 'ddim'"),
    case("eval-compare-without-features", "ddpm-eval", [*EVAL_RUN, "--compare", "ddim:2"], "--compare scores samples"),
    case("eval-guidance-unconditional", "ddpm-eval", ["{uncond}", *EVAL, "--guidance-scale", "2"], "applies to class-conditional models"),
    case("eval-unknown-dataset", "ddpm-eval", [*EVAL_RUN, "--dataset", "no_such_set"], "'no_such_set' is not a known tfds dataset"),
    case("eval-unknown-split", "ddpm-eval", [*EVAL_RUN, "--split", "validation"], "split='validation' is not a split of 'sklearn_digits'"),
    case("eval-too-many", "ddpm-eval", [*EVAL_RUN, "--num-samples", "1000000000000"], "--num-samples 1000000000000 needs 58.2 TiB"),
    # ddpm-classifier
    case("classifier-out-not-keras", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.h5"], "--out must end with .keras"),
    case("classifier-out-exists", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.keras"], "m.keras'] exist; pass --overwrite", _write("m.keras", "mine")),
    case("classifier-epochs-0", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.keras", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    case("classifier-batch-0", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.keras", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    case("classifier-learning-rate-nan", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.keras", "--learning-rate", "nan"], "--learning-rate must be > 0, got nan"),
    case("classifier-seed-pair", "ddpm-classifier", [*CLASSIFIER, "--out", "{tmp}/m.keras", "--seed", "1", "2"], "--seed takes one int here"),
    case("classifier-no-dataset", "ddpm-classifier", ["--out", "{tmp}/m.keras"], "--dataset and --out are required (or --noisy RUN_DIR)"),
    case("classifier-unknown-dataset", "ddpm-classifier", ["--dataset", "no_such_set", "--data-dir", "{data}", "--out", "{tmp}/m.keras"], "'no_such_set' is not a known tfds dataset"),
    case("classifier-not-prepared", "ddpm-classifier", ["--dataset", "mnist", "--data-dir", "{data}", "--out", "{tmp}/m.keras"], "'mnist' is not prepared"),
    case("classifier-unknown-split", "ddpm-classifier", [*CLASSIFIER, "--test-split", "validation", "--out", "{tmp}/m.keras"], "split='validation' is not a split of 'sklearn_digits'"),
    # ddpm-prepare
    case("prepare-unknown-name", "ddpm-prepare", ["cifar10", "--data-dir", "{tmp}/d"], "invalid choice: 'cifar10'"),
    case("prepare-no-data-dir", "ddpm-prepare", ["mnist5k"], "the following arguments are required: --data-dir"),
    case("prepare-missing-source", "ddpm-prepare", ["mnist", "--data-dir", "{tmp}/d", "--source", "{tmp}/nowhere"], "nowhere' is not a directory"),
    case("prepare-source-for-embedded", "ddpm-prepare", ["sklearn_digits", "--data-dir", "{tmp}/d", "--source", "{tmp}"], "is embedded and takes no source_dir"),
    case("prepare-bad-idx", "ddpm-prepare", ["mnist", "--data-dir", "{tmp}/d", "--source", "{tmp}/idx"], "not a 60000-example image idx file", _bad_idx),
    case("prepare-already-prepared", "ddpm-prepare", ["sklearn_digits", "--data-dir", "{data}"], "is already prepared"),
    case("prepare-data-dir-is-a-file", "ddpm-prepare", ["mnist5k", "--data-dir", "{tmp}/d"], "exists but is not a directory", _write("d", "a file")),
    # ddpm-export
    case("export-unknown-format", "ddpm-export", ["{cond}", *EXPORT, "--format", "coreml"], "invalid choice: 'coreml'"),
    case("export-output-not-empty", "ddpm-export", ["{cond}", *EXPORT], "is not empty", _write("out/keep.txt", "mine")),
    case("export-output-is-a-file", "ddpm-export", ["{cond}", *EXPORT], "is a file", _write("out", "mine")),
    case("export-quantization", "ddpm-export", ["{cond}", *EXPORT, "--tflite-quantization", "int4"], "invalid choice: 'int4'"),
    case("export-opset", "ddpm-export", ["{cond}", *EXPORT, "--onnx-opset", "12"], "invalid choice: 12"),
    case("export-philox-noise", "ddpm-export", ["{cond}", *EXPORT, "--noise-source", "philox"], "exports need noise_source='portable'"),
    case("export-zero-samples", "ddpm-export", ["{cond}", *EXPORT, "--num-samples", "0"], "num_samples must be an int >= 1"),
    case("export-guidance-nan", "ddpm-export", ["{cond}", *EXPORT, "--guidance-scale", "nan"], "--guidance-scale: must be a finite number, got 'nan'"),
    case("export-too-many", "ddpm-export", ["{cond}", *EXPORT, "--num-samples", "1000000000000"], "--num-samples 1000000000000 needs 58.2 TiB"),
    case("export-missing-run", "ddpm-export", ["{tmp}/nothing", *EXPORT], "nothing is neither a .keras file"),
    case("export-checkpoint-of-another-network", "ddpm-export", ["{other_net}", *EXPORT], "cannot be restored into the model of"),
    case("export-junk-keras", "ddpm-export", ["{junk_keras}", *EXPORT], "junk.keras' is not a .keras archive"),
    case("export-cut-keras", "ddpm-export", ["{cut_keras}", *EXPORT], "cut.keras' is not a .keras archive"),
    case("export-truncated-model-json", "ddpm-export", ["{cut_json}", *EXPORT], "model.json is not valid JSON"),
]
# fmt: on


def _snapshot(roots: list[Path], dir_times: bool = True) -> dict[str, tuple]:
    """Every path under `roots`: a directory as ("dir", mtime_ns), so that an entry made and
    removed again shows too (not with `dir_times` False), a file as (size, mtime_ns, sha256 or
    None if it is large)."""
    record = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))]:
            if path.is_dir():
                record[str(path)] = ("dir", path.stat().st_mtime_ns if dir_times else None)
            elif path.exists():
                stat = path.stat()
                small = stat.st_size <= HASHED_BYTES
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if small else None
                record[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
    return record


def _changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    new = [f"new {p}" for p in sorted(set(after) - set(before))]
    gone = [f"removed {p}" for p in sorted(set(before) - set(after))]
    changed = [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return new + gone + changed


def test_the_table_holds_every_program():
    assert {c.program for c in CASES} == set(PROGRAMS) and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_exit_2_one_line_and_writes_nothing(bad, world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default output path would land here, and be seen
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in bad.env.items():
        monkeypatch.setenv(name, value)
    bad.setup(tmp_path)
    names = {k: str(v) for k, v in world.items()} | {"tmp": str(tmp_path)}
    argv = [arg.format(**names) for arg in bad.argv]
    roots = [world["base"], tmp_path]
    dir_times = not (bad.decodes or bad.locks)  # their made and removed entries aside
    before = _snapshot(roots, dir_times=dir_times)
    capsys.readouterr()
    try:
        code = PROGRAMS[bad.program](argv)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == cli.EXIT_BAD_INPUT, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{bad.program}: error: "), err
    assert bad.names.format(**names) in lines[0], err
    assert _changes(before, _snapshot(roots, dir_times=dir_times)) == []
