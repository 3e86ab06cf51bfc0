"""The U-Net's convolutions one at a time: forward, backward-data and backward-filter of each
convolution in a preset's forward pass, by TensorFlow against PyTorch on the same shapes.

A train step's convolutions are most of its time (`step_profile.py`), and both frameworks hand
them to the same oneDNN library, so a convolution costs one framework more than the other through
the layout and the primitive it is given, not the arithmetic. This script lists every Conv2D of
`--preset`'s U-Net at `--batch` (read off its traced forward graph: the 3x3 and 1x1 convolutions,
the stride-2 downsampling, the upsampling's 2x2 phase convolutions) and times each direction:

    tf            TensorFlow's own op (NHWC, the package's oneDNN choice), as the train step
                  runs it
    torch         PyTorch on the same shape, NCHW (`aten.convolution_backward` for the gradients;
                  the input padded beforehand as TensorFlow pads it)
    torch-cl      the same in channels_last
    tf-nchw       backward-filter only: TensorFlow's op given NCHW tensors (transposes included)
    tf-matmul     backward-filter only: one matrix product per kernel tap, of the strided shifted
                  input with the output gradient

The last two are the ways the package could write its backward-filter in TensorFlow instead;
each is checked against TensorFlow's op (largest difference relative to its largest value).
Every timed call runs its op `--inner` times (TensorFlow: a while loop in one tf.function;
PyTorch: a Python loop), so that a tf.function call's own cost, a few tenths of a millisecond
that a train step's graph does not pay per op, is spread over them; the tables give ms per op.
Each framework times its calls in a process of its own, one per round, the frameworks' order
and the calls' order alternating between rounds: in one process, PyTorch's OpenMP threads would
still spin-wait for work while TensorFlow's next call runs, and slow it. Each time is the median
over rounds of `time_calls` medians; totals weight each shape by how often the network has it.

    python bench/conv_gradients.py --preset small_28 --batch 32 --rounds 3
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/conv_gradients.py   # AVX2 code
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import ddpm_tf  # noqa: F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer  # noqa: E402
import tensorflow as tf  # noqa: E402  (the PyTorch child loads it too, and leaves it idle)
from common import (  # noqa: E402
    child_result,
    machine,
    onednn_enabled,
    print_result,
    set_tf_threads,
    time_calls,
)

DIRECTIONS = ("forward", "backward-data", "backward-filter")
ALTERNATIVES = ("tf-nchw", "tf-matmul")  # backward-filter only


@dataclass(frozen=True)
class Conv:
    """One convolution of the network: NHWC input, HWIO kernel, stride, TensorFlow's padding."""

    input_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    stride: int
    padding: str  # "SAME" or "VALID"

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(before, after) zero rows and columns TensorFlow adds, per spatial axis."""
        return tuple(
            same_pads(size, k, self.stride) if self.padding == "SAME" else (0, 0)
            for size, k in zip(self.input_shape[1:3], self.kernel_shape[:2], strict=True)
        )

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        n, _, _, _ = self.input_shape
        spatial = [
            (size + before + after - k) // self.stride + 1
            for size, k, (before, after) in zip(
                self.input_shape[1:3], self.kernel_shape[:2], self.pads, strict=True
            )
        ]
        return (n, *spatial, self.kernel_shape[3])

    @property
    def gflop(self) -> float:
        """Multiply-adds x 2 of one direction (each direction does the same arithmetic)."""
        kh, kw, cin, cout = self.kernel_shape
        return 2.0 * np.prod(self.output_shape[:3]) * kh * kw * cin * cout / 1e9

    def label(self) -> str:
        n, h, w, cin = self.input_shape
        kh, kw, _, cout = self.kernel_shape
        return f"{h}x{w} {cin}->{cout} {kh}x{kw}/{self.stride} {self.padding.lower()}"


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" zero padding (before, after) of one axis: the extra one goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def convolutions(preset: str, batch: int) -> collections.Counter[Conv]:
    """Every Conv2D in the traced forward pass of `preset`'s U-Net at `batch`, with its count."""
    from ddpm_tf.unet import PRESETS, from_preset

    network = from_preset(preset, dropout=0.0)
    size, channels = PRESETS[preset]["image_size"], PRESETS[preset]["in_channels"]
    x = tf.TensorSpec([batch, size, size, channels], tf.float32)
    t = tf.TensorSpec([batch], tf.int32)
    graph = tf.function(lambda x, t: network(x, t, training=True)).get_concrete_function(x, t).graph
    found = collections.Counter()
    for op in graph.get_operations():
        if op.type != "Conv2D":
            continue
        strides = op.get_attr("strides")
        if op.get_attr("data_format") != b"NHWC" or strides[1] != strides[2]:
            raise ValueError(f"{op.name}: expected an NHWC convolution with equal strides")
        found[
            Conv(
                tuple(op.inputs[0].shape.as_list()),
                tuple(op.inputs[1].shape.as_list()),
                strides[1],
                op.get_attr("padding").decode(),
            )
        ] += 1
    return found


