"""Seconds per sampling step of ddpm_tf's compiled samplers against the PyTorch peer at its best.

The same network on both sides: the `ddpm_cifar10` preset (Ho et al.'s 35.7M-parameter CIFAR-10
U-Net, dropout off) as `ddpm_tf.unet` and as diffusers' `UNet2DModel` of the same architecture
(`peer.py`), untrained, on the CPU, batch `--batch`, T=1000 linear betas 1e-4..0.02, `--steps` N
steps, in float32 or (`--precision bfloat16`) under Keras' `mixed_bfloat16` policy against
`torch.autocast("cpu", dtype=torch.bfloat16)`. Configurations, M one of ddim, dpm++, unipc,
ancestral, or net (the network alone, only with --only):

    M-graph     ddpm_tf's `model.sampler(SamplingSpec(method, steps=N))`, one call of
                `sampler.sample(tf.constant(batch), rng.as_seed(0))` (the whole loop in one
                tf.function), graph mode with the fused CPU kernels (TF's and ddpm_tf's default):
                ddim (eta 0), dpm++ (DPM-Solver++ order 2, logsnrN), unipc (UniPC bh2 with its
                corrector, logsnrN), ancestral (the DDPM reverse process on N respaced steps,
                fixed_large variance); net: N calls of the network in one tf.function each
    M-xla       the same with jit_compile=True
    M-torch-V   the peer: diffusers' `DDIMScheduler` (clip_sample on, as ddpm_tf clips x_0),
                `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`,
                `UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True)` or
                `DDPMScheduler(variance_type="fixed_large")` with a seeded generator, the loop
                diffusers users write under torch.inference_mode(); V the way the network runs:
                eager, eager-cl, compile, compile-cl (torch.compile with inductor; -cl:
                channels_last), one network per variant shared by the methods

Every configuration is built and called once untimed (tracing and compilation), then each round
times one call of every configuration in turn (the order reversed every other round), so that a
drift in the machine's speed, or another job, hits all of them alike. A call's time divided by its
N steps is its seconds per step; the table shows the median over the rounds, and per method the
ratio best peer / ddpm_tf (> 1: ddpm_tf is faster), the best peer being the fastest variant
measured for that method. Both frameworks use `--threads` intra-op and inter-op threads. Each
call's process CPU time is recorded too, and the cores other processes kept busy meanwhile: on a
machine shared with other jobs the wall times say how much CPU each configuration won from them
(the table warns).

PyTorch and diffusers are not project dependencies: `pip install torch diffusers` for the
comparison; without them only the ddpm_tf configurations run.

    python bench/sampling_speed.py                                # 3 rounds, batch 16, 20 steps
    python bench/sampling_speed.py --rounds 5 --json /tmp/sampling_speed.json
    python bench/sampling_speed.py --only ddim-graph ddim-torch-eager --rounds 2
    python bench/sampling_speed.py --only net-graph net-xla net-torch-eager ddim-graph ddim-xla \
        ddim-torch-eager                                          # loop overhead vs network
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ddpm_tf  # noqa: E402  (first: TensorFlow loads with the package's measured oneDNN choice)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer  # noqa: E402
import tensorflow as tf  # noqa: E402
from common import machine, onednn_enabled, set_tf_threads, time_calls  # noqa: E402

METHOD_LABELS = {
    "ddim": "ddim",
    "dpm_solver++": "dpm++",
    "unipc": "unipc",
    "ancestral": "ancestral",
    None: "net",
}
BUSY_WARNING = 0.25  # cores kept busy by other processes above which the table warns


@dataclass(frozen=True)
class Config:
    """One measured configuration: a sampler (or the network alone) in one framework and mode."""

    name: str
    framework: str  # "tf" or "torch"
    method: str | None  # "ddim", "dpm_solver++", "unipc", "ancestral"; None: the network alone
    jit_compile: bool = False
    variant: str | None = None  # the peer's way of running its network (peer.VARIANTS)

    @property
    def mode(self) -> str:
        if self.framework == "torch":
            return f"torch-{self.variant}"
        return "xla" if self.jit_compile else "graph"

    @property
    def in_default_run(self) -> bool:
        return self.method is not None


def method_configs(method: str | None) -> list[Config]:
    label = METHOD_LABELS[method]
    configs = [
        Config(f"{label}-graph", "tf", method),
        Config(f"{label}-xla", "tf", method, jit_compile=True),
    ]
    return configs + [
        Config(f"{label}-torch-{v}", "torch", method, variant=v) for v in peer.VARIANTS
    ]


CONFIGS: dict[str, Config] = {c.name: c for m in METHOD_LABELS for c in method_configs(m)}


# ---------------------------------------------------------------------------------- ddpm_tf
class TFBench:
    """ddpm_tf's `DiffusionModel` over an untrained preset U-Net, and its compiled samplers."""

    def __init__(self, preset: str, batch: int, steps: int, precision: str):
        import keras

        if precision == "bfloat16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
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
        t = tf.fill([self.batch], peer.T // 2)

        def run() -> None:
            for _ in range(self.steps):
                call(x, t).numpy()

        return run


# --------------------------------------------------------------------------------- the peer
class TorchBench:
    """The peer's network, one per variant (shared by the methods), and its sampling loops."""

    def __init__(self, preset: str, batch: int, steps: int, threads: int, precision: str):
        self.threads = peer.set_threads(threads)
        self.preset, self.batch, self.steps, self.precision = preset, batch, steps, precision
        self.networks: dict[str, Any] = {}
        _, model = peer.network(preset, peer.VARIANTS["eager"], dropout=0.0, train=False)
        self.params = sum(p.numel() for p in model.parameters())
        self.attention = peer.attention_resolutions(model, preset)

    def call(self, config: Config) -> Callable[[], object]:
        variant = peer.VARIANTS[config.variant]
        if config.variant not in self.networks:
            self.networks[config.variant] = peer.network(
                self.preset, variant, dropout=0.0, train=False
            )[0]
        network = self.networks[config.variant]
        return peer.sampler_call(
            network, self.preset, self.batch, self.steps, config.method, variant, self.precision
        )


# ------------------------------------------------------------------------------------ results
def summarize(config: Config, first: dict, runs: list[dict], steps: int) -> dict[str, Any]:
    """A configuration's result: seconds per step (median over rounds) and what went with it."""
    per_step = [r["median_s"] / steps for r in runs]
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
        "cores": statistics.median(r["cpu_s"] / r["median_s"] for r in runs),
        "other_cores": max(others) if others else None,
        "first_call_s": first["median_s"],
    }


