"""Training throughput and peak memory of `DiffusionModel`'s train step, graph and XLA.

Configurations (each runs in its own subprocess, so the peak resident set size is its own):

    cifar10-graph     ddpm_cifar10 U-Net (35.7M parameters, 32x32x3), batch 8, graph train step
    cifar10-xla       the same with `compile(..., jit_compile=True)`
    small28-graph     small_28 U-Net (1.1M parameters, 28x28x1), batch 32, graph train step
    small28-xla       the same, XLA
    cifar10-diffusers the same CIFAR-10 architecture as `diffusers.UNet2DModel` in PyTorch, batch 8,
                      with the same step: random t, noise, x_t, MSE on eps, backward, clip 1.0, Adam
                      2e-4 and an EMA update; run only when torch and diffusers are importable
    small28-diffusers a UNet2DModel with small_28's widths (32, 64, 64), one residual block per level,
                      attention at 7x7 and in the middle, 8 groups; batch 32
    cifar10-bf16, cifar10-bf16-xla, small28-bf16, small28-bf16-xla   the ddpm_tf steps under Keras'
                      `mixed_bfloat16` policy (bfloat16 network, float32 weights, head and loss)
    cifar10-diffusers-bf16, small28-diffusers-bf16   the diffusers steps with the forward pass and
                      loss under `torch.autocast("cpu", dtype=torch.bfloat16)`
    cifar10-graph-standard, small28-graph-standard, cifar10-bf16-standard, small28-bf16-standard
                      (only with --only) the steps with TensorFlow's standard ops only
                      (DDPM_TF_FUSED_KERNELS=0, and Keras' Adam for FusedAdam): what ddpm_tf's
                      fused GroupNorm kernels and fused Adam buy
    cifar10-graph-onednn  cifar10-graph with TF_ENABLE_ONEDNN_OPTS=1 (only with --only): TF turns
                      its oneDNN kernels on by default only on some x86 CPUs, PyTorch always uses them
    cifar10-graph-inter1, small28-graph-inter1, cifar10-bf16-inter1, small28-bf16-inter1
                      (only with --only) one inter-op thread: TF runs one op at a time, each on the
                      intra-op threads, as PyTorch does
    small28-graph-b64 (only with --only) small28-graph at batch 64: images/s against batch 32
    small28-distill, tiny8-graph, tiny8-distill  (only with --only) a progressive-distillation step
                      (`DistillationModel`: two teacher calls, then the student's step) of the
                      fashion_mnist (small_28, batch 32) and digits (tiny_8, batch 64) presets
                      beside their training steps: how long `ddpm-distill` takes per step
    small28-graph-nodrop, small28-diffusers-nodrop, small28-bf16-nodrop, small28-diffusers-bf16-nodrop
                      (only with --only) the small_28 steps with dropout 0 in both frameworks: what
                      the preset's dropout 0.1 costs each (the fashion_mnist preset trains without)
    small28-graph-standard-nodrop  (only with --only) small28-graph-standard with dropout 0: what
                      dropout's hashed masks cost on TensorFlow's ops, against the fused kernel

A step's time is the median of `--repeats` timed steps after `--warmup` steps (the first of which
traces and compiles; its time is reported apart). Both frameworks use `--threads` intra-op threads.
A virtual machine's speed can drift by 20% over minutes; `--rounds N` runs the configurations N
times, interleaved, and reports the median of the rounds, which makes comparisons steadier.

    python bench/train_throughput.py                        # the default configurations
    python bench/train_throughput.py --only small28-graph small28-xla --repeats 20
    python bench/train_throughput.py --no-torch --json /tmp/train.json
    python bench/train_throughput.py --only cifar10-graph cifar10-xla cifar10-graph-onednn \
        cifar10-diffusers --rounds 3
    python bench/train_throughput.py --only cifar10-graph cifar10-diffusers --breakdown
    python bench/train_throughput.py --only small28-graph small28-diffusers --peak

--peak also measures the machine's dense matrix-product rate and prints each step's arithmetic
rate (the network's forward and backward GFLOP, as TF's profiler counts them, per second) beside
it: how close a configuration runs to what the cores can do.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

RESULT_PREFIX = "TRAIN_THROUGHPUT_RESULT "
T = 1000
LEARNING_RATE = 2e-4
EMA_DECAY = 0.9999


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    name: str
    framework: str  # "tf" or "torch"
    preset: str
    batch: int
    jit_compile: bool = False
    onednn: bool | None = None  # TF_ENABLE_ONEDNN_OPTS for the child; None: TF's default
    inter_op: int | None = None  # TF inter-op threads (ops run at once); None: TF's default
    in_default_run: bool = True
    precision: str = "float32"  # or "bfloat16" (mixed: float32 weights)
    dropout: float | None = None  # overrides the architecture's dropout rate (both frameworks)
    fused: bool = True  # ddpm_tf's fused CPU kernels (False: DDPM_TF_FUSED_KERNELS=0)
    distill: bool = False  # a DistillationModel's step (progressive distillation)


NODROP = {"dropout": 0.0, "in_default_run": False}
STANDARD = {"fused": False, "in_default_run": False}
CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("cifar10-graph", "tf", "ddpm_cifar10", 8),
        Config("cifar10-xla", "tf", "ddpm_cifar10", 8, jit_compile=True),
        Config("small28-graph", "tf", "small_28", 32),
        Config("small28-xla", "tf", "small_28", 32, jit_compile=True),
        Config("cifar10-diffusers", "torch", "ddpm_cifar10", 8),
        Config("small28-diffusers", "torch", "small_28", 32),
        Config("cifar10-bf16", "tf", "ddpm_cifar10", 8, precision="bfloat16"),
        Config("cifar10-bf16-xla", "tf", "ddpm_cifar10", 8, True, precision="bfloat16"),
        Config("cifar10-diffusers-bf16", "torch", "ddpm_cifar10", 8, precision="bfloat16"),
        Config("small28-bf16", "tf", "small_28", 32, precision="bfloat16"),
        Config("small28-bf16-xla", "tf", "small_28", 32, True, precision="bfloat16"),
        Config("small28-diffusers-bf16", "torch", "small_28", 32, precision="bfloat16"),
        Config("cifar10-graph-onednn", "tf", "ddpm_cifar10", 8, onednn=True, in_default_run=False),
        Config("cifar10-graph-inter1", "tf", "ddpm_cifar10", 8, inter_op=1, in_default_run=False),
        Config("small28-graph-inter1", "tf", "small_28", 32, inter_op=1, in_default_run=False),
        Config("small28-graph-b64", "tf", "small_28", 64, in_default_run=False),
        Config("small28-distill", "tf", "small_28", 32, distill=True, in_default_run=False),
        Config("tiny8-graph", "tf", "tiny_8", 64, in_default_run=False),
        Config("tiny8-distill", "tf", "tiny_8", 64, distill=True, in_default_run=False),
        Config("small28-graph-nodrop", "tf", "small_28", 32, **NODROP),
        Config("cifar10-graph-standard", "tf", "ddpm_cifar10", 8, **STANDARD),
        Config("small28-graph-standard", "tf", "small_28", 32, **STANDARD),
        Config("small28-graph-standard-nodrop", "tf", "small_28", 32, **STANDARD | NODROP),
        Config("cifar10-bf16-standard", "tf", "ddpm_cifar10", 8, precision="bfloat16", **STANDARD),
        Config("small28-bf16-standard", "tf", "small_28", 32, precision="bfloat16", **STANDARD),
        Config("small28-diffusers-nodrop", "torch", "small_28", 32, **NODROP),
        Config("small28-bf16-nodrop", "tf", "small_28", 32, precision="bfloat16", **NODROP),
        Config(
            "small28-diffusers-bf16-nodrop", "torch", "small_28", 32, precision="bfloat16", **NODROP
        ),
        Config(
            "cifar10-bf16-inter1",
            "tf",
            "ddpm_cifar10",
            8,
            inter_op=1,
            in_default_run=False,
            precision="bfloat16",
        ),
        Config(
            "small28-bf16-inter1",
            "tf",
            "small_28",
            32,
            inter_op=1,
            in_default_run=False,
            precision="bfloat16",
        ),
    )
}

# google/ddpm-cifar10-32 written out (no download): Ho et al.'s CIFAR-10 network in diffusers.
DIFFUSERS_CIFAR10 = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "mid_block_scale_factor": 1,
    "dropout": 0.1,
}

# ddpm_tf's small_28 preset in diffusers' terms: widths 32, 64, 64 at 28, 14 and 7 pixels, one
# residual block per level (two on the way up), attention at 7x7 and in the middle, 8 groups.
DIFFUSERS_SMALL28 = {
    **DIFFUSERS_CIFAR10,
    "sample_size": 28,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
DIFFUSERS_CONFIGS = {"ddpm_cifar10": DIFFUSERS_CIFAR10, "small_28": DIFFUSERS_SMALL28}
# The pairs compared in the table: a diffusers configuration and the ddpm_tf ones that do its work.
COMPARISONS = {
    "cifar10-diffusers": (
        "cifar10-graph",
        "cifar10-graph-standard",
        "cifar10-xla",
        "cifar10-graph-onednn",
        "cifar10-graph-inter1",
    ),
    "small28-diffusers": (
        "small28-graph",
        "small28-graph-standard",
        "small28-xla",
        "small28-graph-inter1",
    ),
    "cifar10-diffusers-bf16": (
        "cifar10-bf16",
        "cifar10-bf16-standard",
        "cifar10-bf16-xla",
        "cifar10-bf16-inter1",
    ),
    "small28-diffusers-bf16": (
        "small28-bf16",
        "small28-bf16-standard",
        "small28-bf16-xla",
        "small28-bf16-inter1",
    ),
    "small28-diffusers-nodrop": ("small28-graph-nodrop",),
    "small28-diffusers-bf16-nodrop": ("small28-bf16-nodrop",),
}


# ------------------------------------------------------------------------------------ helpers
def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def time_steps(step: Callable[[], None], repeats: int, warmup: int) -> dict[str, Any]:
    """Times `step()`, which must block until its work is done: first call, warm-up, timed calls.

    Besides wall time it records the process CPU time per step (CPU / wall is how many cores the
    step kept busy) and how many cores other processes kept busy meanwhile, which slows a step.
    """
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    times, cpu_times = [], []
    busy_start, cpu_total_start = busy_cpu_seconds(), time.process_time()
    wall_start = time.perf_counter()
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    wall = time.perf_counter() - wall_start
    busy_end, own = busy_cpu_seconds(), time.process_time() - cpu_total_start
    other = None if busy_start is None else max(busy_end - busy_start - own, 0.0) / wall
    return {
        "first_step_s": first,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "cpu_s": statistics.median(cpu_times),
        "other_cores": other,
    }


# ---------------------------------------------------------------------------------- TensorFlow
def run_tf(config: Config, repeats: int, warmup: int, threads: int, breakdown: bool) -> dict:
    """Times `DiffusionModel`'s train step (Keras' train function on a repeated in-memory batch)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    if config.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(config.inter_op)
    from common import keras_train_step

    import ddpm_tf  # noqa: F401  (the import's memory is measured apart from the model's)

    import_rss = rss_mib()
    model, images, step = keras_train_step(
        config.preset,
        config.batch,
        precision=config.precision,
        dropout=config.dropout,
        jit_compile=config.jit_compile,
        learning_rate=LEARNING_RATE,
        distill=config.distill,
    )
    network = model.network
    setup_rss = rss_mib()
    result = time_steps(step, repeats, warmup)
    result["params"] = int(network.count_params())
    result["import_rss_mib"] = import_rss
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default",
    }
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
    """GFLOP/s of one large dense matrix product per dtype: what this machine's cores can do."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    n = 4096
    out = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.uniform([n, n], seed=0), dtype)
        product = tf.function(lambda a=a: tf.linalg.matmul(a, a)[0, 0])  # one number back
        seconds = time_steps(lambda fn=product: fn().numpy(), repeats, 2)["median_s"]
        out[dtype] = 2 * n**3 / seconds / 1e9
    return out


def fused_kernels(jit_compile: bool) -> str:
    """ "on" when the step runs ddpm_tf's fused CPU kernels, else why not."""
    from ddpm_tf import kernels

    if jit_compile:
        return "xla"  # XLA graphs keep TensorFlow's ops
    return "on" if kernels.active() else "off"