# ------------------------------------------------------------------------------ TensorFlow side
def tf_calls(conv: Conv, times: int = 1) -> dict[tuple[str, str], Callable[[], object]]:
    """{(implementation, direction): call} for TensorFlow's op and its backward-filter rewrites,
    each call running the op `times` times."""
    rng = np.random.default_rng(0)
    x, kernel, dy = (
        tf.constant(rng.normal(size=shape).astype(np.float32))
        for shape in (conv.input_shape, conv.kernel_shape, conv.output_shape)
    )
    common = {"strides": [1, conv.stride, conv.stride, 1], "padding": conv.padding}
    ops = {
        ("tf", "forward"): lambda x, k, dy: tf.raw_ops.Conv2D(input=x, filter=k, **common),
        ("tf", "backward-data"): lambda x, k, dy: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=conv.input_shape, filter=k, out_backprop=dy, **common
        ),
        ("tf", "backward-filter"): lambda x, k, dy: backward_filter(x, dy, conv),
        ("tf-nchw", "backward-filter"): lambda x, k, dy: backward_filter(x, dy, conv, "NCHW"),
        ("tf-matmul", "backward-filter"): lambda x, k, dy: backward_filter_matmul(x, dy, conv),
    }
    return {key: repeated(op, (x, kernel, dy), times) for key, op in ops.items()}


def repeated(op: Callable, inputs: tuple, times: int) -> Callable[[], tf.Tensor]:
    """A tf.function running `op(*inputs)` `times` times in one call, one after another (a
    while loop), so that the call's own cost, which a train step's graph does not pay per op,
    is spread over them; returns the last result."""

    @tf.function
    def call() -> tf.Tensor:
        def body(i, args, _):
            return i + 1, args, op(*args)  # reads the loop's variables: not hoisted out of it

        first = op(*inputs)
        loop = tf.while_loop(
            lambda i, *_: i < times, body, (tf.constant(1), inputs, first), parallel_iterations=1
        )
        return loop[-1]

    return call


def backward_filter(x: tf.Tensor, dy: tf.Tensor, conv: Conv, layout: str = "NHWC") -> tf.Tensor:
    """The kernel gradient [kh, kw, Cin, Cout] by TensorFlow's op: on the NHWC tensors, as the
    train step computes it, or (`layout="NCHW"`) on their NCHW transposes, the transposes
    included."""
    strides = [1, conv.stride, conv.stride, 1]
    if layout == "NCHW":
        x, dy = (tf.transpose(v, [0, 3, 1, 2]) for v in (x, dy))
        strides = [1, 1, conv.stride, conv.stride]
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=conv.kernel_shape,
        out_backprop=dy,
        strides=strides,
        padding=conv.padding,
        data_format=layout,
    )


