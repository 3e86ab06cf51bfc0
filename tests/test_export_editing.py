"""Exported editing: the `inpaint` and `img2img` functions of SavedModel, TFLite and ONNX exports
reproduce the in-memory `model.inpaint` / `model.img2img` (portable noise), keep the known pixels
exactly, and their settings are refused before any work when they cannot be followed."""

import json

import numpy as np
import pytest
from test_export import SEED, _assert_images_close, _train

from ddpm_tf import SamplingSpec
from ddpm_tf.errors import InputError
from ddpm_tf.export.ddpm_export import main
from ddpm_tf.exporting import ExportOptions, export_model, open_function, verify_export
from ddpm_tf.pixels import scale_to_unit, unit_to_uint8

N = 3


def _inputs(image_shape=(8, 8, 1)) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 8, 8, 1] and a float mask [N, 8, 8, 1] (the left half known)."""
    images = np.random.default_rng(1).integers(0, 256, (N, *image_shape), dtype=np.uint8)
    mask = np.zeros((N, *image_shape[:2], 1), np.float32)
    mask[:, :, : image_shape[1] // 2] = 1.0
    return images, mask


def _in_memory(model, function, images, mask, spec, **settings) -> np.ndarray:
    x = scale_to_unit(images)
    if function == "inpaint":
        return unit_to_uint8(model.inpaint(x, mask, SEED, spec=spec, **settings)).numpy()
    return unit_to_uint8(model.img2img(x, settings["strength"], SEED, spec=spec)).numpy()


@pytest.fixture(scope="module")
def unconditional():
    return _train()


def test_saved_model_inpaint_and_img2img_from_the_command_line(unconditional, tmp_path):
    path = tmp_path / "tiny.keras"
    unconditional.save(path)
    out = tmp_path / "out"
    argv = [str(path), "--format", "saved_model", "--out", str(out), "--method", "ancestral"]
    argv += ["--steps", "6", "--functions", "sample", "inpaint", "img2img", "--resample", "2"]
    argv += ["--jump", "2", "--strength", "0.6", "--num-samples", str(N)]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passed"] and manifest["functions"] == ["sample", "inpaint", "img2img"]
    assert manifest["editing"]["inpaint"]["network_calls"] == 6 + 2 * 2  # two jumps of 2 steps
    assert manifest["editing"]["img2img"] == {"strength": 0.6}
    keys = {a["function"]: a["key"] for a in manifest["artifacts"]}
    assert keys == {"sample": "serving_default", "inpaint": "inpaint", "img2img": "img2img"}
    spec = SamplingSpec("ancestral", 6, noise_source="portable")
    images, mask = _inputs()
    feeds = {"input_images": images, "mask": mask, "seed": np.asarray(SEED, np.int32)}
    for function, settings in (
        ("inpaint", {"resample": 2, "jump": 2}),
        ("img2img", {"strength": 0.6}),
    ):
        runner = open_function("saved_model", out / "saved_model", function)
        got = runner({k: v for k, v in feeds.items() if k in runner.inputs})["images"]
        expected = _in_memory(unconditional, function, images, mask, spec, **settings)
        _assert_images_close(got, expected)
        if function == "inpaint":  # the known pixels are the input's, to the level
            np.testing.assert_array_equal(got[mask[..., 0] > 0.5], images[mask[..., 0] > 0.5])
        else:  # strength 0.6 moves the images, but not to a fresh sample
            assert np.abs(got.astype(int) - images).mean() > 1
    assert verify_export(out)["passed"]


def test_editing_settings_are_refused_before_any_work(unconditional, tmp_path):
    for method, resample, jump, match in (
        ("dpm_solver++", 3, 2, "multistep"),
        ("ddim", 2, 6, "jump=6 must be below the 6"),
    ):
        spec = SamplingSpec(method, 6, noise_source="portable")
        options = ExportOptions(spec=spec, functions=("inpaint",), resample=resample, jump=jump)
        with pytest.raises(InputError, match=match):
            export_model(unconditional, tmp_path / method, options)
    assert not any(tmp_path.iterdir())  # nothing written, not even a partial directory
    for bad, match in (
        ({"functions": ()}, "non-empty subset"),
        ({"functions": ("sample", "paint")}, "non-empty subset"),
        ({"strength": 0.0}, "above 0"),
        ({"strength": 1.5}, "strength"),
        ({"resample": 0}, "resample"),
    ):
        with pytest.raises(InputError, match=match):
            ExportOptions(**bad)
    assert ExportOptions(functions=("img2img", "sample")).functions == ("sample", "img2img")
    argv = [str(tmp_path / "none.keras"), "--out", str(tmp_path / "c"), "--strength", "0.5"]
    assert main(argv) == 2  # --strength without img2img in --functions


@pytest.mark.slow
def test_tflite_and_onnx_editing_of_a_conditional_model_with_guidance(tmp_path):
    model = _train(num_classes=3)
    spec = SamplingSpec("dpm_solver++", 6, noise_source="portable")
    options = ExportOptions(
        formats=("tflite", "onnx"),
        functions=("inpaint", "img2img"),
        spec=spec,
        num_samples=N,
        strength=0.7,
    )
    manifest = export_model(model, tmp_path / "out", options)
    assert manifest["passed"] and len(manifest["artifacts"]) == 4
    images, mask = _inputs()
    labels = np.array([0, 2, 3], np.int32)  # 3: the null class
    for function in ("inpaint", "img2img"):
        for scale in (1.0, 2.5):
            x = scale_to_unit(images)
            guided = {"labels": labels, "guidance_scale": scale}
            if function == "inpaint":
                edited = model.inpaint(x, mask, SEED, spec=spec, **guided)
            else:
                edited = model.img2img(x, 0.7, SEED, spec=spec, **guided)
            expected = unit_to_uint8(edited).numpy()
            feeds = {
                "input_images": images,
                "mask": mask,
                "seed": np.asarray(SEED, np.int32),
                "labels": labels,
                "guidance_scale": np.asarray(scale, np.float32),
            }
            for fmt in ("tflite", "onnx"):
                runner = open_function(fmt, tmp_path / "out" / fmt / f"{function}.{fmt}", function)
                got = runner({k: v for k, v in feeds.items() if k in runner.inputs})["images"]
                _assert_images_close(got, expected)