def onednn_enabled() -> bool | None:
    """Whether TF runs its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; on by default only on some CPUs)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


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
        out[name] = time_steps(
            lambda fn=fn: [v.numpy() for v in tf.nest.flatten(fn())], repeats, warmup
        )["median_s"]
    return out


# ------------------------------------------------------------------------------------- PyTorch
def torch_available() -> str | None:
    """None when torch and diffusers import, else the reason they do not."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return f"{type(err).__name__}: {err}"
    return None


def run_torch(config: Config, repeats: int, warmup: int, threads: int, breakdown: bool) -> dict:
    """Times the same training step on `diffusers.UNet2DModel` with the preset's architecture."""
    import diffusers
    import torch
    from diffusers import UNet2DModel

    import_rss = rss_mib()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    architecture = DIFFUSERS_CONFIGS[config.preset]
    if config.dropout is not None:
        architecture = {**architecture, "dropout": config.dropout}
    model = UNet2DModel(**architecture)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bfloat16")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    sqrt_ab = alphas_cumprod.sqrt().float()
    sqrt_1mab = (1.0 - alphas_cumprod).sqrt().float()
    size, channels = architecture["sample_size"], architecture["in_channels"]
    images = torch.rand(config.batch, channels, size, size) * 2.0 - 1.0
    counter = [0]

    def ema_update() -> None:
        n = counter[0]
        decay = min(EMA_DECAY, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, params, alpha=1.0 - decay)

    def step() -> None:
        t = torch.randint(0, T, (config.batch,))
        noise = torch.randn_like(images)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * images + sqrt_1mab[t].view(-1, 1, 1, 1) * noise
        with autocast:
            loss = torch.nn.functional.mse_loss(model(x_t, t).sample.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update()
        counter[0] += 1
        loss.item()

    setup_rss = rss_mib()
    result = time_steps(step, repeats, warmup)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["import_rss_mib"] = import_rss
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["threads"] = {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
    }
    result["versions"] = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    result["attention_resolutions"] = attention_resolutions(model, images)
    if breakdown:
        result["breakdown"] = torch_breakdown(
            model, params, optimizer, ema_update, images, repeats, warmup
        )
    return result


def attention_resolutions(model, images) -> list[int]:
    """Feature-map sizes at which the diffusers model applies self-attention (a config check)."""
    import torch
    from diffusers.models.attention_processor import Attention

    sizes: set[int] = set()
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: sizes.add(int(args[0].shape[-1])))
        for m in model.modules()
        if isinstance(m, Attention)
    ]
    with torch.no_grad():
        model(images[:1], torch.zeros(1, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    return sorted(sizes)


def torch_breakdown(
    model, params, optimizer, ema_update, images, repeats: int, warmup: int
) -> dict:
    """Median seconds of the forward pass, forward + backward, and the update (clip + Adam + EMA)."""
    import torch

    t = torch.randint(0, T, (images.shape[0],))
    noise = torch.randn_like(images)

    def forward() -> None:
        with torch.no_grad():
            torch.nn.functional.mse_loss(model(images, t).sample, noise).item()

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(images, t).sample, noise)
        loss.backward()
        loss.item()

    forward_backward()  # leaves gradients for the update

    def update() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update()

    return {
        name: time_steps(fn, repeats, warmup)["median_s"]
        for name, fn in (
            ("forward", forward),
            ("forward+backward", forward_backward),
            ("clip+adam+ema", update),
        )
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
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)


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
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    if not CONFIGS[name].fused:
        env["DDPM_TF_FUSED_KERNELS"] = "0"
    return child_result(cmd, env, name)


def child_result(cmd: list[str], env: dict[str, str], name: str) -> dict:
    """Runs a child of this script; returns the JSON it printed or {"error": ...}."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["wall_s"] = wall
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return {"name": name, "error": f"exit code {proc.returncode}\n{tail}", "wall_s": wall}


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
        first_step_s=statistics.median(r["first_step_s"] for r in ok),
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
    """The results as a fixed-width table, then the diffusers comparison and any breakdowns."""
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
            f"{r['first_step_s']:>6.1f} {fmt_mib(r['import_rss_mib']):>10} "
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

    by_name = {r["name"]: r for r in results if "error" not in r}
    for a, b in (("cifar10-graph", "cifar10-xla"), ("small28-graph", "small28-xla")):
        if a in by_name and b in by_name:
            ratio = by_name[b]["images_per_s"] / by_name[a]["images_per_s"]
            print(f"XLA / graph throughput, {a.split('-')[0]}: {ratio:.2f}x")

    for torch_name, ours_names in COMPARISONS.items():
        torch_result = by_name.get(torch_name)
        if not torch_result:
            continue
        print()
        print(
            f"{torch_name}: UNet2DModel ({torch_result['versions']}), "
            f"{torch_result['params']:,} parameters, attention at "
            f"{torch_result['attention_resolutions']}"
        )
        print(
            f"{'ddpm-tf config':<29} {'params':>11} {'ddpm-tf img/s':>13} {'diffusers img/s':>15} "
            f"{'ours/diffusers':>14}"
        )
        present = [n for n in ours_names if n in by_name]
        if not present:
            print(f"(no ddpm-tf configuration of {ours_names} in this run to compare with)")
        for name in present:
            ours, theirs = by_name[name]["images_per_s"], torch_result["images_per_s"]
            print(
                f"{name:<29} {by_name[name]['params']:>11,} {ours:>13.2f} {theirs:>15.2f} "
                f"{ours / theirs:>14.2f}"
            )
    if any(name in by_name for name in COMPARISONS):
        print("ratio > 1: ddpm-tf trains faster on this machine.")

    print_arithmetic(results, peak)
    for r in results:
        if "breakdown" in r:
            parts = ", ".join(f"{k} {1e3 * v:,.0f} ms" for k, v in r["breakdown"].items())
            print(f"breakdown {r['name']}: {parts} (full step {1e3 * r['median_s']:,.0f} ms)")


def print_arithmetic(results: list[dict], peak: dict | None) -> None:
    """Each step's arithmetic rate (network GFLOP / step time), beside the machine's matmul rate.

    A diffusers row uses the ddpm-tf count of its preset and batch: the two networks have the same
    layers and parameters (the count is printed in the comparison) and do the same products.
    """
    gflop = {(r["preset"], r["batch"]): r["step_gflop"] for r in results if r.get("step_gflop")}
    rows = [r for r in results if "error" not in r and (r["preset"], r["batch"]) in gflop]
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
        count = gflop[r["preset"], r["batch"]]
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
    parser.add_argument("--no-torch", action="store_true", help="skip the diffusers comparison")
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
        print(RESULT_PREFIX + json.dumps(matmul_peak(args.threads, args.repeats)), flush=True)
        return

    names = args.only or [c.name for c in CONFIGS.values() if c.in_default_run]
    if any(CONFIGS[n].framework == "torch" for n in names):
        reason = "--no-torch given" if args.no_torch else torch_available()
        if reason:
            print(f"Skipping the diffusers configurations (PyTorch comparison): {reason}")
            names = [n for n in names if CONFIGS[n].framework != "torch"]

    from common import machine

    machine_line = machine()
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
