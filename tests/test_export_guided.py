"""The exported guided sampler: SavedModel, TFLite and ONNX carry the classifier's gradient and
reproduce `model.generate(..., classifier=, classifier_scale=)` (portable noise); it is refused
before any work without its classifier, and a classifier without it."""

import json

import numpy as np
import pytest
from helpers import steering_classifier
from test_export import SEED, _assert_images_close, _train

from ddpm_tf import SamplingSpec
from ddpm_tf.errors import InputError
from ddpm_tf.export.ddpm_export import main
from ddpm_tf.exporting import ExportOptions, export_model, open_function, verify_export
from ddpm_tf.pixels import unit_to_uint8

N = 3
LABELS = np.array([0, 2, 1], np.int32)


def _in_memory(model, classifier, spec, scale, **conditioning) -> np.ndarray:
    images = model.generate(
        labels=LABELS,
        seed=SEED,
        classifier=classifier,
        classifier_scale=scale,
        spec=spec,
        **conditioning,
    )
    return unit_to_uint8(images).numpy()


def _run(path, fmt, feeds) -> np.ndarray:
    runner = open_function(fmt, path, "guided")
    return runner({k: v for k, v in feeds.items() if k in runner.inputs})["images"]


def test_the_saved_model_guided_sampler_from_the_command_line(tmp_path):
    model, classifier = _train(), steering_classifier()
    model.save(tmp_path / "tiny.keras")
    classifier.save(tmp_path / "noisy.keras")
    out = tmp_path / "out"
    argv = [str(tmp_path / "tiny.keras"), "--format", "saved_model", "--out", str(out)]
    argv += ["--method", "ddim", "--steps", "6", "--num-samples", str(N)]
    argv += ["--functions", "sample", "guided", "--noisy-classifier", str(tmp_path / "noisy.keras")]
    assert main([*argv, "--classifier-scale", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passed"] and manifest["functions"] == ["sample", "guided"]
    assert manifest["editing"]["guided"] == {
        "classifier_classes": 3,
        "verified_classifier_scale": 2.0,
    }
    spec = SamplingSpec("ddim", 6, noise_source="portable")
    feeds = {"labels": LABELS, "seed": np.asarray(SEED, np.int32)}
    for scale in (0.0, 4.0):
        got = _run(
            out / "saved_model", "saved_model", {**feeds, "classifier_scale": np.float32(scale)}
        )
        _assert_images_close(got, _in_memory(model, classifier, spec, scale))
    unguided = unit_to_uint8(model.generate(N, SEED, spec=spec)).numpy()
    _assert_images_close(
        _run(out / "saved_model", "saved_model", {**feeds, "classifier_scale": np.float32(0)}),
        unguided,
    )
    steered = _run(out / "saved_model", "saved_model", {**feeds, "classifier_scale": np.float32(4)})
    assert np.abs(steered.astype(int) - unguided).mean() > 1
    assert verify_export(out)["passed"]


def test_the_guided_function_and_its_classifier_come_together(tmp_path, capsys):
    model = _train()
    options = ExportOptions(formats=("saved_model",), functions=("guided",))
    with pytest.raises(InputError, match="needs a classifier of noisy images"):
        export_model(model, tmp_path / "a", options)
    with pytest.raises(InputError, match="no guided function"):
        export_model(model, tmp_path / "b", ExportOptions(), classifier=steering_classifier())
    with pytest.raises(InputError, match="classifier_scale"):
        ExportOptions(classifier_scale=-1.0)
    argv = [str(tmp_path / "none.keras"), "--out", str(tmp_path / "c"), "--classifier-scale", "2"]
    assert main(argv) == 2
    assert "--classifier-scale goes with --noisy-classifier" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_tflite_and_onnx_carry_the_gradient_of_a_guided_conditional_sampler(tmp_path):
    model, classifier = _train(num_classes=3), steering_classifier()
    spec = SamplingSpec("dpm_solver++", 6, noise_source="portable")
    options = ExportOptions(
        formats=("tflite", "onnx"), functions=("guided",), spec=spec, num_samples=N
    )
    manifest = export_model(model, tmp_path / "out", options, classifier=classifier)
    assert manifest["passed"] and len(manifest["artifacts"]) == 2
    for guidance, scale in ((0.0, 3.0), (2.0, 1.5)):
        expected = _in_memory(model, classifier, spec, scale, guidance_scale=guidance)
        feeds = {
            "labels": LABELS,
            "seed": np.asarray(SEED, np.int32),
            "guidance_scale": np.float32(guidance),
            "classifier_scale": np.float32(scale),
        }
        for fmt in ("tflite", "onnx"):
            _assert_images_close(
                _run(tmp_path / "out" / fmt / f"guided_sampler.{fmt}", fmt, feeds), expected
            )
