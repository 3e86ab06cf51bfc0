"""ddpm-train on a folder of the user's own images: the config rules, the cache, the errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from ddpm_tf import DiffusionModel
from ddpm_tf.config import ConfigError
from ddpm_tf.datasets.pixel_cache import PixelCache
from ddpm_tf.sampling import generate_uint8
from ddpm_tf.training import ddpm_eval as evaluate
from ddpm_tf.training import ddpm_train_presets as cfg
from ddpm_tf.training.ddpm_eval import main as eval_main
from ddpm_tf.training.ddpm_sample import main as sample_main
from ddpm_tf.training.ddpm_train import main as train_main

# A tiny model and a short run; the folder64 preset's data settings are kept except the size.
TINY = [
    "data.image_size=8",
    "model.preset=tiny_8",
    "model.ch=16",
    "model.ch_mult=[1, 2]",
    "model.attn_resolutions=[4]",
    "diffusion.num_timesteps=40",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "run.log_every=2",
    "run.checkpoint_every=2",
    "run.eval_every=4",
    "run.eval_batches=1",
    "run.bpd_examples=2",
    "run.num_samples=2",
    "sampling.steps=3",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 20 and 12 small images: circles (PNG) and bars (JPEG), some gray."""
    root = tmp_path_factory.mktemp("own") / "images"
    rng = np.random.default_rng(0)
    for i in range(20):
        yy, xx = np.mgrid[:16, :20]
        disc = ((yy - 8) ** 2 + (xx - 10) ** 2 < rng.integers(9, 40)).astype(np.uint8) * 255
        (root / "circles").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([disc] * 3, -1)).save(root / "circles" / f"{i}.png")
    for i in range(12):
        bars = np.zeros((24, 24), np.uint8)
        bars[:, rng.integers(0, 20) :][:, :4] = 255
        (root / "bars" / "nested").mkdir(parents=True, exist_ok=True)
        Image.fromarray(bars).save(root / "bars" / "nested" / f"{i}.jpg", quality=95)
    return root


def test_images_take_the_folder64_preset_and_no_dataset():
    name, config = cfg.resolve("folder64", ["data.images=/some/dir"])
    assert name == "folder64"
    data = config["data"]
    assert (data["images"], data["dataset"], data["channels"], data["image_size"]) == (
        "/some/dir",
        "",
        3,
        64,
    )


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("digits", ["data.images=/d"], "both set"),  # the digits preset names its dataset
        ("folder64", ["data.images=/d", "data.dataset=mnist"], "both set"),
        ("folder64", [], r"data\.dataset \(a tfds name\) or data\.images"),
        ("folder64", ["data.images=/d", "data.channels=2"], "1 .gray. or 3"),
    ],
)
def test_one_source_of_images(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg.resolve(preset, overrides)


def test_training_on_a_folder_decodes_once_and_resumes(tmp_path, folder, capsys, monkeypatch):
    run = tmp_path / "run"
    command = ["--images", str(folder), "--run-dir", str(run), "data.class_conditional=true"]
    assert train_main([*command, *TINY, "train.steps=2"]) == 0
    out, err = capsys.readouterr()
    assert "decoding images: 32/32" in err
    assert f"{folder} 31 train / 1 test images (8, 8, 3)" in out
    saved = json.loads((run / "config.json").read_text())["data"]
    assert (saved["images"], saved["dataset"], saved["class_conditional"]) == (
        str(folder),
        "",
        True,
    )
    train, test = PixelCache(run / "data" / "train"), PixelCache(run / "data" / "test")
    assert (len(train), len(test), train.num_classes) == (31, 1, 2)
    assert sorted(np.bincount(np.concatenate([train.labels, test.labels]))) == [12, 20]

    grids = []  # the run's sample grid: every class in turn, as the FID samples
    real_generate = DiffusionModel.generate

    def recording(self, *args, labels=None, **kwargs):
        grids.append(None if labels is None else list(labels))
        return real_generate(self, *args, labels=labels, **kwargs)

    monkeypatch.setattr(DiffusionModel, "generate", recording)
    assert train_main([*command, *TINY, "train.steps=4"]) == 0
    out, err = capsys.readouterr()
    assert "resuming at step 2" in out and "decoding" not in err
    assert grids == [[0, 1]]  # run.num_samples=2

    # ddpm-eval measures a folder run on its held-out image, read from the run's cache
    report = tmp_path / "eval"
    options = ["--bpd-examples", "1", "--num-samples", "0", "--out", str(report)]
    assert eval_main([str(run), *options]) == 0
    written = json.loads((report / "report.json").read_text())
    assert written["dataset"] == str(folder) and written["likelihood"]["num_examples"] == 1

    # ... and samples the class-conditional model with every class in turn, guided as asked
    calls = []

    def recording_eval(*args, **kwargs):
        calls.append(kwargs)
        return generate_uint8(*args, **kwargs)

    monkeypatch.setattr(evaluate, "generate_uint8", recording_eval)
    guided = tmp_path / "guided"
    options = ["--bpd-examples", "0", "--num-samples", "5", "--method", "ddim", "--steps", "3"]
    assert eval_main([str(run), *options, "--guidance-scale", "2", "--out", str(guided)]) == 0
    written = json.loads((guided / "report.json").read_text())
    assert written["conditioning"] == {"labels": "every class in turn", "guidance_scale": 2.0}
    assert [list(c["labels"]) for c in calls] == [[0, 1, 0, 1, 0]]
    assert [c["guidance_scale"] for c in calls] == [2.0]
    # ddpm-sample draws the same classes when --labels is left out
    drawn = tmp_path / "drawn"
    assert sample_main([str(run), *options[2:], "--out", str(drawn)]) == 0
    assert list(np.load(drawn / "samples.npz")["labels"]) == [0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "does not exist"),
        ("empty", [], "holds no"),
        ("folder", ["--config", "digits"], "both set"),
        ("folder", ["data.dataset=mnist"], "both set"),
        ("unreadable", [], r"broken\.png cannot be decoded"),
    ],
)
def test_bad_image_input_is_one_line_before_anything_is_written(
    tmp_path, folder, capsys, setup, extra, message
):
    images = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty"}.get(setup, folder)
    if setup == "empty":
        images.mkdir()
    if setup == "unreadable":
        images = tmp_path / "mine"
        images.mkdir()
        for i in range(3):
            (images / f"{i}.png").write_bytes((folder / "circles" / f"{i}.png").read_bytes())
        (images / "broken.png").write_bytes((folder / "circles" / "3.png").read_bytes()[:60])
    run = tmp_path / "run"
    code = train_main(["--images", str(images), "--run-dir", str(run), *extra, *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("ddpm-train: error: ") and len(err[-1].splitlines()) == 1
    assert re.search(message, err[-1]), err[-1]
    assert not run.exists()
