"""The PyTorch peer of every speed comparison: diffusers' `UNet2DModel` with a preset's architecture,
run each way a speed-minded PyTorch user would try.

One definition of the peer for all benchmarks: the architectures (`ARCHITECTURES`, the same layers
and parameter counts as ddpm_tf's presets), the ways of running them (`VARIANTS`: eager or
`torch.compile` with inductor, NCHW or channels_last; bfloat16 autocast is a precision beside
them), the thread settings, the train step (the same work as `DiffusionModel.train_step`: random
t, noise, x_t, MSE on epsilon, backward, gradient clipping at norm 1, AdamW with `fused=True`, EMA
by `torch._foreach_lerp_`) and the samplers (diffusers' schedulers, the loop diffusers users write).

PyTorch and diffusers are not project dependencies: `pip install torch diffusers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

T = 1000
BETA_START, BETA_END = 1e-4, 0.02  # Ho et al.'s linear schedule, ddpm_tf's default diffusion
LEARNING_RATE = 2e-4
EMA_DECAY = 0.9999

# google/ddpm-cifar10-32 written out (no download): Ho et al.'s CIFAR-10 network in diffusers.
CIFAR10 = {
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
SMALL28 = {
    **CIFAR10,
    "sample_size": 28,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
ARCHITECTURES: dict[str, dict[str, Any]] = {"ddpm_cifar10": CIFAR10, "small_28": SMALL28}


@dataclass(frozen=True)
class Variant:
    """One way of running the peer's network."""

    compiled: bool = False  # torch.compile (inductor) of the network
    channels_last: bool = False  # network weights and inputs in torch.channels_last

    @property
    def name(self) -> str:
        return ("compile" if self.compiled else "eager") + ("-cl" if self.channels_last else "")


VARIANTS = {v.name: v for v in (Variant(c, cl) for c in (False, True) for cl in (False, True))}


def available() -> str | None:
    """None when torch and diffusers import, else the reason they do not."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return f"{type(err).__name__}: {err}"
    return None


def versions() -> str:
    import diffusers
    import torch

    return f"torch {torch.__version__}, diffusers {diffusers.__version__}"


def set_threads(threads: int) -> dict[str, int]:
    """Intra- and inter-op threads of torch, as TensorFlow's are set beside it (call first)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(threads)
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def network(preset: str, variant: Variant, dropout: float | None = None, train: bool = True):
    """(module to call, the `UNet2DModel` itself): the preset's architecture, seed 0."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    architecture = ARCHITECTURES[preset]
    if dropout is not None:
        architecture = {**architecture, "dropout": dropout}
    model = UNet2DModel(**architecture).train(train)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    call = torch.compile(model) if variant.compiled else model
    return call, model


def inputs(preset: str, batch: int, variant: Variant):
    """Uniform noise in [-1, 1] shaped like a batch of the preset's images, in the variant's layout."""
    import torch

    architecture = ARCHITECTURES[preset]
    size, channels = architecture["sample_size"], architecture["in_channels"]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, channels, size, size, generator=generator) * 2.0 - 1.0
    return images.to(memory_format=torch.channels_last) if variant.channels_last else images


def network_gflop(preset: str, batch: int) -> float:
    """GFLOP of the peer network's forward and backward pass on a batch (PyTorch's
    FlopCounterMode: convolutions and matrix products, a multiply-add counting 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = network(preset, VARIANTS["eager"])[1]
    images = inputs(preset, batch, VARIANTS["eager"])
    counter = FlopCounterMode(display=False)
    with counter:
        model(images, torch.zeros(batch, dtype=torch.long)).sample.square().mean().backward()
    return counter.get_total_flops() / 1e9


def autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def train_step(
    preset: str,
    batch: int,
    variant: Variant,
    precision: str = "float32",
    dropout: float | None = None,
) -> tuple[Any, Callable[[], None]]:
    """(the `UNet2DModel`, `step()`): one training step per call, blocking until it is done.

    The step `DiffusionModel.train_step` takes: t uniform in [0, T), epsilon ~ N(0, I), x_t on Ho
    et al.'s linear betas, MSE between the network's epsilon and the true one (under bfloat16
    autocast if `precision` is "bfloat16"), backward, `clip_grad_norm_(1.0)` (foreach), AdamW
    (weight decay 0, so Adam's update) with `fused=True`, then the EMA with Keras' warm-up decay
    min(0.9999, (1 + n) / (10 + n)) by `torch._foreach_lerp_`.
    """
    import torch

    call, model = network(preset, variant, dropout)
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0, fused=True)
    alphas_cumprod = torch.cumprod(1.0 - torch.linspace(BETA_START, BETA_END, T).double(), 0)
    sqrt_ab = alphas_cumprod.sqrt().float()
    sqrt_1mab = (1.0 - alphas_cumprod).sqrt().float()
    images = inputs(preset, batch, variant)
    counter = [0]

    def step() -> None:
        t = torch.randint(0, T, (batch,))
        noise = torch.randn_like(images)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * images + sqrt_1mab[t].view(-1, 1, 1, 1) * noise
        with autocast(precision):
            loss = torch.nn.functional.mse_loss(call(x_t, t).sample.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        n = counter[0]
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - min(EMA_DECAY, (1.0 + n) / (10.0 + n)))
        counter[0] += 1
        loss.item()

    return model, step


def scheduler(method: str):
    """The diffusers scheduler of a sampling method, on ddpm_tf's default betas."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        UniPCMultistepScheduler,
    )

    betas = dict(
        num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear"
    )
    if method == "ddim":  # clip_sample on (its default), as ddpm_tf clips x_0
        return DDIMScheduler(**betas)
    if method == "ancestral":  # ddpm_tf's default variance: beta_t (Ho et al.'s sigma^2 = beta)
        return DDPMScheduler(**betas, variance_type="fixed_large")
    if method == "unipc":
        return UniPCMultistepScheduler(**betas, solver_order=2, solver_type="bh2", predict_x0=True)
    return DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2)


def sampler_call(
    call, preset: str, batch: int, steps: int, method: str | None, variant: Variant, precision: str
) -> Callable[[], object]:
    """One sampling call of `call` (a `network(..., train=False)`) as diffusers users write it:
    set_timesteps, x_T, the scheduler's loop under `torch.inference_mode()` with the network under
    `autocast(precision)`; with `method` None, `steps` calls of the network alone."""
    import torch

    x_T = inputs(preset, batch, variant)
    if method is None:
        t = torch.tensor(T // 2)

        def network_only():
            with torch.inference_mode(), autocast(precision):
                for _ in range(steps):
                    out = call(x_T, t).sample
            return out.float()

        return network_only

    schedule = scheduler(method)
    generator = torch.Generator().manual_seed(0)
    step_kwargs = {"ddim": {"eta": 0.0}, "ancestral": {"generator": generator}}.get(method, {})

    def run():
        with torch.inference_mode():
            schedule.set_timesteps(steps)
            x = torch.randn(x_T.shape, generator=generator) * schedule.init_noise_sigma
            if variant.channels_last:
                x = x.to(memory_format=torch.channels_last)
            for t in schedule.timesteps:
                with autocast(precision):
                    eps = call(x, t).sample
                x = schedule.step(eps.float(), t, x, **step_kwargs).prev_sample
        if len(schedule.timesteps) != steps:
            raise RuntimeError(f"{type(schedule).__name__} ran {len(schedule.timesteps)} steps")
        return x

    return run


def attention_resolutions(model, preset: str) -> list[int]:
    """Feature-map sizes at which the diffusers model applies self-attention (a config check)."""
    import torch
    from diffusers.models.attention_processor import Attention

    sizes: set[int] = set()
    hooks = [
        m.register_forward_hook(lambda _m, args, _out: sizes.add(int(args[0].shape[-1])))
        for m in model.modules()
        if isinstance(m, Attention)
    ]
    architecture = ARCHITECTURES[preset]
    size, channels = architecture["sample_size"], architecture["in_channels"]
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    return sorted(sizes)
