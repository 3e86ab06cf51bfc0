"""`export_model`: writes the requested formats, runs each artifact, and writes manifest.json."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddpm_tf import editing
from ddpm_tf.errors import InputError, InputTypeError
from ddpm_tf.exporting import graphs
from ddpm_tf.exporting.onnx import write_onnx
from ddpm_tf.exporting.options import ExportOptions
from ddpm_tf.exporting.runtime import open_function
from ddpm_tf.exporting.saved_model import write_saved_model
from ddpm_tf.exporting.tflite import write_tflite
from ddpm_tf.exporting.verify import TOLERANCES, ExportVerificationError, Tolerance, compare
from ddpm_tf.files import partial_sibling, replace_directory, writing
from ddpm_tf.model import DiffusionModel
from ddpm_tf.sampling import Sampler

MANIFEST = "manifest.json"
VERIFICATION_DATA = "verification.npz"
MANIFEST_VERSION = 1


def check_model(model) -> DiffusionModel:
    if not isinstance(model, DiffusionModel):
        raise InputTypeError(f"Expected a ddpm_tf.DiffusionModel, got {type(model).__name__}.")
    return model


def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuses an existing non-empty directory (or a file) unless `overwrite`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"`out` {str(out)!r} is a file; pass a directory path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"`out` {str(out)!r} is not empty; choose another directory or pass overwrite=True "
            "(--overwrite)."
        )
    return out


def build_sampler(model: DiffusionModel, options: ExportOptions, classifier=None) -> Sampler:
    """The in-memory sampler that the exports reproduce: `model.sampler(options.spec)`, with the
    classifier of the guided function (which needs one, and nothing else takes one)."""
    if ("guided" in options.functions) != (classifier is not None):
        raise InputError(
            "the guided function needs a classifier of noisy images (--noisy-classifier PATH)"
            if classifier is None
            else "a classifier was given but no guided function: add guided to the functions."
        )
    return model.sampler(options.spec, classifier=classifier)


def inpainting_path(sampler: Sampler, options: ExportOptions) -> tuple[int, ...] | None:
    """The exported inpaint's path (RePaint's jumps over the sampler's steps, or None), checked
    before any work: a multistep method cannot resample, a jump must fit in the steps."""
    return editing.inpainting_path(sampler.process, options.spec, options.resample, options.jump)


def _functions(
    sampler: Sampler, options: ExportOptions, fixed: bool, path: tuple[int, ...] | None
) -> list[graphs.ExportedFunction]:
    n, seed, scale = options.num_samples, options.verify_seed, options.guidance_scale
    batch = n if fixed else None
    build = {
        "sample": lambda: graphs.sampler_function(sampler, batch, n, scale, seed),
        "denoise": lambda: graphs.denoiser_function(sampler, None, n, seed),
        "inpaint": lambda: graphs.inpaint_function(sampler, batch, n, scale, seed, path),
        "img2img": lambda: graphs.img2img_function(
            sampler, batch, n, scale, seed, options.strength
        ),
        "guided": lambda: graphs.guided_function(
            sampler, batch, n, scale, options.classifier_scale, seed
        ),
    }
    return [build[name]() for name in options.functions]


def tflite_quantization(function_name: str, options: ExportOptions) -> str:
    """The quantization of one TFLite function. float16 applies to the denoiser only: TFLite's
    float16 pass converts every float constant, the noise generator's integer constants and the
    schedule included, so a float16 sampler (or editor) could not draw the portable noise."""
    if options.tflite_quantization == "float16" and function_name != "denoise":
        return "none"
    return options.tflite_quantization


FILE_STEMS = {
    "sample": "sampler",
    "denoise": "denoiser",
    "inpaint": "inpaint",
    "img2img": "img2img",
    "guided": "guided_sampler",
}
"""The file of each function in the one-function-per-file formats: `<fmt>/<stem>.<fmt>`."""


def _write_format(
    fmt: str, root: Path, sampler: Sampler, options: ExportOptions, path: tuple[int, ...] | None
) -> list[dict]:
    """Writes one format; returns an entry per function: path, key, ops, and the function itself.
    `path` is the inpaint's (`inpainting_path`)."""
    functions = _functions(sampler, options, fmt != "saved_model", path)
    if fmt == "saved_model":
        keys = write_saved_model(root / "saved_model", functions)
        return [
            {
                "function": f,
                "path": "saved_model",
                "key": keys[f.name],
                "ops": None,
                "quantization": "none",
            }
            for f in functions
        ]
    (root / fmt).mkdir()
    entries = []
    for function in functions:
        filename = f"{FILE_STEMS[function.name]}.{fmt}"
        path = root / fmt / filename
        quantization = tflite_quantization(function.name, options) if fmt == "tflite" else "none"
        if fmt == "tflite":
            ops = write_tflite(path, function, quantization)
        else:
            ops = write_onnx(path, function, options.onnx_opset)
        entries.append(
            {
                "function": function,
                "path": f"{fmt}/{filename}",
                "key": function.name,
                "ops": ops,
                "quantization": quantization,
            }
        )
    return entries


