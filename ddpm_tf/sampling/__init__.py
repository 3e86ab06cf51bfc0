"""Sampling: the spec, the one compiled loop, the methods and the compiled `Sampler`.

| module | what |
| --- | --- |
| `spec.py` | `SamplingSpec`, every setting of how images are sampled, validated once; `--compare` items |
| `registry.py` | the table of methods that the spec, the loop and the programs read |
| `method.py` | `SamplingMethod`, what a method is |
| `ancestral.py`, `ddim.py`, `dpm_solver.py`, `unipc.py` | one module per method: its step, settings, spacing |
| `loop.py` | the one `tf.while_loop` (`build_loop`, `run_loop`), its noise sources and `Hooks` |
| `sampler.py` | `Sampler` (one compiled sampler per spec), guidance, per-replica and uint8 batches |

Which timesteps are visited is `ddpm_tf.spacing` (typed steps values).
"""

from ddpm_tf.sampling.loop import Hooks, build_loop, run_loop
from ddpm_tf.sampling.method import SamplingMethod
from ddpm_tf.sampling.registry import METHODS, REGISTRY, Method, method_class
from ddpm_tf.sampling.sampler import (
    Sampler,
    call_network,
    check_labels,
    every_class,
    generate_uint8,
    guided_denoiser,
    network_num_classes,
    sample_per_replica,
)
from ddpm_tf.sampling.spec import NOISE_SOURCES, NoiseSource, SamplingSpec, resolve_spec

__all__ = [
    "METHODS",
    "NOISE_SOURCES",
    "REGISTRY",
    "Hooks",
    "Method",
    "NoiseSource",
    "Sampler",
    "SamplingMethod",
    "SamplingSpec",
    "build_loop",
    "call_network",
    "check_labels",
    "every_class",
    "generate_uint8",
    "guided_denoiser",
    "method_class",
    "network_num_classes",
    "resolve_spec",
    "run_loop",
    "sample_per_replica",
]
