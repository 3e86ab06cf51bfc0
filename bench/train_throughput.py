"""Training throughput and peak memory of `DiffusionModel`'s train step against the PyTorch peer at
its best (`peer.py`: diffusers' `UNet2DModel` of the same architecture doing the same step).

Workloads: `cifar10` (the ddpm_cifar10 U-Net, 35.7M parameters, 32x32x3, batch 8), `cifar10b32`
(the same at batch 32), `small28` (small_28, 1.1M parameters, 28x28x1, batch 32), and with
--only `small28b64` (batch 64) and `tiny8` (the digits preset's tiny_8, batch 64). Each runs in
float32 and, with the tag `-bf16`, in bfloat16 (Keras' `mixed_bfloat16` policy; the peer's forward
pass and loss under `torch.autocast("cpu", dtype=torch.bfloat16)`). Configurations, each in its own
subprocess (so the peak resident set size is its own):

    WORKLOAD[-bf16]-graph     ddpm_tf's train step, graph mode, with its fused CPU kernels (the default)
    WORKLOAD[-bf16]-xla       the same with `compile(..., jit_compile=True)`
    WORKLOAD[-bf16]-torch-V   the peer, V one of eager, eager-cl, compile, compile-cl (torch.compile
                              with inductor; -cl: channels_last weights and inputs), AdamW with
                              fused=True, EMA by torch._foreach_lerp_
  only with --only:
    WORKLOAD[-bf16]-standard  ddpm_tf with TensorFlow's standard ops only (DDPM_TF_FUSED_KERNELS=0
                              and Keras' Adam): what the fused GroupNorm kernels and FusedAdam buy
    WORKLOAD[-bf16]-inter1    one TF inter-op thread: one op at a time, as PyTorch runs
    WORKLOAD[-bf16]-onednn / -nonednn   TF_ENABLE_ONEDNN_OPTS=1 / 0 (TF's default depends on the CPU)
    WORKLOAD[-bf16]-nodrop, ...-standard-nodrop, ...-torch-V-nodrop   dropout 0 in both frameworks
    WORKLOAD-distill          a progressive-distillation step (`DistillationModel`: two teacher
                              calls, then the student's step), beside WORKLOAD-graph

Both frameworks run `--threads` intra-op and inter-op threads. A step's time is the median of
`--repeats` timed steps after `--warmup` steps (the first traces or compiles; its time is reported
apart). A virtual machine's speed can drift by 20% over minutes; `--rounds N` runs the
configurations N times, interleaved in alternating order, and reports the median of the rounds.
The comparison table sets each ddpm_tf configuration against the fastest peer variant measured
for the same workload and precision. The default run measures every workload's graph, XLA and
peer variants, in float32, and in bfloat16 where the CPU multiplies it natively (AVX512-BF16 or
AMX); it takes about an hour on 2 cores.

    python bench/train_throughput.py --rounds 2                # the default configurations
    python bench/train_throughput.py --only small28-graph small28-xla --repeats 20
    python bench/train_throughput.py --no-torch --json /tmp/train.json
    python bench/train_throughput.py --only cifar10-graph cifar10-torch-eager cifar10-torch-compile-cl
    python bench/train_throughput.py --only cifar10-graph cifar10-torch-eager --breakdown
    python bench/train_throughput.py --only small28-graph small28-torch-eager --peak

--peak also measures the machine's dense matrix-product rate and prints each step's arithmetic
rate (the network's forward and backward GFLOP, as TF's profiler counts them, per second) beside
it: how close a configuration runs to what the cores can do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import peer  # noqa: E402
from common import (  # noqa: E402
    child_result,
    machine,
    native_bfloat16,
    onednn_enabled,
    peak_rss_mib,
    print_result,
    rss_mib,
    set_tf_threads,
    time_calls,
)


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    name: str
    framework: str  # "tf" or "torch"
    preset: str
    batch: int
    jit_compile: bool = False
    onednn: bool | None = None  # TF_ENABLE_ONEDNN_OPTS for the child; None: TF's default
    inter_op: int | None = None  # TF inter-op threads (ops run at once); None: --threads
    in_default_run: bool = True
    precision: str = "float32"  # or "bfloat16" (mixed: float32 weights)
    dropout: float | None = None  # overrides the architecture's dropout rate (both frameworks)
    fused: bool = True  # ddpm_tf's fused CPU kernels (False: DDPM_TF_FUSED_KERNELS=0)
    distill: bool = False  # a DistillationModel's step (progressive distillation)
    variant: str | None = None  # the peer's way of running (peer.VARIANTS), torch only

    @property
    def workload(self) -> tuple[str, int, str, float | None]:
        """What a step computes: configurations with equal workloads are compared."""
        return self.preset, self.batch, self.precision, self.dropout


WORKLOADS = {  # name: (preset, batch, in the default run)
    "cifar10": ("ddpm_cifar10", 8, True),
    "cifar10b32": ("ddpm_cifar10", 32, True),
    "small28": ("small_28", 32, True),
    "small28b64": ("small_28", 64, False),
    "tiny8": ("tiny_8", 64, False),
}
PRECISIONS = {"": "float32", "-bf16": "bfloat16"}


def workload_configs(prefix: str, preset: str, batch: int, default: bool) -> list[Config]:
    """Every configuration of one workload, in both precisions."""
    configs = []
    for tag, precision in PRECISIONS.items():
        base = Config("", "tf", preset, batch, precision=precision, in_default_run=default)
        measured_by_default = default and (precision == "float32" or native_bfloat16())
        tf_modes = {
            "graph": {"in_default_run": measured_by_default},
            "xla": {"jit_compile": True, "in_default_run": measured_by_default},
            "standard": {"fused": False, "in_default_run": False},
            "inter1": {"inter_op": 1, "in_default_run": False},
            "onednn": {"onednn": True, "in_default_run": False},
            "nonednn": {"onednn": False, "in_default_run": False},
            "nodrop": {"dropout": 0.0, "in_default_run": False},
            "standard-nodrop": {"fused": False, "dropout": 0.0, "in_default_run": False},
        }
        if precision == "float32" and preset != "ddpm_cifar10":
            tf_modes["distill"] = {"distill": True, "in_default_run": False}
        for mode, changes in tf_modes.items():
            configs.append(replace(base, name=f"{prefix}{tag}-{mode}", **changes))
        if preset not in peer.ARCHITECTURES:
            continue
        for variant in peer.VARIANTS:
            torch = replace(
                base, framework="torch", variant=variant, in_default_run=measured_by_default
            )
            configs.append(replace(torch, name=f"{prefix}{tag}-torch-{variant}"))
            configs.append(
                replace(
                    torch,
                    name=f"{prefix}{tag}-torch-{variant}-nodrop",
                    dropout=0.0,
                    in_default_run=False,
                )
            )
    return configs


CONFIGS: dict[str, Config] = {
    c.name: c
    for prefix, (preset, batch, default) in WORKLOADS.items()
    for c in workload_configs(prefix, preset, batch, default)
}


# ---------------------------------------------------------------------------------- TensorFlow
def run_tf(config: Config, repeats: int, warmup: int, threads: int, breakdown: bool) -> dict:
    """Times `DiffusionModel`'s train step (Keras' train function on a repeated in-memory batch)."""
    import ddpm_tf  # noqa: F401  (first: TensorFlow loads with the package's measured oneDNN choice)

    import_rss = rss_mib()  # the import's memory, measured apart from the model's
    import tensorflow as tf
    from common import keras_train_step

    threads_used = set_tf_threads(threads)
    if config.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(config.inter_op)
        threads_used["inter_op"] = config.inter_op
    model, images, step = keras_train_step(
        config.preset,
        config.batch,
        precision=config.precision,
        dropout=config.dropout,
        jit_compile=config.jit_compile,
        learning_rate=peer.LEARNING_RATE,
        distill=config.distill,
    )
    network = model.network
    setup_rss = rss_mib()
    result = time_calls(step, repeats, warmup)
    result["params"] = int(network.count_params())
    result["import_rss_mib"] = import_rss
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["threads"] = threads_used
    result["onednn"] = onednn_enabled()
    result["fused"] = fused_kernels(config.jit_compile)
    result["step_gflop"] = network_gflop(network, images)
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
        result["tf_allocator_peak_mib"] = info["peak"] / 2**20
    except (ValueError, RuntimeError) as err:
        result["tf_allocator_peak_mib"] = None
        result["tf_allocator_note"] = str(err)
    if breakdown:
        result["breakdown"] = tf_breakdown(model, images, repeats, warmup, config.jit_compile)
    return result


def network_gflop(network, images) -> float:
    """GFLOP of the network's forward and backward pass on `images` (TF's profiler counts).

    The arithmetic a step cannot avoid: the convolutions, matrix products and their gradients
    (a multiply-add counts 2). The diffusion arithmetic, Adam and the EMA add under 1%.
    """
    import tensorflow as tf

    t = tf.zeros([images.shape[0]], tf.int32)

    @tf.function(autograph=False)
    def forward_backward(x, t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(network([x, t], training=True)))
        return tape.gradient(loss, network.trainable_variables)

    graph = forward_backward.get_concrete_function(images, t).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 1e9


def matmul_peak(threads: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of one large dense matrix product per dtype: what this machine's cores can do (on
    the path the U-Net trains on: TensorFlow loaded through ddpm_tf, with its oneDNN choice)."""
    import ddpm_tf  # noqa: F401

    n = 4096
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    out = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.uniform([n, n], seed=0), dtype)
        product = tf.function(lambda a=a: tf.linalg.matmul(a, a)[0, 0])  # one number back
        seconds = time_calls(lambda fn=product: fn().numpy(), repeats, 2)["median_s"]
        out[dtype] = 2 * n**3 / seconds / 1e9
    return out


