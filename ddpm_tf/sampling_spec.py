"""`SamplingSpec`: every setting that decides how images are sampled, validated once.

One frozen value travels from wherever the user states it (a keyword argument, a command-line
flag, the `[sampling]` section of a training config, an export) to the code that runs it:
`GaussianDiffusion.sample_loop_graph` applies the method, steps, eta, clipping and noise source;
`DiffusionModel.sampler` picks the EMA or raw network and compiles (with XLA if asked) once per
spec. Being frozen and hashable, a spec is also the key under which a compiled sampler is cached.

The vocabulary: a *method* is the sampling rule ("ancestral", "ddim" or "dpm_solver++"); a *noise
source* is how
the Gaussian noise is generated ("philox" or "portable"); a *sampler* is a compiled sampling
function (`ddpm_tf.sampling.Sampler`); a *timestep sampler* draws training timesteps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from ddpm_tf.checks import check_bool, check_choice, check_float, check_int
from ddpm_tf.schedules import parse_section_counts

Method = Literal["ancestral", "ddim", "dpm_solver++"]
NoiseSource = Literal["philox", "portable"]

METHODS: tuple[str, ...] = get_args(Method)
NOISE_SOURCES: tuple[str, ...] = get_args(NoiseSource)

__all__ = ["METHODS", "NOISE_SOURCES", "Method", "NoiseSource", "SamplingSpec"]


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """How to sample: a frozen, validated, hashable set of choices.

    Attributes:
        method: "ancestral" (the DDPM reverse process, Ho et al.), "ddim" (Song et al.) or
            "dpm_solver++" (Lu et al. 2022, multistep, on the data prediction).
        steps: None for all T steps; an int to respace to that many evenly spaced steps; "ddimN"
            for N steps at a fixed integer stride; "logsnrN" for N steps evenly spaced in log-SNR;
            "10,15,20" for counts per section (the rules of `ddpm_tf.space_timesteps`).
        eta: DDIM's stochasticity in [0, 1] (0: deterministic); must be 0 for the other methods.
        solver_order: DPM-Solver++'s order, 1 (equal to DDIM with eta 0) or 2 ("2M"); the first
            and the last step are first order. Must stay 2 for the other methods.
        clip_denoised: clip each x_0 prediction to [-1, 1].
        dynamic_threshold: 0 (off), or a quantile p in (0, 1): each x_0 prediction is clipped to
            [-s, s] and divided by s, s = max(1, the p-quantile of its |pixels|) (Saharia et al.
            2022); replaces `clip_denoised` when set.
        use_ema: sample with the EMA weights (True) or the raw trained ones.
        noise_source: "philox" (TensorFlow's stateless RNG) or "portable" (builtin ops only, the
            noise of the TFLite and ONNX exports; see `ddpm_tf.rng.portable_normal`).
        jit_compile: compile the sampling loop with XLA.
    """

    method: Method = "ancestral"
    steps: int | str | None = None
    eta: float = 0.0
    solver_order: int = 2
    clip_denoised: bool = True
    dynamic_threshold: float = 0.0
    use_ema: bool = True
    noise_source: NoiseSource = "philox"
    jit_compile: bool = False

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        if self.steps is not None:
            object.__setattr__(self, "steps", parse_section_counts(self.steps))
        object.__setattr__(self, "eta", check_float(self.eta, "eta", 0.0, 1.0))
        if self.method != "ddim" and self.eta != 0.0:
            raise ValueError(
                f"eta={self.eta} applies to method='ddim' only; leave it 0 for {self.method!r}."
            )
        object.__setattr__(self, "solver_order", check_int(self.solver_order, "solver_order"))
        if self.solver_order > 2 or (self.method != "dpm_solver++" and self.solver_order != 2):
            raise ValueError(
                f"solver_order={self.solver_order}: DPM-Solver++ takes 1 or 2, and the setting "
                "applies to method='dpm_solver++' only (leave it 2 otherwise)."
            )
        threshold = check_float(self.dynamic_threshold, "dynamic_threshold", 0.0, 1.0)
        if threshold == 1.0:
            raise ValueError("dynamic_threshold must be 0 (off) or a quantile in (0, 1), got 1.0")
        object.__setattr__(self, "dynamic_threshold", threshold)
        for name in ("clip_denoised", "use_ema", "jit_compile"):
            object.__setattr__(self, name, check_bool(getattr(self, name), name))
        check_choice(self.noise_source, NOISE_SOURCES, "noise_source")

    @property
    def xstart_processing(self) -> bool | float:
        """How x_0 predictions are bounded: the dynamic-threshold quantile, else the clip flag."""
        return self.dynamic_threshold or self.clip_denoised

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of the settings, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: SamplingSpec | None = None) -> SamplingSpec:
        """A spec from a mapping of settings (a config section, keyword arguments) over `base`."""
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(
                f"unknown sampling setting(s) {unknown}; the settings are {list(cls.fields())}."
            )
        return dataclasses.replace(base or cls(), **values)

    def replace(self, **changes: Any) -> SamplingSpec:
        """A copy with some settings changed (validated again)."""
        return self.from_dict(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serializable dict that `from_dict` reads back to an equal spec."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """A short human-readable summary, e.g. "ddim, steps ddim50, eta 0, EMA weights"."""
        steps = "all T steps" if self.steps is None else f"steps {self.steps}"
        parts = [self.method, steps]
        if self.method == "ddim":
            parts.append(f"eta {self.eta:g}")
        if self.method == "dpm_solver++":
            parts.append(f"order {self.solver_order}")
        if self.dynamic_threshold:
            parts.append(f"dynamic threshold {self.dynamic_threshold:g}")
        parts.append("EMA weights" if self.use_ema else "raw weights")
        if not self.clip_denoised:
            parts.append("no clipping")
        if self.noise_source != "philox":
            parts.append(f"{self.noise_source} noise")
        if self.jit_compile:
            parts.append("XLA")
        return ", ".join(parts)


def resolve_spec(spec: SamplingSpec | None, settings: dict[str, Any]) -> SamplingSpec:
    """`spec` (default: `SamplingSpec()`) with keyword `settings` applied over it."""
    if spec is not None and not isinstance(spec, SamplingSpec):
        raise TypeError(f"`spec` must be a SamplingSpec, got {type(spec).__name__}.")
    return SamplingSpec.from_dict(settings, base=spec)
