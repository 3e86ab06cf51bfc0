"""Exports: the portable noise source, and SavedModel / TFLite / ONNX samplers that reproduce TF.

The portable generator is checked against an independent integer implementation written here with
NumPy bit operations, then for bit-identity of its integers in TensorFlow (graph and XLA), LiteRT
and onnxruntime. The exports of a tiny trained model are run in fresh processes, and through
`saved_model_cli run`, and compared with the in-memory sampler with noise_source="portable".
"""

import json
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from scipy import stats
from tensorflow.core.protobuf import saved_model_pb2

from ddpm_tf import GaussianDiffusion, Sampler, SamplingSpec, get_beta_schedule, rng, unet
from ddpm_tf.export.ddpm_export import main
from ddpm_tf.exporting import (
    ExportOptions,
    ExportVerificationError,
    export_model,
    open_function,
    verify_export,
)
from ddpm_tf.exporting.graphs import ExportedFunction
from ddpm_tf.exporting.onnx import write_onnx
from ddpm_tf.exporting.tflite import operator_names, write_tflite
from ddpm_tf.model import DiffusionModel
from ddpm_tf.pixels import unit_to_uint8

T = 50
SEED = (11, -3)
N = 3
STEPS = "6"

# --------------------------------------------------------------------------- portable generator
MULTIPLIERS = (3365, 3289)
WEYL = (2531, 2999, 1453, 3637)


def reference_words(count: int, seed, stream: int) -> np.ndarray:
    """The portable generator's words from its definition, with integer bit operations."""
    u0, u1 = (int(s) & 0xFFFFFFFF for s in seed)
    key = [
        u1 & 0xFFF,
        (u1 >> 12) & 0xFFF,
        ((u1 >> 24) & 0xFF) | ((u0 & 0xF) << 8),
        (u0 >> 4) & 0xFFF,
    ]
    i = np.arange(count, dtype=np.int64)
    c = [
        i & 0xFFF,
        (i >> 12) & 0xFFF,
        np.full_like(i, stream & 0xFFF),
        np.full_like(i, stream >> 12),
    ]
    for _ in range(10):
        p0, p1 = MULTIPLIERS[0] * c[0], MULTIPLIERS[1] * c[2]
        c = [
            ((p1 >> 12) + c[1] + key[0]) & 0xFFF,
            ((p1 & 0xFFF) + key[2]) & 0xFFF,
            ((p0 >> 12) + c[3] + key[1]) & 0xFFF,
            ((p0 & 0xFFF) + key[3]) & 0xFFF,
        ]
        key = [(k + w) & 0xFFF for k, w in zip(key, WEYL, strict=True)]
    return np.stack(c)


SEEDS = [(0, 5, 3), (-(2**31), -1, 0), (2**31 - 1, 12345678, 2**24 - 1), (-7, -123456, 77)]


@pytest.mark.parametrize("seed0, seed1, stream", SEEDS)
def test_portable_words_match_an_integer_implementation(seed0, seed1, stream):
    words = rng.portable_words(5000, [seed0, seed1], stream).numpy()
    np.testing.assert_array_equal(
        words.astype(np.int64), reference_words(5000, (seed0, seed1), stream)
    )


