"""Distillation: a trained diffusion model made into a sampler of a few network calls.

`halving` holds the arithmetic (progressive distillation's rounds, nested grids and the student's
target from two teacher steps; `plan`, which also lays out consistency distillation's single
round), `model` the `DistillationModel` whose training step it is, by either method; the program
`ddpm-distill` runs it as a training run (docs/sampling.md, "Distillation").
"""

from ddpm_tf.distillation.halving import (
    Halving,
    ddim_move,
    default_teacher_steps,
    plan,
    step_target,
)
from ddpm_tf.distillation.model import (
    STUDENTS_DIR,
    DistillationModel,
    Rounds,
    kept_students,
    student_file,
    student_spec,
)

__all__ = [
    "STUDENTS_DIR",
    "DistillationModel",
    "Halving",
    "Rounds",
    "ddim_move",
    "default_teacher_steps",
    "kept_students",
    "plan",
    "step_target",
    "student_file",
    "student_spec",
]
