"""The package's shape: one import name, programs that import no other program, layers that hold.

These read the installed distribution and the source files, so they fail when a change breaks the
layout that docs/ARCHITECTURE.md describes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import ddpm_tf

PACKAGE = Path(ddpm_tf.__file__).parent
ROOT = PACKAGE.parent
PROGRAMS = {
    "ddpm_tf.training.ddpm_train",
    "ddpm_tf.training.ddpm_sample",
    "ddpm_tf.training.ddpm_eval",
    "ddpm_tf.training.ddpm_classifier",
    "ddpm_tf.training.ddpm_distill",
    "ddpm_tf.training.ddpm_prepare",
    "ddpm_tf.training.ddpm_onednn",
    "ddpm_tf.export.ddpm_export",
}
PROGRAM_FOLDERS = {"training": "ddpm_tf.training", "export": "ddpm_tf.export"}


def test_the_distribution_installs_one_import_name():
    dist = importlib.metadata.distribution("ddpm-tf")
    assert dist.read_text("top_level.txt").split() == ["ddpm_tf"]
    provided = {name for name, dists in importlib.metadata.packages_distributions().items()}
    owned = {
        name for name in provided if "ddpm-tf" in importlib.metadata.packages_distributions()[name]
    }
    assert owned == {"ddpm_tf"}
    for script in dist.entry_points.select(group="console_scripts"):
        assert script.value.startswith("ddpm_tf."), script


def test_training_and_export_are_not_importable_outside_the_package(tmp_path):
    code = (
        "import importlib.util as u; "
        "print(u.find_spec('training'), u.find_spec('export'), u.find_spec('ddpm_tf.training'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["None", "None"] and out[2] != "None"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _module_files() -> dict[str, Path]:
    files = {}
    folders = {PACKAGE: "ddpm_tf", **{ROOT / f: p for f, p in PROGRAM_FOLDERS.items()}}
    for folder, package in folders.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            files[".".join((package, *relative.parts))] = path
    return files


def test_program_modules_are_named_after_their_commands():
    """ddpm-x is ddpm_x.py; another module of a program folder is one program's helper (its name
    the program's, then _...) or the package's own; no name is also a library module's."""
    scripts = importlib.metadata.distribution("ddpm-tf").entry_points.select(
        group="console_scripts"
    )
    commands = {script.module: script.name for script in scripts}
    assert set(commands) == PROGRAMS
    for module, command in commands.items():
        assert module.rsplit(".", 1)[1] == command.replace("-", "_"), module
    library = {path.stem for path in PACKAGE.rglob("*.py")}
    for folder in PROGRAM_FOLDERS:
        for path in (ROOT / folder).glob("*.py"):
            if path.stem in ("__init__", "__main__"):
                continue
            names = {p.rsplit(".", 1)[1] for p in PROGRAMS}
            owners = [n for n in names if path.stem == n or path.stem.startswith(f"{n}_")]
            assert owners, f"{folder}/{path.name} is named after no program"
            assert path.stem not in library, f"{folder}/{path.name} has a library module's name"


def test_no_program_imports_another_program():
    files = _module_files()
    for program in PROGRAMS:
        others = PROGRAMS - {program}
        assert not _imports(files[program]) & others, program


def test_the_library_imports_no_program():
    for name, path in _module_files().items():
        if name.startswith(("ddpm_tf.training", "ddpm_tf.export")):
            continue
        bad = {i for i in _imports(path) if i.startswith(("ddpm_tf.training", "ddpm_tf.export."))}
        assert not bad, (name, bad)


def test_pixels_exporting_and_classifier_do_not_import_the_tfds_pipeline():
    files = _module_files()
    sampling = [name for name in files if name.startswith("ddpm_tf.sampling.")]
    assert "ddpm_tf.sampling.loop" in sampling
    for name in ("ddpm_tf.pixels", "ddpm_tf.classifier", "ddpm_tf.features", *sampling):
        assert "ddpm_tf.data" not in _imports(files[name]), name
    for name, path in files.items():
        if name.startswith(("ddpm_tf.exporting", "ddpm_tf.export.")):
            assert "ddpm_tf.data" not in _imports(path), name


def test_quiet_start_up_knows_every_console_script():
    from ddpm_tf import _startup

    scripts = importlib.metadata.distribution("ddpm-tf").entry_points.select(
        group="console_scripts"
    )
    assert set(_startup.PROGRAMS) == {script.name for script in scripts}
