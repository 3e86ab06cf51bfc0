"""The commands and code examples of the README and of every page in docs/ run as written.

Every `ddpm-*` command line in a bash block is parsed by that program's own parser (ddpm-train's
overrides are resolved against its config keys, the sampling flags make a `SamplingSpec`, and
`--compare` items are parsed), so a renamed flag, key or steps spelling fails here. The Python
blocks that need no dataset or trained run are executed; the others have their `ddpm_tf` imports
resolved and the keyword arguments of the package's calls checked against the real signatures.
Every relative link points to an existing file and, with an anchor, to one of its headings.
"""

from __future__ import annotations

import ast
import dataclasses
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
    cli,
    data,
    from_preset,
    get_beta_schedule,
    unet,
)
from ddpm_tf.exporting import ExportOptions, export_model
from ddpm_tf.sampling.spec import parse_comparisons
from ddpm_tf.training.ddpm_train import resolve_args

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = program_modules()


def _page_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def _blocks(language: str) -> list[str]:
    return [block for page in PAGES for block in _page_blocks(page, language)]


def _commands(pages=(README,)) -> list[list[str]]:
    commands = []
    for page in pages:
        for block in _page_blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                first = line.split(maxsplit=1)[:1]
                if first and first[0] in PROGRAMS:  # other lines need not be shell-splittable
                    commands.append(shlex.split(line, comments=True))
    return commands


def _page_commands() -> list:
    return [
        pytest.param(words, id=f"{page.name}: {' '.join(words)[:60]}")
        for page in PAGES
        for words in _commands([page])
    ]


def test_the_readme_has_commands_for_every_program():
    assert {words[0] for words in _commands()} == set(PROGRAMS)


@pytest.mark.parametrize("words", _page_commands())
def test_every_command_parses_as_written(words):
    program = PROGRAMS[words[0]]
    args = program.build_parser().parse_args(words[1:])  # exits (fails) on a bad flag
    if words[0] == "ddpm-train":
        resolve_args(args)  # every override names a real key with a valid value
    default = getattr(program, "DEFAULT_SPEC", getattr(program, "EXPORT_SPEC", None))
    if default is not None:
        spec = cli.sampling_spec(args, default)  # the sampling flags make a valid spec
        if getattr(args, "compare", None):
            assert parse_comparisons(args.compare, spec)


def test_every_page_in_docs_is_linked_from_the_readme():
    linked = {target.split("#")[0] for target in _links(README)}
    assert {f"docs/{page.name}" for page in PAGES[1:]} <= linked


def _without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def _links(page: Path) -> list[str]:
    """The relative link targets of a page, images included (not those inside code)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text()))
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens,
    repeated headings numbered."""
    anchors: set[str] = set()
    for heading in re.findall(
        r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M
    ):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file_and_heading(page):
    for target in _links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target}"


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
EXPORT_KEYWORDS = (
    set(inspect.signature(DiffusionModel.export).parameters)
    | ({field.name for field in dataclasses.fields(ExportOptions)} - {"formats"})
    | {"overwrite", "opset_version"}
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
        elif name == "export":
            assert keywords <= EXPORT_KEYWORDS, keywords - EXPORT_KEYWORDS
        elif name in SIGNATURES:
            parameters = inspect.signature(SIGNATURES[name]).parameters
            assert keywords <= set(parameters), (name, keywords - set(parameters))


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(block, id=f"{page.name}:{i}")
        for page in PAGES
        for i, block in enumerate(_page_blocks(page, "python"))
    ],
)
def test_python_examples_use_real_names_and_keywords(code):
    _check_names_and_keywords(code)


def _block_containing(text: str) -> str:
    (block,) = [b for b in _blocks("python") if text in b]
    return block


def test_the_mathematics_example_runs():
    # The example's `network` is any callable; a cheap one keeps the 1000-step loops fast.
    namespace = {"network": lambda x_t, t: 0.1 * x_t}
    exec(_block_containing("diffusion.training_losses"), namespace)
    assert namespace["samples"].shape == (16, 32, 32, 3)
    assert namespace["bpd"].shape == (8,) and bool(tf.reduce_all(namespace["bpd"] > 0))


def _tiny_model() -> DiffusionModel:
    network = unet.from_preset("tiny_8", ch=16, num_groups=4)
    return DiffusionModel(network, GaussianDiffusion(get_beta_schedule("linear", 100)))


def test_the_sampling_spec_example_runs():
    namespace = {"model": _tiny_model()}
    exec(_block_containing("SamplingSpec("), namespace)
    assert namespace["images"].shape == (16, 8, 8, 1)
    assert isinstance(namespace["spec"], ddpm_tf.SamplingSpec)


ONE_LINE_SAMPLING = [
    b for b in _blocks("python") if re.fullmatch(r"images = model\.generate\(.*\)\n", b)
]


@pytest.mark.parametrize("code", ONE_LINE_SAMPLING)
def test_the_one_line_sampling_examples_run(code):
    namespace = {"model": _tiny_model()}
    exec(code, namespace)
    assert namespace["images"].shape[1:] == (8, 8, 1)
