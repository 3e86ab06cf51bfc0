"""The README's commands and code examples run as written.

Every `ddpm-*` command line in a bash block is parsed by that program's own parser (and ddpm-train's
overrides are resolved against its config keys), so a renamed flag or key fails here. The Python
blocks that need no dataset or trained run are executed; the others have their `ddpm_tf` imports
resolved and the keyword arguments of the package's calls checked against the real signatures.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest
import tensorflow as tf
from helpers import program_modules

import ddpm_tf
from ddpm_tf import (
    DiffusionModel,
    GaussianDiffusion,
    SamplingSpec,
    data,
    from_preset,
    get_beta_schedule,
    unet,
)
from ddpm_tf.exporting import ExportOptions, export_model
from ddpm_tf.training.ddpm_train import resolve_args

README = Path(__file__).resolve().parents[1] / "README.md"
PROGRAMS = program_modules()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in PROGRAMS:
                commands.append(words)
    return commands


def test_the_readme_has_commands_for_every_program():
    assert {words[0] for words in _commands()} == set(PROGRAMS)


@pytest.mark.parametrize("words", _commands(), ids=lambda w: " ".join(w)[:60])
def test_every_command_parses_as_written(words):
    args = PROGRAMS[words[0]].build_parser().parse_args(words[1:])  # exits (fails) on a bad flag
    if words[0] == "ddpm-train":
        resolve_args(args)  # every override names a real key with a valid value


# The package's callables whose keyword arguments the README's examples use.
SIGNATURES = {
    "GaussianDiffusion": GaussianDiffusion,
    "DiffusionModel": DiffusionModel,
    "SamplingSpec": SamplingSpec,
    "ExportOptions": ExportOptions,
    "export_model": export_model,
    "from_preset": from_preset,
    "load_images": data.load_images,
    "get_beta_schedule": get_beta_schedule,
    "p_sample_loop": GaussianDiffusion.p_sample_loop,
    "ddim_sample_loop": GaussianDiffusion.ddim_sample_loop,
    "calc_bpd_loop": GaussianDiffusion.calc_bpd_loop,
    "training_losses": GaussianDiffusion.training_losses,
}
GENERATE_KEYWORDS = set(inspect.signature(DiffusionModel.generate).parameters) | set(
    SamplingSpec.fields()
)


def _check_names_and_keywords(code: str) -> None:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ddpm_tf"):
            module = __import__(node.module, fromlist=["_"])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", None))
        keywords = {k.arg for k in node.keywords if k.arg}
        if name == "generate":
            assert keywords <= GENERATE_KEYWORDS, keywords - GENERATE_KEYWORDS
        elif name in SIGNATURES:
            parameters = inspect.signature(SIGNATURES[name]).parameters
            assert keywords <= set(parameters), (name, keywords - set(parameters))


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_use_real_names_and_keywords(index):
    _check_names_and_keywords(_blocks("python")[index])


def _block_containing(text: str) -> str:
    (block,) = [b for b in _blocks("python") if text in b]
    return block


def test_the_mathematics_example_runs():
    # The example's `network` is any callable; a cheap one keeps the 1000-step loops fast.
    namespace = {"network": lambda x_t, t: 0.1 * x_t}
    exec(_block_containing("diffusion.training_losses"), namespace)
    assert namespace["samples"].shape == (16, 32, 32, 3)
    assert namespace["bpd"].shape == (8,) and bool(tf.reduce_all(namespace["bpd"] > 0))


def test_the_sampling_spec_example_runs():
    network = unet.from_preset("tiny_8", ch=16, num_groups=4)
    model = DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", 100)))
    namespace = {"model": model}
    exec(_block_containing("SamplingSpec("), namespace)
    assert namespace["images"].shape == (16, 8, 8, 1)
    assert isinstance(namespace["spec"], ddpm_tf.SamplingSpec)