def backward_filter_matmul(x: tf.Tensor, dy: tf.Tensor, conv: Conv) -> tf.Tensor:
    """The kernel gradient as one matrix product per tap: dW[i, j] = X_ij^T dY, where X_ij is the
    padded input shifted by (i, j) and sampled at the stride, [N*Ho*Wo, Cin]."""
    kh, kw, cin, cout = conv.kernel_shape
    _, ho, wo, _ = conv.output_shape
    s = conv.stride
    padded = tf.pad(x, [[0, 0], *conv.pads, [0, 0]])
    dy_rows = tf.reshape(dy, [-1, cout])
    taps = [
        tf.matmul(
            tf.reshape(
                padded[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s], [-1, cin]
            ),
            dy_rows,
            transpose_a=True,
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return tf.reshape(tf.stack(taps), conv.kernel_shape)


def relative_error(a: object, b: object) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# --------------------------------------------------------------------------------- PyTorch side
def torch_calls(conv: Conv, channels_last: bool, times: int = 1) -> dict[str, Callable[[], None]]:
    """{direction: call} of PyTorch on `conv`'s shape, the input padded as TensorFlow pads it;
    each call runs the op `times` times."""
    import torch

    generator = torch.Generator().manual_seed(0)
    n, h, w, cin = conv.input_shape
    kh, kw, _, cout = conv.kernel_shape
    (top, bottom), (left, right) = conv.pads
    x = torch.randn(n, cin, h + top + bottom, w + left + right, generator=generator)
    weight = torch.randn(cout, cin, kh, kw, generator=generator)
    dy = torch.randn(n, cout, *conv.output_shape[1:3], generator=generator)
    if channels_last:
        x, weight, dy = (v.contiguous(memory_format=torch.channels_last) for v in (x, weight, dy))
    stride, zero, one = [conv.stride] * 2, [0, 0], [1, 1]

    def backward(mask: list[bool]) -> Callable[[], None]:
        def call() -> None:  # PyTorch computes on the CPU before it returns
            with torch.inference_mode():
                for _ in range(times):
                    torch.ops.aten.convolution_backward(
                        dy, x, weight, None, stride, zero, one, False, zero, 1, mask
                    )

        return call

    def forward() -> None:
        with torch.inference_mode():
            for _ in range(times):
                torch.nn.functional.conv2d(x, weight, stride=conv.stride)

    return {
        "forward": forward,
        "backward-data": backward([True, False, False]),
        "backward-filter": backward([False, True, False]),
    }


# ------------------------------------------------------------------------------------- running
def time_side(side: str, convs: list[Conv], reverse: bool, args: argparse.Namespace) -> dict:
    """Child process: {"conv index|implementation|direction": median ms} of one framework."""
    if side == "tf":
        set_tf_threads(args.threads)
        calls = {
            (i, *key): fn
            for i, conv in enumerate(convs)
            for key, fn in tf_calls(conv, args.inner).items()
        }
    else:
        peer.set_threads(args.threads)
        calls = {
            (i, name, direction): fn
            for i, conv in enumerate(convs)
            for name, cl in (("torch", False), ("torch-cl", True))
            for direction, fn in torch_calls(conv, cl, args.inner).items()
        }
    order = list(calls)[::-1] if reverse else list(calls)
    return {
        "|".join(map(str, key)): 1e3
        * time_calls(calls[key], repeats=args.repeats, warmup=args.warmup)["median_s"]
        / args.inner
        for key in order
    }


def measure(
    convs: list[Conv], sides: list[str], args: argparse.Namespace
) -> dict[tuple[int, str, str], float]:
    """{(conv index, implementation, direction): median ms over rounds}, each side in a child."""
    shapes = json.dumps([asdict(conv) for conv in convs])
    times = collections.defaultdict(list)
    for index in range(args.rounds):
        order = sides if index % 2 == 0 else sides[::-1]
        print(f"round {index + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        for side in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--shapes", shapes]
            cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            cmd += ["--inner", str(args.inner)]
            cmd += ["--threads", str(args.threads)] + (["--reverse"] if index % 2 else [])
            result = child_result(cmd, dict(os.environ), side)
            if "error" in result:
                raise SystemExit(f"the {side} side failed:\n{result['error']}")
            for key, ms in result["ms"].items():
                conv, name, direction = key.split("|")
                times[(int(conv), name, direction)].append(ms)
    return {key: statistics.median(values) for key, values in times.items()}


def print_results(
    counts: collections.Counter[Conv],
    ms: dict[tuple[int, str, str], float],
    names: list[str],
    inner: int,
) -> None:
    """Per direction: each shape's ms per implementation, the totals, GFLOP/s, best peer / tf."""
    convs = list(counts)
    print(
        f"\nms per op (median over rounds of calls running it {inner} times); x: how often the "
        "network has the shape"
    )
    for direction in DIRECTIONS:
        present = [name for name in names if (0, name, direction) in ms]
        print(f"\n{direction}")
        print(f"{'convolution':<28} {'x':>2} {'GFLOP':>6} " + " ".join(f"{n:>10}" for n in present))
        totals = collections.Counter()
        for index, conv in enumerate(convs):
            row = [ms[(index, name, direction)] for name in present]
            totals.update({name: counts[conv] * t for name, t in zip(present, row, strict=True)})
            cells = " ".join(f"{t:>10.2f}" for t in row)
            print(f"{conv.label():<28} {counts[conv]:>2} {conv.gflop:>6.3f} {cells}")
        gflop = sum(conv.gflop * count for conv, count in counts.items())
        print(
            f"{'total ms':<28} {'':>2} {gflop:>6.2f} "
            + " ".join(f"{totals[n]:>10.1f}" for n in present)
        )
        print(
            f"{'GFLOP/s':<28} {'':>9} "
            + " ".join(f"{gflop / totals[n] * 1e3:>10.0f}" for n in present)
        )
        peers = [totals[n] for n in present if n.startswith("torch")]
        if peers:
            print(f"best PyTorch / tf: {min(peers) / totals['tf']:.2f}x (> 1: TensorFlow faster)")


def check_rewrites(convs: list[Conv]) -> dict[str, float]:
    """{rewrite: largest relative difference from TensorFlow's backward-filter op over `convs`}."""
    worst = dict.fromkeys(ALTERNATIVES, 0.0)
    for conv in convs:
        calls = tf_calls(conv)
        reference = calls[("tf", "backward-filter")]()
        for name in ALTERNATIVES:
            error = relative_error(calls[(name, "backward-filter")](), reference)
            worst[name] = max(worst[name], error)
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small_28")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--inner", type=int, default=10, help="runs of the op per timed call")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra/inter-op")
    parser.add_argument("--no-torch", action="store_true", help="TensorFlow's side only")
    parser.add_argument("--side", choices=("tf", "torch"), help=argparse.SUPPRESS)  # a child
    parser.add_argument("--shapes", help=argparse.SUPPRESS)  # the child's convolutions, JSON
    parser.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.rounds, args.repeats, args.threads, args.inner) < 1 or args.warmup < 0:
        parser.error(
            "--batch, --rounds, --repeats, --threads and --inner must be >= 1, --warmup >= 0"
        )
    if args.side:
        convs = [
            Conv(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
            for d in json.loads(args.shapes)
        ]
        print_result({"ms": time_side(args.side, convs, args.reverse, args)})
        return
    missing = None if args.no_torch else peer.available()
    sides = ["tf"] + ([] if args.no_torch or missing else ["torch"])
    print(machine("both" if "torch" in sides else "tensorflow"))
    print(
        f"{args.threads} intra- and inter-op threads on each side; TensorFlow's oneDNN "
        f"{'on' if onednn_enabled() else 'off'}"
        + (f"; PyTorch skipped ({missing})" if missing else "")
    )
    counts = convolutions(args.preset, args.batch)
    print(
        f"{args.preset}, batch {args.batch}: {sum(counts.values())} convolutions, {len(counts)} shapes"
    )
    worst = check_rewrites(list(counts))
    print(
        "backward-filter rewrites against TensorFlow's op, largest relative difference: "
        + ", ".join(f"{name} {error:.1e}" for name, error in worst.items())
    )
    ms = measure(list(counts), sides, args)
    names = ["tf", *(["torch", "torch-cl"] if "torch" in sides else []), *ALTERNATIVES]
    print_results(counts, ms, names, args.inner)


if __name__ == "__main__":
    main()
