"""Where a training step's time goes: TensorFlow's profiler trace of `DiffusionModel`'s train step,
summed per op type and per kind of layer.

The step is Keras' train function on a repeated in-memory batch (as in train_throughput.py). After
`--warmup` steps, `--repeats` steps run under `tf.profiler.experimental`; the trace's TF ops are
summed per step. Ops run concurrently (TensorFlow's inter-op threads, each op on the intra-op
threads), so the op times add up to more than the step's wall time: the shares are of the summed
op time, which says where the work is, not how much the step would shrink without it.

Convolutions are split into forward, backward-data (the gradient to the input) and
backward-filter (the gradient to the kernel). Other layer kinds come from the ops' names: the
U-Net's sub-layers (`norm1`, `conv2`, `dropout`, ...) and their gradients; ops outside any layer (SiLU, which `keras.ops.silu` names at the top level, the
residual adds, the loss, Adam and the EMA) are listed by op type.

    python bench/step_profile.py --preset small_28 --batch 32 --precision bfloat16
    python bench/step_profile.py --preset small_28 --batch 32 --dropout 0     # the step without it
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
from pathlib import Path

import ddpm_tf  # noqa: F401  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import keras_train_step, machine, time_calls  # noqa: E402

LAYER = re.compile(r"u_net(?:_\d+)?/([^/]+)/([^/]+)")
KINDS = (  # (kind, pattern on the sub-layer or block name), first match wins
    ("group norm", r"norm"),
    ("dropout", r"dropout"),
    ("attention", r"^(q|k|v|proj_out)$"),
    ("timestep/label embedding", r"temb|time|label"),
)


def layer_kind(path: str, op: str) -> str | None:
    """The kind of U-Net layer an op belongs to, from its name; None outside the U-Net's layers.

    Convolutions go by op type, split into the forward pass, the backward pass to the input
    (backward-data, Conv2DBackpropInput) and to the kernel (backward-filter, Conv2DBackpropFilter):
    grappler fuses a residual add into the convolution before it, and the fused op keeps the add's
    name.
    """
    conv = conv_direction(op)
    if conv:
        return conv
    match = LAYER.search(path)
    if match is None:
        return None
    block, sub = (re.sub(r"_\d+$", "", part) for part in match.groups())
    for kind, pattern in KINDS:
        if re.search(pattern, sub) or re.search(pattern, block):
            return kind
    if re.search(r"attn", block):
        return "attention"
    return "other U-Net ops"


def conv_direction(op: str) -> str | None:
    """ "convolution forward/backward-data/backward-filter" for a convolution op type, else None."""
    if "Conv2DBackpropInput" in op:
        return "convolution backward-data"
    if "Conv2DBackpropFilter" in op:
        return "convolution backward-filter"
    if "Conv2D" in op:
        return "convolution forward"
    return None


def summarize(events: list[tuple[str, float]], steps: int) -> dict[str, collections.Counter]:
    """Milliseconds per step by op type and by layer kind, from (TF op event name, ms) pairs."""
    by_op, by_kind = collections.Counter(), collections.Counter()
    for name, ms in events:
        path, _, op = name.rpartition(":")
        direction = "backward" if "gradient_tape" in path else "forward"
        kind = layer_kind(path, op)
        by_op[op] += ms / steps
        if kind is None:
            kind = f"outside layers: {op}"
        elif not kind.startswith("convolution"):
            kind = f"{kind} ({direction})"
        by_kind[kind] += ms / steps
    return {"op": by_op, "kind": by_kind}


def trace_events(logdir: str) -> list[tuple[str, float]]:
    """(name, ms) of every TF op the trace holds (the executor's compute threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    events = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name and not name.startswith("__inference"):
                    events.append((name, event.duration_ps / 1e9))
    return events


def profile(args: argparse.Namespace) -> tuple[float, dict[str, collections.Counter]]:
    """(median step ms without the profiler, per-step breakdown under it)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    _, _, step = keras_train_step(
        args.preset, args.batch, precision=args.precision, dropout=args.dropout
    )
    step_s = time_calls(step, args.repeats, args.warmup)["median_s"]
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.repeats):
            step()
        tf.profiler.experimental.stop()
        events = trace_events(logdir)
    return step_s * 1e3, summarize(events, args.repeats)


def print_table(title: str, counter: collections.Counter, top: int) -> None:
    total = sum(counter.values())
    print(f"\n{title:<52} {'ms/step':>8} {'share':>6}")
    for name, ms in counter.most_common(top):
        print(f"{name:<52} {ms:8.1f} {100 * ms / total:5.1f}%")
    print(f"{'all ops':<52} {total:8.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small_28", help="U-Net preset (default small_28)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--dropout", type=float, help="override the preset's dropout rate")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top", type=int, default=16, help="rows per table")
    args = parser.parse_args(argv)
    step_ms, tables = profile(args)
    dropout = "" if args.dropout is None else f", dropout {args.dropout}"
    print(f"machine: {machine()}")
    print(f"{args.preset} batch {args.batch} {args.precision}{dropout}: {step_ms:.1f} ms per step")
    print_table("by layer kind", tables["kind"], args.top)
    print_table("by op type", tables["op"], args.top)


if __name__ == "__main__":
    main()
