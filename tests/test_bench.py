"""The benchmarks' shared machinery: the timing helper, the configurations both sides are built
from, and the pieces each script's figures rest on (which order rounds run in, how a profile
names a convolution's direction, the page-cache eviction of the disk pipeline, and that each
script loads TensorFlow the way a ddpm_tf user's process does)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import peer  # noqa: E402
import train_throughput  # noqa: E402


class _Lazy:
    """A stand-in for a tensor: records whether the timing waited for it."""

    def __init__(self, log: list[str], name: str):
        self.log, self.name = log, name

    def numpy(self):
        self.log.append(self.name)
        return np.zeros(())


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    result = common.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(result["times_s"]) == 3
    assert result["first_s"] is not None
    assert result["min_s"] <= result["median_s"] <= result["max_s"]
    single = common.time_calls(lambda: calls.append(1))
    assert len(calls) == 6 and single["first_s"] is None and len(single["times_s"]) == 1


def test_time_calls_waits_for_nested_tensors():
    log: list[str] = []
    common.time_calls(lambda: {"a": [_Lazy(log, "a0"), (_Lazy(log, "a1"),)], "b": _Lazy(log, "b")})
    assert sorted(log) == ["a0", "a1", "b"]


def test_machine_names_the_cpu_and_its_vector_features():
    line = common.machine("tensorflow")
    assert common.cpu_name() in line and "cores" in line and "TensorFlow" in line
    flags = common.cpu_flags()
    for feature in common.VECTOR_FEATURES:
        assert (feature in common.cpu_name().split("(")[-1]) == (feature in flags)


def test_every_default_workload_meets_the_peer_in_every_variant():
    configs = train_throughput.CONFIGS
    default = [c for c in configs.values() if c.in_default_run]
    for config in default:
        if config.framework != "tf" or config.preset not in peer.ARCHITECTURES:
            continue
        peers = {
            c.variant for c in default if c.framework == "torch" and c.workload == config.workload
        }
        assert peers == set(peer.VARIANTS), config.name
    precisions = {c.precision for c in default}
    assert precisions == ({"float32", "bfloat16"} if common.native_bfloat16() else {"float32"})


def test_comparison_picks_the_fastest_peer_variant(capsys):
    def row(name, seconds, **extra):
        return {"name": name, "median_s": seconds, "params": 1, **extra}

    torch_row = {"versions": "v", "cpu_capability": "AVX2", "attention_resolutions": [16]}
    results = [
        row("cifar10-graph", 1.0, framework="tf"),
        row("cifar10-torch-eager", 1.5, framework="torch", variant="eager", **torch_row),
        row("cifar10-torch-compile-cl", 1.2, framework="torch", variant="compile-cl", **torch_row),
    ]
    train_throughput.print_comparison(results)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("cifar10-graph"))
    assert "compile-cl" in line and line.rstrip().endswith("1.20")


def test_eval_speed_rounds_alternate_which_side_runs_first():
    import eval_speed

    order = []
    network = lambda: order.append("network") or 1.0  # noqa: E731
    loop = lambda: order.append("loop") or 2.0  # noqa: E731
    assert eval_speed.paired(network, loop, loop_first=False) == (2.0, 1.0)
    assert eval_speed.paired(network, loop, loop_first=True) == (2.0, 1.0)
    assert order == ["network", "loop", "loop", "network"]


@pytest.mark.parametrize(
    "op, kind",
    [
        ("_FusedConv2D", "convolution forward"),
        ("Conv2D", "convolution forward"),
        ("Conv2DBackpropInput", "convolution backward-data"),
        ("_MklNativeConv2DBackpropFilter", "convolution backward-filter"),
    ],
)
def test_profile_splits_convolutions_by_direction(op, kind):
    import step_profile

    path = "u_net/res_block/conv1"
    assert step_profile.layer_kind(path, op) == kind
    table = step_profile.summarize([(f"gradient_tape/{path}:{op}", 4.0)], steps=2)
    assert table["kind"] == {kind: 2.0}


@pytest.mark.parametrize("size, kernel, stride", [(28, 3, 1), (28, 3, 2), (7, 3, 2), (15, 2, 1)])
def test_conv_pads_are_tensorflows_same_padding(size, kernel, stride):
    """The peer's convolutions run on inputs padded as TensorFlow pads "SAME" ones: a VALID
    convolution of the padded input is TensorFlow's SAME convolution."""
    import conv_gradients
    import tensorflow as tf

    conv = conv_gradients.Conv((2, size, size, 3), (kernel, kernel, 3, 4), stride, "SAME")
    x = tf.random.stateless_normal(conv.input_shape, seed=[0, 1])
    k = tf.random.stateless_normal(conv.kernel_shape, seed=[0, 2])
    same = tf.nn.conv2d(x, k, stride, "SAME")
    padded = tf.pad(x, [[0, 0], *conv.pads, [0, 0]])
    np.testing.assert_allclose(tf.nn.conv2d(padded, k, stride, "VALID"), same, atol=1e-5)
    assert tuple(same.shape) == conv.output_shape