def fused_kernels(jit_compile: bool) -> str:
    """ "on" when the step runs ddpm_tf's fused CPU kernels, else why not."""
    from ddpm_tf import kernels

    if jit_compile:
        return "xla"  # XLA graphs keep TensorFlow's ops
    return "on" if kernels.active() else "off"


def tf_breakdown(model, images, repeats: int, warmup: int, jit_compile: bool) -> dict[str, float]:
    """Median seconds of the forward pass, forward + backward, and the update (Adam + EMA) alone."""
    import tensorflow as tf

    network, diffusion = model.network, model.diffusion
    variables = network.trainable_variables
    batch = images.shape[0]
    t = tf.random.uniform([batch], 0, diffusion.num_timesteps, tf.int32, seed=1)
    noise = tf.random.normal(images.shape, seed=2)
    x_t = diffusion.q_sample(images, t, noise)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def forward():
        return tf.reduce_mean(tf.square(network([x_t, t], training=True) - noise))

    @tf.function(jit_compile=jit_compile, autograph=False)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(network([x_t, t], training=True) - noise))
        grads = tape.gradient(loss, variables)
        return loss, tf.linalg.global_norm(grads)

    grads = [tf.zeros_like(v) for v in variables]

    @tf.function(jit_compile=jit_compile, autograph=False)
    def update():
        model.optimizer.apply(grads, variables)
        model._update_ema()
        return model.optimizer.iterations

    out = {}
    for name, fn in (
        ("forward", forward),
        ("forward+backward", forward_backward),
        ("adam+ema", update),
    ):
        out[name] = time_calls(fn, repeats, warmup)["median_s"]
    return out


