"""`SamplingSpec`: every setting that decides how images are sampled, validated once.

One frozen value travels from wherever the user states it (a keyword argument, a command-line
flag, the `[sampling]` section of a training config, an export) to the code that runs it:
`GaussianDiffusion.sample_loop_graph` applies the method, steps, eta, clipping and noise source;
`DiffusionModel.sampler` picks the EMA or raw network and compiles (with XLA if asked) once per
spec. Being frozen and hashable, a spec is also the key under which a compiled sampler is cached.

The vocabulary: a *method* is the sampling rule ("ancestral" or "ddim"); a *noise source* is how
the Gaussian noise is generated ("philox" or "portable"); a *sampler* is a compiled sampling
function (`ddpm_tf.sampling.Sampler`); a *timestep sampler* draws training timesteps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from ddpm_tf.checks import check_bool, check_choice, check_float
from ddpm_tf.schedules import parse_section_counts

Method = Literal["ancestral", "ddim"]
NoiseSource = Literal["philox", "portable"]

METHODS: tuple[str, ...] = get_args(Method)
NOISE_SOURCES: tuple[str, ...] = get_args(NoiseSource)

__all__ = ["METHODS", "NOISE_SOURCES", "Method", "NoiseSource", "SamplingSpec"]


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """How to sample: a frozen, validated, hashable set of choices.

    Attributes:
        method: "ancestral" (the DDPM reverse process, Ho et al.) or "ddim" (Song et al.).
        steps: None for all T steps; an int to respace to that many evenly spaced steps; "ddimN"
            for N steps at a fixed integer stride; "10,15,20" for counts per section (the rules of
            `ddpm_tf.space_timesteps`).
        eta: DDIM's stochasticity in [0, 1] (0: deterministic); must be 0 for "ancestral".
        clip_denoised: clip each x_0 prediction to [-1, 1].
        use_ema: sample with the EMA weights (True) or the raw trained ones.
        noise_source: "philox" (TensorFlow's stateless RNG) or "portable" (builtin ops only, the
            noise of the TFLite and ONNX exports; see `ddpm_tf.rng.portable_normal`).
        jit_compile: compile the sampling loop with XLA.
    """

    method: Method = "ancestral"
    steps: int | str | None = None
    eta: float = 0.0
    clip_denoised: bool = True
    use_ema: bool = True
    noise_source: NoiseSource = "philox"
    jit_compile: bool = False

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        if self.steps is not None:
            object.__setattr__(self, "steps", parse_section_counts(self.steps))
        object.__setattr__(self, "eta", check_float(self.eta, "eta", 0.0, 1.0))
        if self.method == "ancestral" and self.eta != 0.0:
            raise ValueError(
                f"eta={self.eta} applies to method='ddim' only; leave it 0 for 'ancestral'."
            )
        for name in ("clip_denoised", "use_ema", "jit_compile"):
            object.__setattr__(self, name, check_bool(getattr(self, name), name))
        check_choice(self.noise_source, NOISE_SOURCES, "noise_source")

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
