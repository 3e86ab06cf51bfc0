"""Seconds per sampling step of ddpm_tf's compiled samplers against Hugging Face diffusers.

The same network on both sides: the `ddpm_cifar10` preset (Ho et al.'s 35.7M-parameter CIFAR-10
U-Net, dropout off) as `ddpm_tf.unet` and as `diffusers.UNet2DModel` with the google/ddpm-cifar10-32
config (`train_throughput.DIFFUSERS_CIFAR10`), untrained, float32, on the CPU, batch `--batch`,
T=1000 linear betas 1e-4..0.02. Configurations (`--only` picks some):

    ddim-graph       ddpm_tf `model.sampler(SamplingSpec("ddim", steps=N, eta=0))`, one call of
                     `sampler.sample(tf.constant(batch), rng.as_seed(0))` (the whole loop in one
                     tf.function), graph mode (jit_compile=False, TF's default)
    ddim-xla         the same with jit_compile=True
    ddim-diffusers   `DDIMScheduler` (clip_sample on, as ddpm_tf clips x_0) with `set_timesteps(N)`
                     and the loop diffusers users write, under torch.no_grad():
                     for t in scheduler.timesteps: x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    dpm++-graph      ddpm_tf `SamplingSpec("dpm_solver++", steps="logsnrN")` (order 2), graph mode
    dpm++-xla        the same with XLA
    dpm++-diffusers  `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`
    unipc-graph      ddpm_tf `SamplingSpec("unipc", steps="logsnrN")` (order 2, bh2 with its corrector)
    unipc-xla        the same with XLA
    unipc-diffusers  `UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True)`
    ancestral-graph  ddpm_tf `SamplingSpec("ancestral", steps=N)`: the DDPM reverse process on N
                     respaced steps (fixed_large variance, fresh Philox noise every step)
    ancestral-xla    the same with XLA
    ancestral-diffusers  `DDPMScheduler(variance_type="fixed_large")` with `set_timesteps(N)` and
                     a seeded torch.Generator passed to every `step` for its noise
    net-graph, net-xla, net-diffusers   (only with --only) N calls of the network alone, in a
                     tf.function (graph or XLA) or under torch.no_grad(): what a step costs
                     without the sampler, to tell the loop's overhead from the network's time

Every configuration is built and called once untimed (tracing and compilation), then each round
times one call of every configuration in turn (the order reversed every other round), so that a
drift in the machine's speed, or another job, hits all of them alike. A call's time divided by its
N steps is its seconds per step; the table shows the median over the rounds, and per method the
ratio diffusers / ddpm_tf (> 1: ddpm_tf is faster) for graph mode, for XLA and for the faster of
the two. Both frameworks use `--threads` intra-op threads (default: all cores, TF's default).
Each call's process CPU time is recorded too, and the cores other processes kept busy meanwhile:
on a machine shared with other jobs the wall times say how much CPU each configuration won from
them (the table warns), while CPU seconds per step stay steady (they include spin-waiting).

PyTorch and diffusers are not project dependencies: `pip install torch diffusers` for the
comparison; without them only the ddpm_tf configurations run.

    python bench/sampling_speed.py                                # 3 rounds, batch 16, 20 steps
    python bench/sampling_speed.py --rounds 5 --json /tmp/sampling_speed.json
    python bench/sampling_speed.py --only ddim-graph ddim-diffusers --rounds 2
    python bench/sampling_speed.py --only net-graph net-xla net-diffusers ddim-graph ddim-xla \
        ddim-diffusers                                            # loop overhead vs network
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from common import machine  # noqa: E402
from train_throughput import (  # noqa: E402
    DIFFUSERS_CIFAR10,
    T,
    attention_resolutions,
    busy_cpu_seconds,
    onednn_enabled,
    torch_available,
)

BETA_START, BETA_END = 1e-4, 0.02  # Ho et al.'s linear schedule, ddpm_tf's default diffusion
DIFFUSERS_CONFIGS: dict[str, dict[str, Any]] = {"ddpm_cifar10": DIFFUSERS_CIFAR10}
METHOD_LABELS = {
    "ddim": "ddim",
    "dpm_solver++": "dpm++",
    "unipc": "unipc",
    "ancestral": "ancestral",
}
BUSY_WARNING = 0.25  # cores kept busy by other processes above which the table warns


@dataclass(frozen=True)
class Config:
    """One measured configuration: a sampler (or the network alone) in one framework and mode."""

    name: str
    framework: str  # "tf" or "torch"
    method: str | None  # "ddim", "dpm_solver++", "unipc", "ancestral"; None: the network alone
    jit_compile: bool = False
    in_default_run: bool = True

    @property
    def mode(self) -> str:
        return (
            "diffusers" if self.framework == "torch" else ("xla" if self.jit_compile else "graph")
        )


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("ddim-graph", "tf", "ddim"),
        Config("ddim-xla", "tf", "ddim", jit_compile=True),
        Config("ddim-diffusers", "torch", "ddim"),
        Config("dpm++-graph", "tf", "dpm_solver++"),
        Config("dpm++-xla", "tf", "dpm_solver++", jit_compile=True),
        Config("dpm++-diffusers", "torch", "dpm_solver++"),
        Config("unipc-graph", "tf", "unipc"),
        Config("unipc-xla", "tf", "unipc", jit_compile=True),
        Config("unipc-diffusers", "torch", "unipc"),
        Config("ancestral-graph", "tf", "ancestral"),
        Config("ancestral-xla", "tf", "ancestral", jit_compile=True),
        Config("ancestral-diffusers", "torch", "ancestral"),
        Config("net-graph", "tf", None, in_default_run=False),
        Config("net-xla", "tf", None, jit_compile=True, in_default_run=False),
        Config("net-diffusers", "torch", None, in_default_run=False),
    )
}


# ---------------------------------------------------------------------------------- ddpm_tf
class TFBench:
    """ddpm_tf's `DiffusionModel` over an untrained preset U-Net, and its compiled samplers."""

    def __init__(self, preset: str, batch: int, steps: int):
        import ddpm_tf

        self.ddpm_tf = ddpm_tf
        self.model = ddpm_tf.DiffusionModel(ddpm_tf.unet.from_preset(preset, dropout=0.0))
        self.batch, self.steps = batch, steps
        self.params = int(self.model.network.count_params())

    def spec(self, method: str, jit_compile: bool):
        """The `SamplingSpec` of a method: N steps with its default spacing (DPM-Solver++ and
        UniPC even in log-SNR, the others evenly spaced)."""
        return self.ddpm_tf.SamplingSpec(method=method, steps=self.steps, jit_compile=jit_compile)

    def sampler_call(self, method: str, jit_compile: bool) -> Callable[[], object]:
        """One full sampling call of the compiled sampler, blocking until the images exist."""
        sampler = self.model.sampler(self.spec(method, jit_compile))
        if sampler.process.num_timesteps != self.steps:
            raise RuntimeError(
                f"{sampler.spec.describe()} runs {sampler.process.num_timesteps} steps"
            )
        count, seed = tf.constant(self.batch), self.ddpm_tf.rng.as_seed(0)
        return lambda: sampler.sample(count, seed).numpy()

    def network_calls(self, jit_compile: bool) -> Callable[[], object]:
        """N calls of the (EMA) network the sampler uses, each in one tf.function call."""
        network = self.model.ema_network
        call = tf.function(
            lambda x, t: network([x, t], training=False), jit_compile=jit_compile, autograph=False
        )
        x = tf.random.normal((self.batch, *self.model.image_shape), seed=0)
        t = tf.fill([self.batch], T // 2)

        def run() -> None:
            for _ in range(self.steps):
                call(x, t).numpy()

        return run


# --------------------------------------------------------------------------------- diffusers
class TorchBench:
    """The same network as `diffusers.UNet2DModel` and the schedulers' sampling loops."""

    def __init__(self, preset: str, batch: int, steps: int, threads: int):
        import diffusers
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.config = DIFFUSERS_CONFIGS[preset]
        self.unet = diffusers.UNet2DModel(**self.config).eval()
        self.batch, self.steps = batch, steps
        size, channels = self.config["sample_size"], self.config["in_channels"]
        self.shape = (batch, channels, size, size)
        self.params = sum(p.numel() for p in self.unet.parameters())
        self.versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
        self.threads = torch.get_num_threads()
        self.attention = attention_resolutions(self.unet, torch.zeros(1, *self.shape[1:]))

    def scheduler(self, method: str):
        """The diffusers scheduler of a method, on ddpm_tf's default betas."""
        from diffusers import (
            DDIMScheduler,
            DDPMScheduler,
            DPMSolverMultistepScheduler,
            UniPCMultistepScheduler,
        )

        betas = dict(
            num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear"
        )
        if method == "ddim":
            return DDIMScheduler(**betas)
        if method == "ancestral":  # ddpm_tf's default variance: beta_t (Ho et al.'s sigma^2 = beta)
            return DDPMScheduler(**betas, variance_type="fixed_large")
        if method == "unipc":
            return UniPCMultistepScheduler(
                **betas, solver_order=2, solver_type="bh2", predict_x0=True
            )
        return DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2)

    def sampler_call(self, method: str) -> Callable[[], object]:
        """One sampling call as diffusers users write it: set_timesteps, x_T, the scheduler loop."""
        torch, unet = self.torch, self.unet
        scheduler = self.scheduler(method)
        generator = torch.Generator().manual_seed(0)
        step_kwargs = {"ddim": {"eta": 0.0}, "ancestral": {"generator": generator}}.get(method, {})

        def run():
            with torch.no_grad():
                scheduler.set_timesteps(self.steps)
                x = torch.randn(self.shape, generator=generator) * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    eps = unet(x, t).sample
                    x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
            if len(scheduler.timesteps) != self.steps:
                raise RuntimeError(
                    f"{type(scheduler).__name__} ran {len(scheduler.timesteps)} steps"
                )
            return x

        return run

    def network_calls(self) -> Callable[[], object]:
        """N calls of the network alone under torch.no_grad()."""
        torch = self.torch
        x = torch.randn(self.shape, generator=torch.Generator().manual_seed(0))
        t = torch.tensor(T // 2)

        def run():
            with torch.no_grad():
                for _ in range(self.steps):
                    out = self.unet(x, t).sample
            return out

        return run


# ------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], object]) -> dict[str, float | None]:
    """Wall and process CPU seconds of one blocking call, and the cores other processes kept busy."""
    busy_start, cpu_start = busy_cpu_seconds(), time.process_time()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    busy_end = busy_cpu_seconds()
    other = None
    if busy_start is not None and busy_end is not None:
        other = max(busy_end - busy_start - cpu, 0.0) / wall
    return {"wall_s": wall, "cpu_s": cpu, "other_cores": other}


def summarize(config: Config, first: dict, runs: list[dict], steps: int) -> dict[str, Any]:
    """A configuration's result: seconds per step (median over rounds) and what went with it."""
    per_step = [r["wall_s"] / steps for r in runs]
    others = [r["other_cores"] for r in runs if r["other_cores"] is not None]
    return {
        "name": config.name,
        "framework": config.framework,
        "method": config.method,
        "mode": config.mode,
        "s_per_step": statistics.median(per_step),
        "min_s_per_step": min(per_step),
        "max_s_per_step": max(per_step),
        "round_s_per_step": per_step,
        "round_other_cores": [r["other_cores"] for r in runs],
        "cpu_s_per_step": statistics.median(r["cpu_s"] / steps for r in runs),
        "cores": statistics.median(r["cpu_s"] / r["wall_s"] for r in runs),
        "other_cores": max(others) if others else None,
        "first_call_s": first["wall_s"],
    }


def ratios(results: dict[str, dict]) -> list[dict[str, Any]]:
    """Per method: diffusers / ddpm_tf seconds per step for graph, XLA and the faster mode.

    Besides the ratio of the medians, the median of the per-round ratios (a paired comparison:
    both timed within the same round) is given, and the same over the quiet rounds only: those in
    which other processes kept at most `BUSY_WARNING` cores busy during both calls.
    """
    rows = []
    for method, label in METHOD_LABELS.items():
        theirs = results.get(f"{label}-diffusers")
        if theirs is None:
            continue
        row: dict[str, Any] = {"method": method, "diffusers_s_per_step": theirs["s_per_step"]}
        modes = {m: results.get(f"{label}-{m}") for m in ("graph", "xla")}
        for mode, ours in modes.items():
            if ours is None:
                continue
            pairs = list(
                zip(
                    theirs["round_s_per_step"],
                    ours["round_s_per_step"],
                    theirs["round_other_cores"],
                    ours["round_other_cores"],
                    strict=True,
                )
            )
            quiet = [d / o for d, o, *busy in pairs if max(b or 0.0 for b in busy) <= BUSY_WARNING]
            row[f"{mode}_s_per_step"] = ours["s_per_step"]
            row[f"ratio_{mode}"] = theirs["s_per_step"] / ours["s_per_step"]
            row[f"paired_ratio_{mode}"] = statistics.median(d / o for d, o, *_ in pairs)
            row[f"quiet_rounds_{mode}"] = len(quiet)
            row[f"quiet_ratio_{mode}"] = statistics.median(quiet) if quiet else None
        present = [m for m, r in modes.items() if r is not None]
        if present:
            best = min(present, key=lambda m: modes[m]["s_per_step"])
            row["faster_mode"] = best
            row["ratio_faster"] = row[f"ratio_{best}"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ output
def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(results: dict[str, dict], rows: list[dict], steps: int) -> None:
    """The per-configuration table, the loop overhead if measured, and the diffusers ratios."""
    print()
    header = (
        f"{'config':<16} {'s/step':>7} {'min-max s/step':>15} {'per call s':>10} "
        f"{'CPU s/step':>10} {'cores':>5} {'other':>5} {'1st call s':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        spread = f"{r['min_s_per_step']:.3f}-{r['max_s_per_step']:.3f}"
        print(
            f"{r['name']:<16} {r['s_per_step']:>7.3f} {spread:>15} {steps * r['s_per_step']:>10.2f} "
            f"{r['cpu_s_per_step']:>10.3f} {r['cores']:>5.2f} {fmt(r['other_cores'], '.2f'):>5} "
            f"{r['first_call_s']:>10.1f}"
        )
    print(
        "s/step: median over rounds of call time / steps; CPU s/step: process CPU time / steps "
        "(all threads, spin-waiting included); cores: process CPU / wall time; other: cores busy "
        "with other processes during a call (max over rounds); 1st call: the untimed call that "
        "traces and compiles."
    )
    busy = max((r["other_cores"] or 0.0 for r in results.values()), default=0.0)
    if busy > BUSY_WARNING:
        print(
            f"WARNING: other processes kept up to {busy:.2f} cores busy: the wall times measure "
            "how much CPU each configuration won from them as much as its own speed; rerun on a "
            "quiet machine for the ratios."
        )
    for r in results.values():
        per_round = ", ".join(f"{v:.3f}" for v in r["round_s_per_step"])
        print(f"  {r['name']}: s/step of each round {per_round}")

    for mode in ("graph", "xla", "diffusers"):
        net = results.get(f"net-{mode}")
        if net is None:
            continue
        for label in METHOD_LABELS.values():
            loop = results.get(f"{label}-{mode}")
            if loop is not None:
                extra = loop["s_per_step"] - net["s_per_step"]
                print(
                    f"{label}-{mode}: {loop['s_per_step']:.3f} s/step = network call "
                    f"{net['s_per_step']:.3f} s + {extra:+.3f} s of sampler ({100 * extra / net['s_per_step']:+.1f}%)"
                )

    if rows:
        print()
        header = (
            f"{'method':<13} {'graph s':>7} {'XLA s':>7} {'diffusers s':>11} {'diff/graph':>10} "
            f"{'diff/XLA':>8} {'faster':>6} {'diff/faster':>11}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            print(
                f"{row['method']:<13} {fmt(row.get('graph_s_per_step'), '.3f'):>7} "
                f"{fmt(row.get('xla_s_per_step'), '.3f'):>7} {row['diffusers_s_per_step']:>11.3f} "
                f"{fmt(row.get('ratio_graph'), '.2f'):>10} {fmt(row.get('ratio_xla'), '.2f'):>8} "
                f"{row.get('faster_mode', '-'):>6} {fmt(row.get('ratio_faster'), '.2f'):>11}"
            )
        print(
            "s: median seconds per step; diff/X: diffusers / ddpm_tf seconds per step (> 1: "
            "ddpm_tf is faster); graph is TF's default, faster: the faster ddpm_tf mode."
        )
        for row in rows:
            paired = [
                f"{mode} {row[f'paired_ratio_{mode}']:.2f}"
                for mode in ("graph", "xla")
                if f"paired_ratio_{mode}" in row
            ]
            if paired:
                print(f"  {row['method']}: median of per-round ratios: {', '.join(paired)}")
            quiet = [
                f"{mode} {fmt(row[f'quiet_ratio_{mode}'], '.2f')} "
                f"({row[f'quiet_rounds_{mode}']} round(s))"
                for mode in ("graph", "xla")
                if f"quiet_rounds_{mode}" in row
            ]
            if quiet:
                print(
                    f"  {row['method']}: the same over quiet rounds (other cores <= {BUSY_WARNING}): "
                    + ", ".join(quiet)
                )


# ------------------------------------------------------------------------------------ driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per configuration")
    parser.add_argument("--batch", type=int, default=16, help="images per sampling call")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps N")
    parser.add_argument("--preset", default="ddpm_cifar10", help="ddpm_tf U-Net preset")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run only these")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads of TF and torch (default: all cores)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.rounds, args.batch, args.steps, args.threads) < 1:
        parser.error("--rounds, --batch, --steps and --threads must be >= 1")
    return args


def select(args: argparse.Namespace) -> list[Config]:
    """The configurations to run; the diffusers ones only when torch, diffusers and a config exist."""
    names = args.only or [c.name for c in CONFIGS.values() if c.in_default_run]
    configs = [CONFIGS[n] for n in names]
    if any(c.framework == "torch" for c in configs):
        reason = torch_available()
        if reason is None and args.preset not in DIFFUSERS_CONFIGS:
            reason = f"no diffusers config for preset {args.preset!r}"
        if reason:
            print(f"Skipping the diffusers configurations: {reason}")
            configs = [c for c in configs if c.framework != "torch"]
    return configs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = select(args)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    machine_line = machine()
    print(f"machine: {machine_line}")
    tf_bench = torch_bench = None
    if any(c.framework == "tf" for c in configs):
        tf_bench = TFBench(args.preset, args.batch, args.steps)
    if any(c.framework == "torch" for c in configs):
        torch_bench = TorchBench(args.preset, args.batch, args.steps, args.threads)
    settings: dict[str, Any] = {
        "preset": args.preset,
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "T": T,
        "betas": f"linear {BETA_START:g}..{BETA_END:g}",
        "dtype": "float32",
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_onednn": onednn_enabled(),
    }
    if tf_bench:
        settings["ddpm_tf_params"] = tf_bench.params
        settings["ddpm_tf_specs"] = {
            method: tf_bench.spec(method, False).describe() for method in METHOD_LABELS
        }
    if torch_bench:
        settings["diffusers_params"] = torch_bench.params
        settings["diffusers_attention_at"] = torch_bench.attention
        settings["torch_threads"] = torch_bench.threads
        settings["versions"] = torch_bench.versions
    for key, value in settings.items():
        print(f"  {key}: {value}")

    calls: dict[str, Callable[[], object]] = {}
    first: dict[str, dict] = {}
    for config in configs:
        if config.framework == "tf":
            calls[config.name] = (
                tf_bench.network_calls(config.jit_compile)
                if config.method is None
                else tf_bench.sampler_call(config.method, config.jit_compile)
            )
        else:
            calls[config.name] = (
                torch_bench.network_calls()
                if config.method is None
                else torch_bench.sampler_call(config.method)
            )
        print(f"warm-up {config.name} ...", flush=True)
        first[config.name] = timed(calls[config.name])
        print(f"  first call {first[config.name]['wall_s']:.1f} s", flush=True)

    runs: dict[str, list[dict]] = {c.name: [] for c in configs}
    for index in range(args.rounds):
        order = configs if index % 2 == 0 else configs[::-1]  # spread any drift evenly
        print(f"round {index + 1}/{args.rounds}", flush=True)
        for config in order:
            run = timed(calls[config.name])
            runs[config.name].append(run)
            print(
                f"  {config.name:<16} {run['wall_s'] / args.steps:.3f} s/step, CPU "
                f"{run['cpu_s'] / args.steps:.3f} s/step (other cores {fmt(run['other_cores'], '.2f')})",
                flush=True,
            )

    results = {c.name: summarize(c, first[c.name], runs[c.name], args.steps) for c in configs}
    rows = ratios(results)
    print(f"\nmachine: {machine_line}")
    print_tables(results, rows, args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_line,
                    "settings": settings,
                    "results": results,
                    "ratios": rows,
                    "runs": runs,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