def _verify(fmt: str, root: Path, entry: dict, tolerance: Tolerance) -> dict:
    function = entry["function"]
    runner = open_function(fmt, root / entry["path"], entry["key"])
    result = compare(entry["reference"], runner(function.feeds), tolerance)
    return {
        "format": fmt,
        "function": function.name,
        "path": entry["path"],
        "key": entry["key"],
        "signature": runner.signature(),
        "ops": sorted(set(entry["ops"])) if entry["ops"] else None,
        "quantization": entry["quantization"],
        "verification": {**result, "tolerance": tolerance.as_dict()},
    }


def _manifest(
    model: DiffusionModel, sampler: Sampler, options: ExportOptions, artifacts, path
) -> dict:
    import ddpm_tf

    return {
        "manifest_version": MANIFEST_VERSION,
        "ddpm_tf_version": ddpm_tf.__version__,
        "tensorflow_version": tf.__version__,
        "model": {
            "image_shape": list(model.image_shape),
            "num_classes": model.num_classes,
            "weights": "ema" if options.spec.use_ema else "raw",
            "diffusion": model.diffusion.get_config(),
        },
        "sampling": {
            **options.spec.to_dict(),
            "num_steps": sampler.process.num_timesteps,
            "timesteps": sampler.process.timestep_map.tolist(),
            "fixed_num_samples": options.num_samples,
            "tflite_quantization": options.tflite_quantization,
            "onnx_opset": options.onnx_opset,
        },
        "functions": list(options.functions),
        "editing": _editing_settings(sampler, options, path),
        "verification_seed": list(options.verify_seed),
        "passed": all(a["verification"]["passed"] for a in artifacts),
        "artifacts": artifacts,
    }


def _editing_settings(sampler: Sampler, options: ExportOptions, path) -> dict:
    """What the exported editing functions have fixed in their graphs (`path`: the inpaint's)."""
    settings = {}
    if "inpaint" in options.functions:
        settings["inpaint"] = {
            "resample": options.resample,
            "jump": options.jump if path else None,
            "network_calls": sampler.process.num_timesteps
            if path is None
            else sum(b < a for a, b in itertools.pairwise(path)),
            "mask": "float32 [N, H, W, 1], kept where > 0.5",
        }
    if "img2img" in options.functions:
        settings["img2img"] = {"strength": options.strength}
    if "guided" in options.functions:
        settings["guided"] = {
            "classifier_classes": sampler.classifier_classes,
            "verified_classifier_scale": options.classifier_scale,
        }
    return settings


