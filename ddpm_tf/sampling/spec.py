"""`SamplingSpec`: every setting that decides how images are sampled, validated once.

One frozen value travels from wherever the user states it (a keyword argument, a command-line
flag, the `[sampling]` section of a training config, an export) to the code that runs it: the
loop (`ddpm_tf.sampling.loop`) applies the method, steps, eta, solver order, x_0 bounds and noise
source; `DiffusionModel.sampler` picks the EMA or raw network and compiles (with XLA if asked)
once per spec. Being frozen and hashable, a spec is also the key under which a compiled sampler is
cached.

The vocabulary: a *method* is the sampling rule (`ddpm_tf.sampling.registry`); *steps* the
timesteps it visits (`ddpm_tf.spacing`); a *noise source* how the Gaussian noise is generated
("philox" or "portable"); a *sampler* a compiled sampling function (`Sampler`); a *timestep
sampler* draws training timesteps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, get_args

from ddpm_tf.checks import check_bool, check_choice, check_float, check_int
from ddpm_tf.errors import InputError, InputTypeError
from ddpm_tf.sampling.registry import METHOD_SETTINGS, METHODS, Method, method_class
from ddpm_tf.spacing import AllSteps, Steps, parse_steps

NoiseSource = Literal["philox", "portable"]
NOISE_SOURCES: tuple[str, ...] = get_args(NoiseSource)

__all__ = [
    "METHODS",
    "NOISE_SOURCES",
    "Method",
    "NoiseSource",
    "SamplingSpec",
    "parse_comparison",
    "resolve_spec",
]


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """How to sample: a frozen, validated, hashable set of choices.

    Attributes:
        method: "ancestral" (the DDPM reverse process, Ho et al.), "ddim" (Song et al.),
            "dpm_solver++" (Lu et al. 2022, multistep, on the data prediction) or "unipc" (Zhao
            et al. 2023, DPM-Solver++'s predictor with a corrector that costs no network call).
        steps: the timesteps visited, a `ddpm_tf.spacing` value: `AllSteps()` (also None or
            "all"), `UniformSteps(n)`, `StrideSteps(n)`, `LogSNRSteps(n)`, `SectionSteps(c)`,
            or their text ("uniform50", "stride50", "logsnr20", "10,15,20"); a bare count (50,
            "50") takes the method's default spacing (log-SNR for DPM-Solver++ and UniPC, else
            uniform).
        eta: DDIM's stochasticity in [0, 1] (0: deterministic); must be 0 for the other methods.
        solver_order: the multistep solvers' order: DPM-Solver++ 1 (equal to DDIM with eta 0)
            or 2 ("2M"), UniPC 1, 2 or 3; the first and the last step are first order. Must stay
            2 for the other methods.
        clip_denoised: clip each x_0 prediction to [-1, 1].
        dynamic_threshold: 0 (off), or a quantile p in (0, 1): each x_0 prediction is clipped to
            [-s, s] and divided by s, s = max(1, the p-quantile of its |pixels|) (Saharia et al.
            2022); when on, it bounds x_0 instead of `clip_denoised`.
        use_ema: sample with the EMA weights (True) or the raw trained ones.
        noise_source: "philox" (TensorFlow's stateless RNG) or "portable" (builtin ops only, the
            noise of the TFLite and ONNX exports; see `ddpm_tf.rng.portable_normal`).
        jit_compile: compile the sampling loop with XLA.
    """

    method: Method = "ancestral"
    steps: Steps = AllSteps()
    eta: float = 0.0
    solver_order: int = 2
    clip_denoised: bool = True
    dynamic_threshold: float = 0.0
    use_ema: bool = True
    noise_source: NoiseSource = "philox"
    jit_compile: bool = False

    def __post_init__(self) -> None:
        method = method_class(self.method)
        self._set("steps", parse_steps(self.steps, method.default_spacing))
        self._set("eta", check_float(self.eta, "eta", 0.0, 1.0))
        self._set("solver_order", check_int(self.solver_order, "solver_order"))
        threshold = check_float(self.dynamic_threshold, "dynamic_threshold", 0.0, 1.0)
        if threshold == 1.0:
            raise InputError("dynamic_threshold must be 0 (off) or a quantile in (0, 1), got 1.0")
        self._set("dynamic_threshold", threshold)
        for name in ("clip_denoised", "use_ema", "jit_compile"):
            self._set(name, check_bool(getattr(self, name), name))
        check_choice(self.noise_source, NOISE_SOURCES, "noise_source")
        defaults = SamplingSpec.defaults()
        for name in METHOD_SETTINGS:
            if name not in method.takes and getattr(self, name) != defaults[name]:
                users = [m for m in METHODS if name in method_class(m).takes]
                raise InputError(
                    f"{name}={getattr(self, name)} applies to method {' or '.join(users)} only; "
                    f"leave it {defaults[name]} for {self.method!r}."
                )
        method.check(self)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of the settings, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each setting's default value."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: SamplingSpec | None = None) -> SamplingSpec:
        """A spec from a mapping of settings (a config section, keyword arguments) over `base`."""
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise InputError(
                f"unknown sampling setting(s) {unknown}; the settings are {list(cls.fields())}."
            )
        return dataclasses.replace(base or cls(), **values)

    def replace(self, **changes: Any) -> SamplingSpec:
        """A copy with some settings changed (validated again)."""
        return self.from_dict(changes, base=self)

    def for_method(self, method: str, steps: Any = None) -> SamplingSpec:
        """This spec moved to another method (and `steps` if given): the settings the new method
        does not take go back to their defaults."""
        defaults = SamplingSpec.defaults()
        reset = {n: defaults[n] for n in METHOD_SETTINGS if n not in method_class(method).takes}
        changes = {"method": method, **reset}
        if steps is not None:
            changes["steps"] = steps
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON- and TOML-serializable dict (steps as their text) that
        `from_dict` reads back to an equal spec."""
        return {**dataclasses.asdict(self), "steps": self.steps.text}

    def describe(self) -> str:
        """A short human-readable summary, e.g. "ddim, steps stride50, eta 0, EMA weights"."""
        steps = "all T steps" if isinstance(self.steps, AllSteps) else f"steps {self.steps.text}"
        parts = [self.method, steps, *method_class(self.method).describe(self)]
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
        raise InputTypeError(f"`spec` must be a SamplingSpec, got {type(spec).__name__}.")
    return SamplingSpec.from_dict(settings, base=spec)


COMPARISON_SYNTAX = (
    "--compare items look like METHOD:STEPS[/STEPS...], one row per steps value, each in the "
    "syntax of --steps (e.g. ddim:10/20/50, dpm_solver++:logsnr10/logsnr20, ancestral:all; a "
    "comma is section counts, as in --steps)"
)


def parse_comparison(item: str, base: SamplingSpec) -> list[SamplingSpec]:
    """The specs of one `--compare` item "METHOD:STEPS[/STEPS...]" over `base`: one row per
    steps value (rows apart by "/", since a comma belongs to section counts), each moved to the
    method with `SamplingSpec.for_method`."""
    method, sep, steps_text = item.partition(":")
    if not sep or not steps_text or "" in steps_text.split("/"):
        raise InputError(f"--compare item {item!r}: {COMPARISON_SYNTAX}.")
    return [base.for_method(method, steps) for steps in steps_text.split("/")]


def parse_comparisons(items: Sequence[str], base: SamplingSpec) -> list[SamplingSpec]:
    """The specs of all `--compare` items, in order."""
    return [spec for item in items for spec in parse_comparison(item, base)]