def ratios(results: dict[str, dict]) -> list[dict[str, Any]]:
    """Per method: the best peer variant's seconds per step / ddpm_tf's, graph and XLA.

    Besides the ratio of the medians, the median of the per-round ratios (a paired comparison:
    both timed within the same round) is given, and the same over the quiet rounds only: those in
    which other processes kept at most `BUSY_WARNING` cores busy during both calls.
    """
    rows = []
    for method, label in METHOD_LABELS.items():
        peers = [r for r in results.values() if r["method"] == method and r["framework"] == "torch"]
        if not peers:
            continue
        theirs = min(peers, key=lambda r: r["s_per_step"])
        row: dict[str, Any] = {
            "method": label,
            "peer": theirs["mode"],
            "peer_s_per_step": theirs["s_per_step"],
            "peer_variants": {r["mode"]: r["s_per_step"] for r in peers},
        }
        for mode in ("graph", "xla"):
            ours = results.get(f"{label}-{mode}")
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
        rows.append(row)
    return rows


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(results: dict[str, dict], rows: list[dict], steps: int) -> None:
    """The per-configuration table, the loop overhead if measured, and the ratios to the peer."""
    print()
    header = (
        f"{'config':<24} {'s/step':>7} {'min-max s/step':>15} {'per call s':>10} "
        f"{'CPU s/step':>10} {'cores':>5} {'other':>5} {'1st call s':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        spread = f"{r['min_s_per_step']:.3f}-{r['max_s_per_step']:.3f}"
        print(
            f"{r['name']:<24} {r['s_per_step']:>7.3f} {spread:>15} {steps * r['s_per_step']:>10.2f} "
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

    for r in results.values():
        net = results.get(f"net-{r['mode']}")
        if net is None or r["method"] is None:
            continue
        extra = r["s_per_step"] - net["s_per_step"]
        print(
            f"{r['name']}: {r['s_per_step']:.3f} s/step = network call {net['s_per_step']:.3f} s "
            f"+ {extra:+.3f} s of sampler ({100 * extra / net['s_per_step']:+.1f}%)"
        )

    if rows:
        print()
        header = (
            f"{'method':<10} {'graph s':>7} {'XLA s':>7} {'best peer':>18} {'s':>6} "
            f"{'peer/graph':>10} {'peer/XLA':>8}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            print(
                f"{row['method']:<10} {fmt(row.get('graph_s_per_step'), '.3f'):>7} "
                f"{fmt(row.get('xla_s_per_step'), '.3f'):>7} {row['peer']:>18} "
                f"{row['peer_s_per_step']:>6.3f} {fmt(row.get('ratio_graph'), '.2f'):>10} "
                f"{fmt(row.get('ratio_xla'), '.2f'):>8}"
            )
        print(
            "s: median seconds per step; peer/X: the fastest peer variant's seconds per step / "
            "ddpm_tf's (> 1: ddpm_tf is faster); graph is ddpm_tf's default."
        )
        for row in rows:
            variants = ", ".join(f"{k} {v:.3f}" for k, v in row["peer_variants"].items())
            paired = ", ".join(
                f"{mode} {row[f'paired_ratio_{mode}']:.2f}"
                for mode in ("graph", "xla")
                if f"paired_ratio_{mode}" in row
            )
            print(f"  {row['method']}: peer variants s/step {variants}; per-round ratios {paired}")


# ------------------------------------------------------------------------------------ driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per configuration")
    parser.add_argument("--batch", type=int, default=16, help="images per sampling call")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps N")
    parser.add_argument("--preset", default="ddpm_cifar10", help="ddpm_tf U-Net preset")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run only these")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra- and inter-op threads of TF and torch (default: all cores)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.rounds, args.batch, args.steps, args.threads) < 1:
        parser.error("--rounds, --batch, --steps and --threads must be >= 1")
    return args


def select(args: argparse.Namespace) -> list[Config]:
    """The configurations to run; the peer's only when torch, diffusers and an architecture exist."""
    names = args.only or [c.name for c in CONFIGS.values() if c.in_default_run]
    configs = [CONFIGS[n] for n in names]
    if any(c.framework == "torch" for c in configs):
        reason = peer.available()
        if reason is None and args.preset not in peer.ARCHITECTURES:
            reason = f"no peer architecture for preset {args.preset!r}"
        if reason:
            print(f"Skipping the PyTorch peer: {reason}")
            configs = [c for c in configs if c.framework != "torch"]
    return configs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = select(args)
    threads = set_tf_threads(args.threads)
    with_peer = any(c.framework == "torch" for c in configs)
    machine_line = machine("both" if with_peer else "tensorflow")
    print(f"machine: {machine_line}")
    tf_bench = TFBench(args.preset, args.batch, args.steps, args.precision)
    torch_bench = None
    if with_peer:
        torch_bench = TorchBench(args.preset, args.batch, args.steps, args.threads, args.precision)
    settings: dict[str, Any] = {
        "preset": args.preset,
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "precision": args.precision,
        "T": peer.T,
        "betas": f"linear {peer.BETA_START:g}..{peer.BETA_END:g}",
        "tf_threads": threads,
        "tf_onednn": onednn_enabled(),
        "ddpm_tf_params": tf_bench.params,
        "ddpm_tf_specs": {
            method: tf_bench.spec(method, False).describe() for method in METHOD_LABELS if method
        },
    }
    if torch_bench:
        settings["peer_params"] = torch_bench.params
        settings["peer_attention_at"] = torch_bench.attention
        settings["torch_threads"] = torch_bench.threads
        settings["versions"] = peer.versions()
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
            calls[config.name] = torch_bench.call(config)
        print(f"warm-up {config.name} ...", flush=True)
        first[config.name] = time_calls(calls[config.name])
        print(f"  first call {first[config.name]['median_s']:.1f} s", flush=True)

    runs: dict[str, list[dict]] = {c.name: [] for c in configs}
    for index in range(args.rounds):
        order = configs if index % 2 == 0 else configs[::-1]  # spread any drift evenly
        print(f"round {index + 1}/{args.rounds}", flush=True)
        for config in order:
            run = time_calls(calls[config.name])
            runs[config.name].append(run)
            print(
                f"  {config.name:<24} {run['median_s'] / args.steps:.3f} s/step, CPU "
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