# ------------------------------------------------------------------------------------- PyTorch
def run_torch(config: Config, repeats: int, warmup: int, threads: int, breakdown: bool) -> dict:
    """Times the peer's training step (`peer.train_step`) in the configuration's variant."""
    import torch

    import_rss = rss_mib()
    threads_used = peer.set_threads(threads)
    variant = peer.VARIANTS[config.variant]
    model, step = peer.train_step(
        config.preset, config.batch, variant, config.precision, config.dropout
    )
    setup_rss = rss_mib()
    result = time_calls(step, repeats, warmup)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["import_rss_mib"] = import_rss
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["threads"] = threads_used
    result["versions"] = peer.versions()
    result["attention_resolutions"] = peer.attention_resolutions(model, config.preset)
    result["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    result["step_gflop"] = peer.network_gflop(config.preset, config.batch)
    if breakdown:
        result["breakdown"] = torch_breakdown(config, variant, repeats, warmup)
    return result


def torch_breakdown(config: Config, variant: peer.Variant, repeats: int, warmup: int) -> dict:
    """Median seconds of the peer's forward pass and of forward + backward alone."""
    import torch

    call, _ = peer.network(config.preset, variant, config.dropout)
    images = peer.inputs(config.preset, config.batch, variant)
    t = torch.randint(0, peer.T, (config.batch,))

    def forward() -> None:
        with torch.no_grad(), peer.autocast(config.precision):
            call(images, t).sample.float().mean().item()

    def forward_backward() -> None:
        with peer.autocast(config.precision):
            loss = call(images, t).sample.float().square().mean()
        loss.backward()
        loss.item()

    return {
        name: time_calls(fn, repeats, warmup)["median_s"]
        for name, fn in (("forward", forward), ("forward+backward", forward_backward))
    }


# --------------------------------------------------------------------------------------- driver
def run_one(name: str, args: argparse.Namespace) -> None:
    """Child process: measures one configuration and prints its result as one JSON line."""
    config = CONFIGS[name]
    runner = run_tf if config.framework == "tf" else run_torch
    result = runner(config, args.repeats, args.warmup, args.threads, args.breakdown)
    result.update(
        name=config.name,
        framework=config.framework,
        preset=config.preset,
        batch=config.batch,
        jit_compile=config.jit_compile,
        precision=config.precision,
        images_per_s=config.batch / result["median_s"],
        dropout=config.dropout,
        variant=config.variant,
    )
    print_result(result)


def run_child(name: str, args: argparse.Namespace) -> dict:
    """Runs `--one name` in a fresh interpreter; returns its result or {"error": ...}."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        name,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    if args.breakdown:
        cmd.append("--breakdown")
    env = dict(os.environ)
    onednn = CONFIGS[name].onednn
    if onednn is not None and CONFIGS[name].framework == "tf":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    if not CONFIGS[name].fused:
        env["DDPM_TF_FUSED_KERNELS"] = "0"
    return child_result(cmd, env, name)


def measure_peak(args: argparse.Namespace) -> dict[str, float] | None:
    """The machine's dense matrix-product GFLOP/s per dtype (a child process), or None."""
    print("running matmul peak ...", flush=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--peak-child"]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    result = child_result(cmd, dict(os.environ), "matmul peak")
    if "error" in result:
        print(f"  matmul peak failed:\n{result['error']}", flush=True)
        return None
    return {dtype: result[dtype] for dtype in ("float32", "bfloat16")}


def combine_rounds(rounds: list[dict]) -> dict:
    """One result from several rounds of a configuration: the median of the rounds' medians."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    result = dict(ok[0])
    medians = [r["median_s"] for r in ok]
    result.update(
        median_s=statistics.median(medians),
        min_s=min(r["min_s"] for r in ok),
        max_s=max(r["max_s"] for r in ok),
        cpu_s=statistics.median(r["cpu_s"] for r in ok),
        first_s=statistics.median(r["first_s"] for r in ok),
        import_rss_mib=max(r["import_rss_mib"] for r in ok),
        setup_rss_mib=max(r["setup_rss_mib"] for r in ok),
        peak_rss_mib=max(r["peak_rss_mib"] for r in ok),
        round_medians_s=medians,
        failed_rounds=len(rounds) - len(ok),
    )
    if any(r["other_cores"] is not None for r in ok):
        result["other_cores"] = max(r["other_cores"] or 0.0 for r in ok)
    if any(r.get("tf_allocator_peak_mib") is not None for r in ok):
        result["tf_allocator_peak_mib"] = max(r.get("tf_allocator_peak_mib") or 0.0 for r in ok)
    result["images_per_s"] = result["batch"] / result["median_s"]
    return result


def fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def print_table(results: list[dict], machine_line: str, peak: dict | None = None) -> None:
    """The results as a fixed-width table, then the comparison with the peer and any breakdowns."""
    print()
    print(f"machine: {machine_line}")
    header = (
        f"{'config':<29} {'params':>11} {'batch':>5} {'img/s':>7} {'ms/step':>8} "
        f"{'min-max ms':>13} {'cores':>5} {'1st s':>6} {'import RSS':>10} {'setup RSS':>9} "
        f"{'peak RSS':>8} "
        f"{'TF alloc':>8} {'other':>5} {'oneDNN':>6} {'fused':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['name']:<29} FAILED: {r['error'].splitlines()[0]}")
            continue
        spread = f"{1e3 * r['min_s']:,.0f}-{1e3 * r['max_s']:,.0f}"
        other = "n/a" if r["other_cores"] is None else f"{r['other_cores']:.2f}"
        onednn = {True: "on", False: "off"}.get(
            r.get("onednn"), "torch" if r["framework"] == "torch" else "?"
        )
        print(
            f"{r['name']:<29} {r['params']:>11,} {r['batch']:>5} {r['images_per_s']:>7.2f} "
            f"{1e3 * r['median_s']:>8,.0f} {spread:>13} {r['cpu_s'] / r['median_s']:>5.2f} "
            f"{r['first_s']:>6.1f} {fmt_mib(r['import_rss_mib']):>10} "
            f"{fmt_mib(r['setup_rss_mib']):>9} "
            f"{fmt_mib(r['peak_rss_mib']):>8} {fmt_mib(r.get('tf_allocator_peak_mib')):>8} "
            f"{other:>5} {onednn:>6} {r.get('fused', 'n/a'):>5}"
        )
    print(
        "ms/step: median; cores: process CPU time / wall time per step; 1st s: the first step "
        "(trace/compile); other: cores busy with other processes meanwhile (max over rounds); "
        "oneDNN: TF's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; TF's default depends on the CPU); "
        "fused: ddpm_tf's fused GroupNorm kernels (ddpm_tf.kernels)."
    )
    for r in results:
        if len(r.get("round_medians_s", ())) > 1:
            per_round = ", ".join(f"{1e3 * m:,.0f}" for m in r["round_medians_s"])
            print(f"  {r['name']}: median ms/step of each round {per_round}")
    print(
        "RSS in MiB per process (import: after importing the framework; setup: after building "
        "model, EMA copy and optimizer; peak: ru_maxrss)."
    )
    notes = {r.get("tf_allocator_note") for r in results if r.get("tf_allocator_note")}
    for note in notes:
        print(f"TF allocator stats: {note}")
    threads = {r["name"]: r["threads"] for r in results if "threads" in r}
    if threads:
        print(
            "threads (intra/inter-op): "
            + ", ".join(f"{k} {v['intra_op']}/{v['inter_op']}" for k, v in threads.items())
        )

    print_comparison([r for r in results if "error" not in r])
    print_arithmetic(results, peak)
    for r in results:
        if "breakdown" in r:
            parts = ", ".join(f"{k} {1e3 * v:,.0f} ms" for k, v in r["breakdown"].items())
            print(f"breakdown {r['name']}: {parts} (full step {1e3 * r['median_s']:,.0f} ms)")


def print_comparison(results: list[dict]) -> None:
    """Per workload: every ddpm_tf configuration against the fastest peer variant measured."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(CONFIGS[r["name"]].workload, []).append(r)
    for (preset, batch, precision, dropout), rows in groups.items():
        peers = sorted((r for r in rows if r["framework"] == "torch"), key=lambda r: r["median_s"])
        ours = [r for r in rows if r["framework"] == "tf"]
        if not peers or not ours:
            continue
        best = peers[0]
        drop = "" if dropout is None else f", dropout {dropout}"
        print(
            f"\n{preset}, batch {batch}, {precision}{drop}: the peer is UNet2DModel "
            f"({best['versions']}, ATen {best['cpu_capability']}), {best['params']:,} parameters, "
            f"attention at {best['attention_resolutions']}"
        )
        print(
            "  peer variants, ms/step: "
            + ", ".join(f"{r['variant']} {1e3 * r['median_s']:,.0f}" for r in peers)
        )
        print(
            f"  {'ddpm-tf config':<29} {'params':>11} {'ms/step':>8} {'best peer':>16} {'peer/ours':>9}"
        )
        for r in ours:
            print(
                f"  {r['name']:<29} {r['params']:>11,} {1e3 * r['median_s']:>8,.0f} "
                f"{best['variant']:>10} {1e3 * best['median_s']:>5,.0f} "
                f"{best['median_s'] / r['median_s']:>9.2f}"
            )
    if any(r["framework"] == "torch" for r in results):
        print("peer/ours > 1: ddpm-tf trains faster than PyTorch at its best on this machine.")


def print_arithmetic(results: list[dict], peak: dict | None) -> None:
    """Each step's arithmetic rate (network GFLOP / step time), beside the machine's matmul rate.

    Each framework's row counts the arithmetic its own network does (TF's profiler, PyTorch's
    FlopCounterMode): ddpm-tf's upsampling convolutions do 4/9 of the peer's multiply-adds.
    """
    rows = [r for r in results if "error" not in r and r.get("step_gflop")]
    if not rows:
        return
    print()
    if peak:
        print(
            f"dense matmul (4096x4096, {rows[0]['threads']['intra_op']} threads): float32 "
            f"{peak['float32']:,.0f} GFLOP/s, bfloat16 {peak['bfloat16']:,.0f} GFLOP/s"
        )
    print(f"{'config':<29} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of matmul':>9}")
    for r in rows:
        count = r["step_gflop"]
        rate = count / r["median_s"]
        share = f"{rate / peak[r['precision']]:.0%}" if peak else "n/a"
        print(f"{r['name']:<29} {count:>10.1f} {rate:>8,.0f} {share:>9}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per configuration")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (the first traces/compiles)"
    )
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="run only these")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads for TF and torch (default: all cores)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time forward, forward+backward and the update alone",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every configuration this many times, interleaved, and take the median of the "
        "rounds (steadier comparisons on a machine whose speed drifts)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--peak",
        action="store_true",
        help="also measure the machine's dense matrix-product rate (float32, bfloat16) and give "
        "each step's arithmetic rate as a fraction of it",
    )
    parser.add_argument("--one", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1 or args.rounds < 1:
        parser.error(
            "--repeats, --warmup and --rounds must be >= 1 (the first warm-up step compiles)"
        )

    if args.one:
        run_one(args.one, args)
        return
    if args.peak_child:
        print_result(matmul_peak(args.threads, args.repeats))
        return

    names = args.only or [c.name for c in CONFIGS.values() if c.in_default_run]
    if any(CONFIGS[n].framework == "torch" for n in names):
        reason = "--no-torch given" if args.no_torch else peer.available()
        if reason:
            print(f"Skipping the PyTorch peer: {reason}")
            names = [n for n in names if CONFIGS[n].framework != "torch"]

    frameworks = "both" if any(CONFIGS[n].framework == "torch" for n in names) else "tensorflow"
    machine_line = machine(frameworks)
    print(f"machine: {machine_line}")
    print(
        f"warm-up {args.warmup} steps, {args.repeats} timed steps, {args.threads} threads, "
        f"{args.rounds} round(s)"
    )
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(args.rounds):
        order = names if index % 2 == 0 else names[::-1]  # alternate to spread any drift evenly
        for name in order:
            label = f"{name} (round {index + 1}/{args.rounds})" if args.rounds > 1 else name
            print(f"running {label} ...", flush=True)
            result = run_child(name, args)
            if "error" in result:
                print(f"  {name} failed:\n{result['error']}", flush=True)
            else:
                print(
                    f"  {result['images_per_s']:.2f} img/s, {1e3 * result['median_s']:,.0f} ms/step, "
                    f"peak RSS {result['peak_rss_mib']:,.0f} MiB ({result['wall_s']:.0f} s)",
                    flush=True,
                )
            rounds[name].append(result)
    results = [combine_rounds(rounds[name]) for name in names]
    peak = measure_peak(args) if args.peak else None
    print_table(results, machine_line, peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_line,
                    "args": vars(args),
                    "matmul_gflop_per_s": peak,
                    "results": results,
                    "rounds": rounds,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