def test_portable_normals_are_standard_normal_and_independent():
    n = 100_000
    z = rng.portable_normal([n], [3, 1], 5).numpy()
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.std() - 1) < 5 / np.sqrt(2 * n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(stats.skew(z)) < 0.03 and abs(stats.kurtosis(z)) < 0.06
    others = [
        rng.portable_normal([n], [3, 2], 5),  # next seed
        rng.portable_normal([n], [4, 1], 5),  # seed[0] changes the key too
        rng.portable_normal([n], [3, 1], 6),  # next stream
    ]
    for other in others:
        assert abs(np.corrcoef(z, other.numpy())[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / np.sqrt(n)
    words = rng.portable_words(n, [3, 1], 5).numpy().astype(int)
    for row in words:  # every 12-bit word uniform
        assert stats.chisquare(np.bincount(row, minlength=4096)).pvalue > 1e-4


def _rng_function() -> ExportedFunction:
    def draw(seed, stream):
        return {
            "words": tf.cast(rng.portable_words(4096, seed, stream), tf.int32),
            "normal": rng.portable_normal([4096], seed, stream),
        }

    signature = [
        tf.TensorSpec([2], tf.int32, name="seed"),
        tf.TensorSpec([], tf.int32, name="stream"),
    ]
    return ExportedFunction("draw", tf.function(draw, input_signature=signature), signature, {})


def test_portable_words_are_bit_identical_in_xla_tflite_and_onnx(tmp_path):
    function = _rng_function()
    xla = tf.function(function.fn.python_function, jit_compile=True)
    write_tflite(tmp_path / "rng.tflite", function)
    write_onnx(tmp_path / "rng.onnx", function, 18)
    runners = {
        "tflite": open_function("tflite", tmp_path / "rng.tflite", "draw"),
        "onnx": open_function("onnx", tmp_path / "rng.onnx", "draw"),
    }
    for seed0, seed1, stream in SEEDS:
        feeds = {"seed": np.array([seed0, seed1], np.int32), "stream": np.array(stream, np.int32)}
        expected = {k: v.numpy() for k, v in function.fn(**feeds).items()}
        outputs = {name: run(feeds) for name, run in runners.items()}
        outputs["xla"] = {k: v.numpy() for k, v in xla(**feeds).items()}
        for name, out in outputs.items():
            np.testing.assert_array_equal(out["words"], expected["words"], err_msg=name)
            # log/sqrt/cos are rounded differently by each runtime's kernels
            np.testing.assert_allclose(out["normal"], expected["normal"], atol=2e-5, err_msg=name)


def test_noise_source_is_validated_and_portable_sampling_is_seeded():
    net = unet.from_preset("tiny_8", ch=16, num_groups=4)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", T))
    with pytest.raises(ValueError, match="noise_source"):
        Sampler(net, diffusion, (8, 8, 1), SamplingSpec(noise_source="numpy"))
    spec = SamplingSpec(method="ddim", steps=4, noise_source="portable")
    sampler = Sampler(net, diffusion, (8, 8, 1), spec)
    a, b = sampler(2, seed=(1, 2)).numpy(), sampler(2, seed=(1, 2)).numpy()
    c = sampler(2, seed=(1, 3)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # a zero network makes DDIM deterministic given x_T: the output is a fixed scaling of x_T
    x_T = rng.portable_normal([2, 8, 8, 1], (1, 2), 0).numpy()
    d = sampler.process
    ab = d.alphas_cumprod
    eps_path = x_T.copy()
    for t in reversed(range(d.num_timesteps)):  # x0 = (x - sqrt(1-ab) eps)/sqrt(ab), eps = 0
        x0 = np.clip(eps_path / np.sqrt(ab[t]), -1, 1)
        eps = (eps_path / np.sqrt(ab[t]) - x0) / np.sqrt(1 / ab[t] - 1)
        ab_prev = ab[t - 1] if t else 1.0
        eps_path = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
    np.testing.assert_allclose(a, eps_path, atol=1e-5)


# ------------------------------------------------------------------------------------- exports
def _train(num_classes=None, x=None, epochs=1) -> DiffusionModel:
    """A tiny_8 with 16 channels, trained `epochs` on `x` (default 16 images of uniform noise)."""
    keras.utils.set_random_seed(0)
    net = unet.from_preset("tiny_8", ch=16, num_groups=4, num_classes=num_classes)
    model = DiffusionModel(net, GaussianDiffusion(get_beta_schedule("linear", T)), ema_decay=0.5)
    model.compile(keras.optimizers.Adam(1e-3))
    if x is None:
        x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype("float32")
    y = None if num_classes is None else (np.arange(len(x)) % num_classes).astype(np.int32)
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = _train()
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return model, path


DDIM = SamplingSpec(method="ddim", steps=int(STEPS), noise_source="portable")
# The command line's export: DPM-Solver++ on log-SNR spacing, the multistep loop with the most state.
DPM = SamplingSpec(method="dpm_solver++", steps="logsnr" + STEPS, noise_source="portable")


def _in_memory_images(model, num_samples=N, spec=DDIM) -> np.ndarray:
    """The in-memory sampler's images for `spec` (EMA weights, portable noise)."""
    return unit_to_uint8(model.generate(num_samples, SEED, spec=spec)).numpy()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """All three formats of the DPM sampler written by the command line from the .keras file."""
    _, path = trained
    out = tmp_path_factory.mktemp("export") / "out"
    argv = [str(path), "--format", "saved_model", "tflite", "onnx", "--out", str(out)]
    argv += ["--method", DPM.method, "--steps", DPM.to_dict()["steps"], "--num-samples", str(N)]
    assert main([*argv, "--seed", *map(str, SEED)]) == 0
    return out


def _levels(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|got - expected| per pixel of two uint8 image batches, in levels."""
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.uint8
    return np.abs(got.astype(int) - expected.astype(int))


def _assert_images_close(got: np.ndarray, expected: np.ndarray) -> None:
    """A float sampler's images, as docs/export.md states them: every pixel within 2 levels of
    TensorFlow's, at most 1% of pixels different at all."""
    diff = _levels(got, expected)
    assert diff.max() <= 2 and np.mean(diff > 0) <= 0.01, (diff.max(), np.mean(diff > 0))


FRESH_PROCESS = """
import json, sys
import numpy as np
from ddpm_tf.exporting import open_function
out, feeds_path, result_path = sys.argv[1:]
feeds = dict(np.load(feeds_path))
results = {}
for a in json.loads(open(out + "/manifest.json").read())["artifacts"]:
    runner = open_function(a["format"], out + "/" + a["path"], a["key"])
    for name, value in runner({k: feeds[k] for k in runner.inputs}).items():
        results[a["format"] + "/" + a["function"] + "/" + name] = value
np.savez(result_path, **results)
"""


@pytest.mark.slow
def test_every_format_reproduces_the_in_memory_sampler_in_a_fresh_process(
    trained, exported, tmp_path
):
    model, _ = trained
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["passed"] and manifest["sampling"]["noise_source"] == "portable"
    assert manifest["sampling"]["num_steps"] == int(STEPS)
    assert manifest["sampling"]["method"] == "dpm_solver++" == DPM.method
    found = {(a["format"], a["function"]) for a in manifest["artifacts"]}
    assert found == {
        (f, g) for f in ("saved_model", "tflite", "onnx") for g in ("sample", "denoise")
    }
    for artifact in manifest["artifacts"]:
        v = artifact["verification"]
        assert v["passed"] and v["tolerance"]["atol"] == 1e-4
        if artifact["function"] == "denoise":
            assert v["outputs"]["output"]["max_abs_error"] <= 1e-4
    serving = next(a for a in manifest["artifacts"] if a["key"] == "serving_default")
    assert serving["signature"]["inputs"] == {
        "num_samples": {"shape": [], "dtype": "int32"},
        "seed": {"shape": [2], "dtype": "int32"},
    }
    assert serving["signature"]["outputs"]["images"] == {"shape": [None, 8, 8, 1], "dtype": "uint8"}

    x_t = np.random.default_rng(5).normal(size=(N, 8, 8, 1)).astype(np.float32)
    t = np.array([0, 17, T - 1], np.int32)
    feeds = {
        "seed": np.array(SEED, np.int32),
        "num_samples": np.array(N, np.int32),
        "x_t": x_t,
        "t": t,
    }
    np.savez(tmp_path / "feeds.npz", **feeds)
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(exported),
            str(tmp_path / "feeds.npz"),
            str(tmp_path / "out.npz"),
        ],
        check=True,
        timeout=300,
    )
    results = np.load(tmp_path / "out.npz")
    expected = _in_memory_images(model, spec=DPM)
    expected_output = model.ema_network([x_t, t]).numpy()
    for fmt in ("saved_model", "tflite", "onnx"):
        _assert_images_close(results[f"{fmt}/sample/images"], expected)
        np.testing.assert_allclose(results[f"{fmt}/denoise/output"], expected_output, atol=1e-4)
    assert len(np.unique(expected)) > 2  # the comparison is not between blank images


@pytest.mark.slow
def test_saved_model_runs_under_saved_model_cli(trained, exported, tmp_path):
    model, _ = trained
    subprocess.run(
        [
            str(__import__("pathlib").Path(sys.executable).with_name("saved_model_cli")),
            "run",
            "--dir",
            str(exported / "saved_model"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            f"num_samples=2;seed=[{SEED[0]},{SEED[1]}]",
            "--outdir",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    images = np.load(tmp_path / "images.npy")
    _assert_images_close(images, _in_memory_images(model, 2, DPM))


def _graph_op_types(concrete) -> set[str]:
    graph = concrete.graph.as_graph_def()
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


def test_exported_functions_trace_standard_ops_where_fused_kernels_run(trained):
    """The export's functions trace under kernels.reference_only(), whoever calls them first."""
    from ddpm_tf import kernels
    from ddpm_tf.exporting.graphs import denoiser_function
    from ddpm_tf.sampling import call_network

    model, _ = trained
    sampler = model.sampler(noise_source="portable")
    function = denoiser_function(sampler, None, 2, SEED)
    x_t, t = (tf.constant(function.feeds[k]) for k in ("x_t", "t"))
    direct = tf.function(lambda x, s: call_network(sampler.network, x, s))
    fused = "DdpmGroupNorm" in _graph_op_types(direct.get_concrete_function(x_t, t))
    assert fused == kernels.active()
    exported_ops = _graph_op_types(function.fn.get_concrete_function(x_t, t))
    assert not {op for op in exported_ops if op.startswith("Ddpm")}
    np.testing.assert_allclose(function.fn(x_t, t)["output"], direct(x_t, t), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_artifacts_use_builtin_and_standard_ops_only(exported):
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((exported / "saved_model" / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "Conv2D" in ops and not {op for op in ops if op.startswith("Ddpm")}
    for name in ("sampler", "denoiser"):
        ops = operator_names((exported / "tflite" / f"{name}.tflite").read_bytes())
        assert not [op for op in ops if op.startswith("CUSTOM")], ops
        assert name == "denoiser" or "WHILE" in ops  # the whole loop is one model
        graph = onnx.load(str(exported / "onnx" / f"{name}.onnx")).graph
        domains = {n.domain for n in graph.node}
        assert domains <= {"", "ai.onnx"}, domains
        assert name == "denoiser" or "Loop" in {n.op_type for n in graph.node}
        assert not {"RandomStandardNormal", "RandomUniform", "RandomNormal"} & {
            n.op_type for n in graph.node
        }


@pytest.mark.slow
def test_a_tampered_artifact_fails_verification(exported, tmp_path):
    verify_export(exported)  # the untouched export passes
    tampered = tmp_path / "tampered"
    __import__("shutil").copytree(exported, tampered)
    path = tampered / "onnx" / "denoiser.onnx"
    model = onnx.load(str(path))
    for weights in model.graph.initializer:  # every weight matrix 1% larger
        array = onnx.numpy_helper.to_array(weights)
        if array.dtype == np.float32 and array.size >= 256:
            weights.CopyFrom(onnx.numpy_helper.from_array(array * 1.01, weights.name))
    onnx.save(model, str(path))
    with pytest.raises(ExportVerificationError, match="onnx denoise"):
        verify_export(tampered)


def test_command_line_refuses_bad_arguments_before_any_work(trained, tmp_path, capsys):
    _, path = trained
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases = [
        ([str(path), "--out", str(busy)], "not empty"),
        ([str(path), "--out", str(tmp_path / "a"), "--steps", "fifty"], "steps"),
        ([str(path), "--out", str(tmp_path / "a"), "--eta", "2"], "eta"),
        ([str(path), "--out", str(tmp_path / "a"), "--num-samples", "0"], "num_samples"),
        ([str(tmp_path / "none.keras"), "--out", str(tmp_path / "a")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert (busy / "keep.txt").read_text() == "mine" and not (tmp_path / "a").exists()


def test_a_mismatch_fails_the_export_and_the_command(trained, tmp_path, monkeypatch, capsys):
    """An artifact that disagrees with TF (simulated by shifting TF's reference) exits 1."""
    _, path = trained
    original = ExportedFunction.reference

    def shifted(self):
        out = original(self)
        return {k: v + 1e-3 if v.dtype == np.float32 else v for k, v in out.items()}

    monkeypatch.setattr(ExportedFunction, "reference", shifted)
    out = tmp_path / "out"
    argv = [str(path), "--format", "saved_model", "--out", str(out), "--steps", "2"]
    assert main(argv) == 1
    assert "saved_model denoise" in capsys.readouterr().err
    assert not out.exists()
    manifest = json.loads((tmp_path / "out.partial" / "manifest.json").read_text())
    assert not manifest["passed"]


@pytest.mark.slow
def test_class_conditional_export_with_guidance(tmp_path):
    model = _train(num_classes=3)
    options = ExportOptions(
        formats=("tflite", "onnx"),
        spec=SamplingSpec(method="ancestral", steps=5, noise_source="portable"),
        num_samples=4,
        guidance_scale=3.0,
    )
    manifest = export_model(model, tmp_path / "out", options)
    sampler = next(
        a for a in manifest["artifacts"] if a["format"] == "onnx" and a["function"] == "sample"
    )
    assert set(sampler["signature"]["inputs"]) == {"labels", "seed", "guidance_scale"}
    from ddpm_tf.exporting import build_sampler

    reference = build_sampler(model, options)
    labels = np.array([0, 1, 2, 3], np.int32)  # 3 is the null class
    for scale in (1.0, 3.0):
        expected = unit_to_uint8(
            reference.sample_conditional(labels, rng.as_seed(SEED), tf.constant(scale))
        ).numpy()
        feeds = {
            "labels": labels,
            "seed": np.array(SEED, np.int32),
            "guidance_scale": np.array(scale, np.float32),
        }
        for fmt, file in (("tflite", "sampler.tflite"), ("onnx", "sampler.onnx")):
            got = open_function(fmt, tmp_path / "out" / fmt / file, "sample")(feeds)["images"]
            _assert_images_close(got, expected)


def test_quantized_tflite_denoisers_are_quantized_and_within_their_tolerance(trained, tmp_path):
    from ddpm_tf.exporting.graphs import denoiser_function
    from ddpm_tf.exporting.pipeline import tflite_quantization
    from ddpm_tf.exporting.verify import TOLERANCES

    model, _ = trained
    options = ExportOptions(tflite_quantization="float16")
    assert tflite_quantization("sample", options) == "none"  # float16 would change the noise
    assert tflite_quantization("denoise", options) == "float16"
    function = denoiser_function(model.sampler(noise_source="portable"), None, 4, SEED)
    expected = function.reference()["output"]
    sizes = {}
    for quantization in ("none", "float16", "dynamic"):
        path = tmp_path / f"{quantization}.tflite"
        write_tflite(path, function, quantization)
        sizes[quantization] = path.stat().st_size
        got = open_function("tflite", path, "denoise")(function.feeds)["output"]
        error = np.abs(got - expected).max()
        assert error <= TOLERANCES[quantization].atol, (quantization, error)
        assert quantization == "none" or error > 1e-6  # the weights really changed
    assert sizes["dynamic"] < sizes["float16"] < 0.7 * sizes["none"]


@pytest.mark.slow
def test_dynamic_range_tflite_sampler_is_within_its_documented_bound(tmp_path):
    """int8 weights move the sampler's pixels; docs/export.md bounds them in bulk: 99% of the pixels
    within 8 levels of the float sampler's, the mean within 2 (measured here: 2 and 0.46). The
    model is trained long enough for its weights to matter (320 steps on 64 images of blocks)."""
    from ddpm_tf.exporting.verify import TOLERANCES

    blocks = np.random.default_rng(0).uniform(-1, 1, (64, 2, 2, 1))
    model = _train(x=np.kron(blocks, np.ones((1, 4, 4, 1))).astype("float32"), epochs=40)
    spec = SamplingSpec(method="ddim", steps=int(STEPS), noise_source="portable")
    options = ExportOptions(
        formats=("tflite",), spec=spec, num_samples=16, tflite_quantization="dynamic"
    )
    manifest = export_model(model, tmp_path / "out", options)  # verified with the same bound
    tolerance = TOLERANCES["dynamic"]
    assert (tolerance.max_p99_levels, tolerance.max_mean_levels) == (8, 2)
    artifact = next(a for a in manifest["artifacts"] if a["function"] == "sample")
    assert artifact["quantization"] == "dynamic"
    assert artifact["verification"]["tolerance"] == tolerance.as_dict()
    run = open_function("tflite", tmp_path / "out" / "tflite" / "sampler.tflite", "sample")
    diff = np.concatenate(
        [
            _levels(
                run({"seed": np.array(seed, np.int32)})["images"],
                unit_to_uint8(model.generate(16, seed, spec=spec)).numpy(),
            )
            for seed in [SEED, (0, 2024), (1, 2), (5, 5)]
        ]
    )
    measured = (np.quantile(diff, 0.99), diff.mean(), np.mean(diff > 0), diff.max())
    assert measured[0] <= 8 and measured[1] <= 2, measured
    assert measured[2] > 0.05, measured  # the weights really are int8: many pixels move


def test_the_dynamic_tolerance_bounds_pixels_in_bulk_and_the_float_one_each_pixel():
    from ddpm_tf.exporting.verify import TOLERANCES, compare

    reference = np.full((10, 10, 10), 100, np.uint8)  # 1000 pixels

    def verdict(quantization: str, count: int, levels: int) -> bool:
        got = reference.copy()
        got.flat[:count] += levels
        return compare({"images": reference}, {"images": got}, TOLERANCES[quantization])["passed"]

    assert verdict("dynamic", 5, 150)  # a few pixels far off: 99% are still exact
    assert not verdict("dynamic", 20, 9)  # 2% of the pixels 9 levels off
    assert verdict("dynamic", 400, 4) and not verdict("dynamic", 700, 3)  # mean 1.6, 2.1
    assert verdict("none", 10, 2) and not verdict("none", 1, 3) and not verdict("none", 11, 1)


def test_portable_generator_refuses_counts_and_streams_beyond_its_counter():
    with pytest.raises(ValueError, match="count"):
        rng.portable_words(2**24 + 1, [0, 1])
    with pytest.raises(ValueError, match="stream"):
        rng.portable_words(4, [0, 1], stream=2**24)
    with pytest.raises(ValueError, match="stream"):
        rng.portable_normal([4], [0, 1], stream=-1)


def test_conversions_refuse_tf_random_ops(tmp_path):
    """tf2onnx only logs unsupported ops; the converter must raise, and TFLite must not use Flex."""

    def philox(seed):
        return {"noise": tf.random.stateless_normal([4], seed)}

    signature = [tf.TensorSpec([2], tf.int32, name="seed")]
    function = ExportedFunction(
        "philox", tf.function(philox, input_signature=signature), signature, {}
    )
    with pytest.raises(RuntimeError, match="could not convert"):
        write_onnx(tmp_path / "philox.onnx", function, 17)
    with pytest.raises(Exception, match="(?i)flex|not supported|select"):
        write_tflite(tmp_path / "philox.tflite", function)
    assert not (tmp_path / "philox.onnx").exists() and not (tmp_path / "philox.tflite").exists()


KERAS_FORMATS = {"tf_saved_model": "saved_model", "litert": "tflite", "onnx": "onnx"}


def test_keras_spelling_of_export_writes_loads_and_verifies(trained, tmp_path):
    """One real export (LiteRT, whose converter is the strictest); the slow tests export every
    format through the command line, which calls the same `export_model`."""
    model, _ = trained
    out = tmp_path / "out"
    manifest = model.export(out, format="litert", spec=DDIM, num_samples=N)
    assert manifest["passed"] and {a["format"] for a in manifest["artifacts"]} == {"tflite"}
    files = ["tflite/sampler.tflite", "tflite/denoiser.tflite", "manifest.json"]
    assert all((out / f).is_file() for f in files)
    assert verify_export(out)["passed"]
    sampler = next(a for a in manifest["artifacts"] if a["function"] == "sample")
    runner = open_function("tflite", out / sampler["path"], sampler["key"])
    feeds = {"seed": np.array(SEED, np.int32), "num_samples": np.array(N, np.int32)}
    images = runner({k: feeds[k] for k in runner.inputs})["images"]
    _assert_images_close(images, _in_memory_images(model))


@pytest.mark.parametrize("keras_format", KERAS_FORMATS)
def test_keras_spelling_of_export_is_export_model_for_one_format(
    trained, tmp_path, keras_format, monkeypatch
):
    import ddpm_tf.exporting

    model, _ = trained
    calls = []
    monkeypatch.setattr(
        ddpm_tf.exporting, "export_model", lambda *a, **k: calls.append((a, k)) or {"passed": True}
    )
    out = tmp_path / "out"
    assert model.export(out, format=keras_format, spec=DDIM, opset_version=18, overwrite=True)
    [((got_model, got_out, options), kwargs)] = calls
    assert got_model is model and got_out == out and kwargs == {"overwrite": True}
    assert options == ExportOptions(
        formats=(KERAS_FORMATS[keras_format],), spec=DDIM, onnx_opset=18
    )
    assert model.KERAS_EXPORT_FORMATS == KERAS_FORMATS


def test_keras_spelling_of_export_refuses_what_it_cannot_write(trained, tmp_path):
    model, _ = trained
    allowed = r"\('tf_saved_model', 'litert', 'onnx'\)"
    for bad in ("tflite", "savedmodel", "h5"):
        with pytest.raises(ValueError, match=rf"Unknown export format '{bad}'.*{allowed}"):
            model.export(tmp_path / "out", format=bad)
    for unsupported in ("openvino", "torch"):
        with pytest.raises(ValueError, match=rf"does not support Keras' format '{unsupported}'"):
            model.export(tmp_path / "out", format=unsupported)
    with pytest.raises(ValueError, match="input_signature"):
        model.export(tmp_path / "out", input_signature=[tf.TensorSpec([1, 8, 8, 1])])
    with pytest.raises(ValueError, match="export directory"):
        model.export(tmp_path / "sampler.tflite", format="litert")
    with pytest.raises(TypeError, match="formats"):
        model.export(tmp_path / "out", formats=("onnx",))
    assert not list(tmp_path.iterdir())