def export_model(
    model: DiffusionModel,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    classifier=None,
    overwrite: bool = False,
) -> dict:
    """Exports `model`'s sampler and denoiser in `options.formats` to `out_dir`, verified; the
    guided function bundles `classifier` (a `NoisyClassifier`) with the sampler.

    Each artifact is run on fixed inputs in its own runtime and compared with TensorFlow; the
    results go to `out_dir/manifest.json`, which is returned. Raises `ExportVerificationError`
    when an artifact is outside its tolerance (the artifacts stay in `<out_dir>.partial`).
    The verification inputs and TensorFlow outputs go to `verification.npz` for `verify_export`.
    Everything is written in `<out_dir>.partial` first, which replaces `out_dir` only when
    complete and verified: a failed write (a full disk) raises `WriteError`, removes the partial
    directory and leaves an earlier export in `out_dir` as it was.
    """
    options = options or ExportOptions()
    model = check_model(model)
    out = check_output_dir(out_dir, overwrite).resolve()
    staging = partial_sibling(out)
    sampler = build_sampler(model, options, classifier)
    # the inpaint's path: a bad resample or jump fails here, before any write
    path = inpainting_path(sampler, options) if "inpaint" in options.functions else None
    removed = lambda: shutil.rmtree(staging, ignore_errors=True)  # noqa: E731
    with writing("export", out, tensorflow=True, on_error=removed):  # a failed write leaves no part
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        artifacts, entries = [], []
        for fmt in options.formats:
            for entry in _write_format(fmt, staging, sampler, options, path):
                entry["reference"] = entry["function"].reference()
                artifacts.append(_verify(fmt, staging, entry, TOLERANCES[entry["quantization"]]))
                entries.append(entry)
        manifest = _manifest(model, sampler, options, artifacts, path)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _save_verification_data(staging / VERIFICATION_DATA, artifacts, entries)
    if not manifest["passed"]:
        raise ExportVerificationError(_failure_message(artifacts, staging))
    with writing("export", out):
        replace_directory(staging, out)  # the previous export stays whole until this rename
    return manifest


def _save_verification_data(path: Path, artifacts: list[dict], entries: list[dict]) -> None:
    arrays = {}
    for artifact, entry in zip(artifacts, entries, strict=True):
        prefix = f"{artifact['format']}/{artifact['function']}"
        function = entry["function"]
        arrays.update({f"{prefix}/inputs/{k}": v for k, v in function.feeds.items()})
        arrays.update({f"{prefix}/reference/{k}": v for k, v in entry["reference"].items()})
    np.savez(path, **arrays)


def verify_export(out_dir: str | Path) -> dict:
    """Runs every artifact of an export again on the inputs recorded in `verification.npz` and
    compares with the TensorFlow outputs recorded there, with the manifest's tolerances.

    Returns {"passed", "artifacts": [{format, function, verification}]}; raises
    `ExportVerificationError` on a mismatch (a changed or corrupted artifact).
    """
    root = Path(out_dir)
    manifest = json.loads((root / MANIFEST).read_text())
    data = np.load(root / VERIFICATION_DATA)
    results = []
    for artifact in manifest["artifacts"]:
        prefix = f"{artifact['format']}/{artifact['function']}/"
        feeds = {
            k[len(prefix) + 7 :]: data[k] for k in data.files if k.startswith(prefix + "inputs/")
        }
        reference = {
            k[len(prefix) + 10 :]: data[k]
            for k in data.files
            if k.startswith(prefix + "reference/")
        }
        runner = open_function(artifact["format"], root / artifact["path"], artifact["key"])
        tolerance = Tolerance(**artifact["verification"]["tolerance"])
        results.append(
            {
                "format": artifact["format"],
                "function": artifact["function"],
                "verification": compare(reference, runner(feeds), tolerance),
            }
        )
    report = {"passed": all(r["verification"]["passed"] for r in results), "artifacts": results}
    if not report["passed"]:
        raise ExportVerificationError(_failure_message(results, root))
    return report


def _failure_message(results: list[dict], root: Path) -> str:
    problems = [
        f"{r['format']} {r['function']}: " + "; ".join(r["verification"]["problems"])
        for r in results
        if not r["verification"]["passed"]
    ]
    return (
        "Exported artifacts do not reproduce the TensorFlow sampler: "
        + " | ".join(problems)
        + f". Artifacts and manifest: {str(root)!r}."
    )