@pytest.mark.parametrize(
    "input_shape, kernel_shape, stride, padding",
    [
        ((2, 9, 9, 3), (3, 3, 3, 5), 1, "SAME"),
        ((2, 8, 8, 3), (3, 3, 3, 5), 2, "SAME"),
        ((2, 5, 5, 4), (2, 2, 4, 3), 1, "VALID"),
        ((2, 6, 6, 4), (1, 1, 4, 3), 1, "SAME"),
    ],
)
def test_backward_filter_rewrites_are_the_kernel_gradient(
    input_shape, kernel_shape, stride, padding
):
    """Both rewrites compute d(sum(conv(x, k) * dy))/dk, as TensorFlow's autodiff does."""
    import conv_gradients
    import tensorflow as tf

    conv = conv_gradients.Conv(input_shape, kernel_shape, stride, padding)
    x = tf.random.stateless_normal(input_shape, seed=[1, 1])
    k = tf.random.stateless_normal(kernel_shape, seed=[1, 2])
    dy = tf.random.stateless_normal(conv.output_shape, seed=[1, 3])
    with tf.GradientTape() as tape:
        tape.watch(k)
        y = tf.nn.conv2d(x, k, stride, padding)
    expected = tape.gradient(y, k, output_gradients=dy)
    for rewrite in (
        conv_gradients.backward_filter_matmul,
        lambda x, dy, conv: conv_gradients.backward_filter(x, dy, conv, "NCHW"),
    ):
        np.testing.assert_allclose(rewrite(x, dy, conv), expected, rtol=1e-4, atol=1e-4)


def test_conv_gradients_finds_every_convolution_of_the_network():
    """One Conv2D per Keras convolution layer, but four 2x2 phase convolutions per upsampling."""
    import conv_gradients
    import keras

    from ddpm_tf import from_preset, layers

    counts = conv_gradients.convolutions("small_28", 2)
    network = from_preset("small_28", dropout=0.0)
    network(np.zeros((2, 28, 28, 1), np.float32), np.zeros(2, np.int32))
    sublayers = list(network._flatten_layers(include_self=False))
    upsampling = [u for u in sublayers if isinstance(u, layers.Upsample) and u.with_conv]
    convs = [c for c in sublayers if isinstance(c, keras.layers.Conv2D)]
    assert upsampling
    assert sum(counts.values()) == len(convs) - len(upsampling) + 4 * len(upsampling)
    phases = [c for c in counts if c.kernel_shape[:2] == (2, 2)]
    assert sum(counts[c] for c in phases) == 4 * len(upsampling)
    assert all(c.input_shape[0] == 2 for c in counts)


def test_input_pipeline_evicts_the_cache_file_and_still_reads_it(tmp_path):
    import input_pipeline
    import tensorflow as tf

    from ddpm_tf.datasets.pixel_cache import PixelCache

    images = np.arange(40 * 4, dtype=np.uint8).reshape(40, 2, 2, 1)
    examples = tf.data.Dataset.from_tensor_slices((images, np.zeros(40, np.int32)))
    cache = PixelCache.build(tmp_path / "c", examples, num_classes=None, source={})
    input_pipeline.evict(cache)
    np.testing.assert_array_equal(cache.read(np.array([3, 7])), images[[3, 7]])


def test_peer_networks_match_the_presets_parameter_counts():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from ddpm_tf import from_preset

    for preset in peer.ARCHITECTURES:
        _, model = peer.network(preset, peer.VARIANTS["eager"])
        ours = from_preset(preset).count_params()
        assert sum(p.numel() for p in model.parameters()) == ours, preset


def _imports(body: list[ast.stmt]) -> list[str]:
    """The top-level packages of the import statements directly in `body`, in order."""
    found = []
    for node in body:
        if isinstance(node, ast.Import):
            found += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module.split(".")[0])
    return found


def _loads_ddpm_tf_first(body: list[ast.stmt]) -> bool | None:
    """Whether `body` imports ddpm_tf before TensorFlow or Keras (None: it imports neither)."""
    for package in _imports(body):
        if package == "ddpm_tf":
            return True
        if package in ("tensorflow", "keras"):
            return False
    return None


# common.py is the scripts' library: its functions run after the script that calls them imported
# ddpm_tf, and it must not import TensorFlow itself (the PyTorch children import it too)
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


def _through_ddpm_tf(tree: ast.Module, function: ast.FunctionDef, seen: frozenset = frozenset()):
    """Whether every path to `function` within its script has imported ddpm_tf before TensorFlow:
    it does so itself, or it is used only by functions that do (a use at the script's top level,
    such as `main()`, has not)."""
    if _loads_ddpm_tf_first(function.body):
        return True
    users = [
        f
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and f is not function
        and any(isinstance(n, ast.Name) and n.id == function.name for n in ast.walk(f))
    ]
    at_top = any(
        isinstance(n, ast.Name) and n.id == function.name
        for stmt in tree.body
        if not isinstance(stmt, ast.FunctionDef | ast.ClassDef)
        for n in ast.walk(stmt)
    )
    if at_top or not users or function.name in seen:
        return False
    return all(_through_ddpm_tf(tree, f, seen | {function.name}) for f in users)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_import_ddpm_tf_before_tensorflow(script):
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads, and ddpm_tf's import sets it to
    the machine's measured choice: a script that loads TensorFlow first times TensorFlow's default
    path, not the package's."""
    tree = ast.parse(script.read_text())
    at_top = _loads_ddpm_tf_first(tree.body)
    assert at_top is not False, f"{script.name} imports TensorFlow before ddpm_tf"
    if at_top:
        return
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        if _loads_ddpm_tf_first(function.body) is False:
            assert _through_ddpm_tf(tree, function), (
                f"{script.name}: {function.name} can import TensorFlow before ddpm_tf"
            )
