"""The build of the fused kernels (ddpm_tf.kernels.build): one real compile, and fake compilers for
everything that can go wrong, each of which must end in TensorFlow's ops with one warning line.

A process must not load two copies of the kernel library (their kernels would be registered
twice), so every case that loads a working library runs in a fresh process; the cases that fall
back run here, with the cache in a temporary folder.
"""

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ddpm_tf import kernels
from ddpm_tf.errors import InputError
from ddpm_tf.kernels import build
from ddpm_tf.layers import GroupNorm

TESTS = Path(__file__).resolve().parent
DAY = 24 * 3600

# -------------------------------------------------------------------------- what a process runs


def probe() -> dict:
    """What this process runs for a GroupNorm layer: the kernels' status, whether the fused op is
    in the layer's graph, and the largest error of its output against a NumPy GroupNorm."""
    rng = np.random.default_rng(0)
    layer = GroupNorm(groups=4, epsilon=1e-6)
    layer.build((None, 6, 6, 16))
    gamma, beta = rng.normal(1.0, 0.3, 16), rng.normal(0.0, 0.3, 16)
    layer.set_weights([gamma, beta])
    x = rng.normal(1.5, 2.0, (3, 6, 6, 16)).astype(np.float32)
    function = tf.function(lambda v: layer(v))
    graph = function.get_concrete_function(tf.TensorSpec(x.shape)).graph
    groups = x.astype(np.float64).reshape(3, 36, 4, 4)
    mean, var = groups.mean((1, 3), keepdims=True), groups.var((1, 3), keepdims=True)
    want = ((groups - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * gamma + beta
    return {
        "status": kernels.status(),
        "active": kernels.active(),
        "fused": "DdpmGroupNorm" in {op.type for op in graph.get_operations()},
        "error": float(np.abs(function(x).numpy() - want).max()),
    }


PROBE = "import json, test_kernel_build as t; print(json.dumps(t.probe()))"


def python_command(env: dict, script: str = PROBE) -> dict:
    """Popen arguments that run `script` (default: print `probe`'s result) in a fresh process,
    with this folder importable and `env` added to the environment."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path, **env}
    return {
        "args": [sys.executable, "-c", script],
        "env": environment,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }


def finished(process: subprocess.Popen, timeout: float = 120) -> tuple[dict, list[str]]:
    """The probe's result and the lines the package wrote to stderr, of a process that must have
    ended well and without a traceback."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0 and "Traceback" not in err, err[-3000:]
    return json.loads(out.splitlines()[-1]), [
        line for line in err.splitlines() if line.startswith("ddpm_tf")
    ]


def run_probe(env: dict) -> tuple[dict, list[str]]:
    return finished(subprocess.Popen(**python_command(env)))


def assert_uses(result: dict, fused: bool) -> None:
    """The layer runs the fused kernel (or TensorFlow's ops) and computes a correct GroupNorm."""
    assert result["active"] is fused and result["fused"] is fused, result
    assert result["error"] < 1e-4, result


def assert_falls_back(caplog, *fragments: str) -> str:
    """Loads the kernels in this process: TensorFlow's ops are used and one warning line on the
    logger says why (naming each of `fragments`). Returns the sentence."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ddpm_tf.kernels"):
        library, why = build.load()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert library is None and warnings == [f"ddpm_tf: {why}"], (why, warnings)
    assert "\n" not in why and build.FALLBACK in why
    for fragment in fragments:
        assert fragment in why
    result = probe()
    assert result["status"] == why
    assert_uses(result, fused=False)
    return why


# ------------------------------------------------------------------------------ fake compilers
FAKE = """#!/bin/sh
here=$(dirname "$0")
echo "$1" >> "$here/calls"
if [ "$1" = --version ]; then
  {version}
  exit 0
fi
out=; prev=
for arg in "$@"; do
  if [ "$prev" = -o ]; then out=$arg; fi
  prev=$arg
done
{step}
"""
VERSION = 'echo "fake c++ 1.0"'
FAIL = 'echo "group_norm.cc:1:10: fatal error: boom.h: No such file" >&2; exit 1'
HANG = 'sleep 300 & echo $! >> "$here/pids"; wait'
GARBAGE = 'yes "not a shared object" | head -c 4096 > "$out"'


def fake_compiler(folder: Path, step: str, version: str = VERSION) -> Path:
    """A shell script standing in for the C++ compiler: `version` answers --version, `step` runs
    for each compile and link command ($out is its -o argument). Its calls are logged."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c++"
    path.write_text(FAKE.format(version=version, step=step))
    path.chmod(0o755)
    return path


def calls(cxx: Path) -> list[str]:
    """The first argument of each call of a fake compiler: --version, -c (compile), -shared."""
    log = cxx.parent / "calls"
    return log.read_text().split() if log.exists() else []


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty kernel cache for this test, and a fresh `build.load` before and after it."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DDPM_TF_KERNEL_CACHE", str(root))
    monkeypatch.delenv(build.TIMEOUT_ENV, raising=False)
    monkeypatch.delenv(kernels.ENV_SWITCH, raising=False)
    build.load.cache_clear()
    yield root
    build.load.cache_clear()


def entry_of(cxx: Path, root: Path | None = None) -> Path:
    """The cache entry that `cxx` builds (asking it for its version, a call then forgotten)."""
    key = build.library_key(str(cxx))
    (cxx.parent / "calls").unlink()
    return (root or build.cache_root()) / key


def use(monkeypatch, cxx: Path) -> Path:
    """Makes `cxx` the compiler of this test; returns its cache entry."""
    monkeypatch.setenv("CXX", str(cxx))
    return entry_of(cxx)


# -------------------------------------------------------------------------- the real compiler
needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler")

REAL_BUILD = """
import json, os, time
from ddpm_tf.kernels import build
import test_kernel_build as t
first = build.load()[1]
target = build.cache_root() / build.library_key(build.compiler()) / build.LIBRARY_NAME
os.utime(target, (time.time() - 2 * t.DAY,) * 2)  # unused for two days
build.load.cache_clear()
second = t.probe()
print(json.dumps({"first": first, "second": second, "age": time.time() - target.stat().st_mtime}))
"""


@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    """The one real compile of this file, in a fresh process and cache: (cache, its report),
    and beside it `plain.so`, the library without its checksum, for fake compilers to copy."""
    if build.compiler() is None:
        pytest.skip("no C++ compiler")
    root = tmp_path_factory.mktemp("real") / "cache"
    process = subprocess.Popen(**python_command({"DDPM_TF_KERNEL_CACHE": str(root)}, REAL_BUILD))
    report, _ = finished(process, timeout=300)
    (library,) = root.glob(f"*/{build.LIBRARY_NAME}")
    (root.parent / "plain.so").write_bytes(build.read_library(library))
    return root, report


def copying(real_build) -> str:
    """The step of a fake compiler that writes the real library."""
    return f'cp "{real_build[0].parent / "plain.so"}" "$out"'


@needs_compiler
def test_a_fresh_cache_compiles_a_library_that_loads_and_is_used(real_build):
    root, report = real_build
    assert report["first"].startswith("compiled")
    assert report["second"]["status"].startswith("fused kernels (loaded")
    assert_uses(report["second"], fused=True)
    assert [p.name for p in root.glob("*/*")] == [build.LIBRARY_NAME]
    (entry,) = root.iterdir()
    assert entry.name == build.library_key(build.compiler())
    assert report["age"] < 3600  # loading touched the library: in use, so not stale


# ----------------------------------------------------------------------------- keys and input
def test_the_key_changes_with_the_setup_and_the_source(monkeypatch, tmp_path):
    def parts(cxx: Path) -> list[str]:
        return build.library_key(str(cxx)).split("-")

    cxx = fake_compiler(tmp_path / "a", GARBAGE)
    setup, source = parts(cxx)
    assert parts(cxx) == [setup, source]
    with monkeypatch.context() as patch:
        patch.setattr(build, "_cpu_identity", lambda: "another cpu")
        other_cpu = parts(cxx)  # -march=native code stays on its CPU
    newer = parts(fake_compiler(tmp_path / "b", GARBAGE, version='echo "fake c++ 2.0"'))
    edited = tmp_path / "sources"
    edited.mkdir()
    for name in build.SOURCES:
        (edited / name).write_bytes((build._source_dir() / name).read_bytes() + b"\n// edit\n")
    monkeypatch.setattr(build, "_source_dir", lambda: edited)
    new_source = parts(cxx)
    assert other_cpu[0] != setup and newer[0] != setup and new_source[0] == setup
    assert other_cpu[1] == source and newer[1] == source and new_source[1] != source


@pytest.mark.parametrize("text", ["soon", "0", "-5", "inf", "nan"])
def test_the_timeout_variable_must_be_seconds(monkeypatch, text):
    monkeypatch.setenv(build.TIMEOUT_ENV, text)
    with pytest.raises(InputError, match=f"{build.TIMEOUT_ENV}='{text}' is not a number"):
        build.build_timeout()


def test_the_timeout_defaults_to_300_seconds(monkeypatch):
    monkeypatch.delenv(build.TIMEOUT_ENV, raising=False)
    assert build.build_timeout() == build.DEFAULT_TIMEOUT == 300
    monkeypatch.setenv(build.TIMEOUT_ENV, " 12.5 ")
    assert build.build_timeout() == 12.5


# ---------------------------------------------------------------------- compilers that fail
def test_without_a_compiler_the_ops_are_tensorflows_and_nothing_is_written(
    monkeypatch, cache, tmp_path, caplog
):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.INFO, logger="ddpm_tf.kernels"):
        library, why = build.load()
    assert library is None and why.startswith("no C++ compiler (set $CXX or install g++)")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a normal set-up
    assert_uses(probe(), fused=False)
    assert not cache.exists()


@pytest.mark.parametrize("kind", ["not executable", "not found", "a directory", "exits 1"])
def test_a_cxx_that_is_no_compiler_falls_back_with_one_warning(
    monkeypatch, cache, tmp_path, caplog, kind
):
    cxx = tmp_path / "bin" / "c++"
    cxx.parent.mkdir()
    if kind == "not executable":
        fake_compiler(cxx.parent, GARBAGE).chmod(0o644)
    elif kind == "a directory":
        cxx.mkdir()
    elif kind == "exits 1":
        fake_compiler(cxx.parent, GARBAGE, version="echo 'c++: unknown option' >&2; exit 1")
    monkeypatch.setenv("CXX", str(cxx))
    expected = {
        "not executable": f"$CXX='{cxx}' is not executable",
        "not found": f"$CXX='{cxx}' was not found",
        "a directory": f"$CXX='{cxx}' is not a file",
        "exits 1": "`c++ --version` exited with status 1: c++: unknown option",
    }[kind]
    assert_falls_back(caplog, expected)
    assert not cache.exists()


def test_a_compiler_error_is_one_line_and_is_not_retried_until_cleared(
    monkeypatch, cache, tmp_path, caplog
):
    cxx = fake_compiler(tmp_path / "bin", FAIL)
    entry = use(monkeypatch, cxx)
    assert_falls_back(caplog, "compiling group_norm.cc", "status 1", "fatal error: boom.h")
    assert calls(cxx).count("-c") == 1
    assert (entry / build.FAILURE_NAME).is_file() and not (entry / build.LIBRARY_NAME).exists()
    assert [p.name for p in entry.iterdir()] == [build.FAILURE_NAME]  # no build folder left
    build.load.cache_clear()
    assert_falls_back(caplog, "failed to build before", "boom.h", str(entry / build.FAILURE_NAME))
    assert calls(cxx).count("-c") == 1  # a later process does not compile again
    (entry / build.FAILURE_NAME).unlink()
    build.load.cache_clear()
    assert_falls_back(caplog, "fatal error: boom.h")
    assert calls(cxx).count("-c") == 2


@pytest.mark.parametrize("stage", ["--version", "compile"])
def test_a_hanging_compiler_is_killed_at_the_timeout(monkeypatch, cache, tmp_path, caplog, stage):
    hang_version = stage == "--version"
    cxx = fake_compiler(tmp_path / "bin", HANG, version=HANG if hang_version else VERSION)
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setenv(build.TIMEOUT_ENV, "1.5")
    started = time.monotonic()
    assert_falls_back(caplog, "did not finish within the build's 1.5 s", build.TIMEOUT_ENV)
    assert time.monotonic() - started < 30
    pids = [int(p) for p in (cxx.parent / "pids").read_text().split()]
    assert len(pids) == 1 and not alive(pids[0])  # the compiler's own child was killed too
    assert calls(cxx) == (["--version"] if hang_version else ["--version", "-c"])
    if not hang_version:  # a timeout is not recorded as a failure: the next process tries again
        entry = entry_of(cxx)
        assert not list(entry.iterdir())
        build.load.cache_clear()
        assert_falls_back(caplog, "did not finish")
        assert calls(cxx) == ["--version", "-c"]  # (entry_of forgot the earlier calls)


def test_a_program_with_a_hanging_compiler_ends_with_one_line(tmp_path):
    cxx = fake_compiler(tmp_path / "bin", HANG)
    env = {"CXX": str(cxx), build.TIMEOUT_ENV: "2", "DDPM_TF_KERNEL_CACHE": str(tmp_path / "c")}
    result, logged = run_probe(env)
    assert_uses(result, fused=False)
    assert len(logged) == 1 and "did not finish within the build's 2 s" in logged[0]
    assert result["status"] == logged[0].removeprefix("ddpm_tf: ")
    assert not alive(int((cxx.parent / "pids").read_text()))


# ---------------------------------------------------------------------- damaged libraries
@pytest.mark.parametrize("damage", ["random bytes", "truncated", "no checksum"])
def test_a_damaged_library_is_rebuilt_once_then_the_fallback_is_used(
    monkeypatch, cache, tmp_path, caplog, damage
):
    cxx = fake_compiler(tmp_path / "bin", GARBAGE)  # every rebuild gives a library that fails
    entry = use(monkeypatch, cxx)
    entry.mkdir(parents=True)
    good = b"\x7fELF" + bytes(range(256)) * 64
    (entry / build.LIBRARY_NAME).write_bytes(good)
    build._seal(entry / build.LIBRARY_NAME)
    sealed = (entry / build.LIBRARY_NAME).read_bytes()
    assert build.read_library(entry / build.LIBRARY_NAME) == good
    damaged = {
        "random bytes": np.random.default_rng(0).bytes(len(sealed)),
        "truncated": sealed[: len(sealed) // 2],
        "no checksum": good,
    }[damage]
    (entry / build.LIBRARY_NAME).write_bytes(damaged)
    assert_falls_back(caplog, "its checksum does not match", "nor once rebuilt", "invalid ELF")
    assert calls(cxx) == ["--version", "-c", "-shared"]  # rebuilt once, no loop
    build.load.cache_clear()
    assert_falls_back(caplog, "failed to build before", "nor once rebuilt")
    assert calls(cxx) == ["--version", "-c", "-shared", "--version"]


def test_a_truncated_cached_library_is_rebuilt_and_used(real_build, tmp_path):
    """A truncated shared object kills the process that maps it (SIGBUS): it must not be loaded
    but rebuilt, here by a compiler that writes the real library."""
    cxx = fake_compiler(tmp_path / "bin", copying(real_build))
    root = tmp_path / "cache"
    target = entry_of(cxx, root) / build.LIBRARY_NAME
    target.parent.mkdir(parents=True)
    real = next(real_build[0].glob(f"*/{build.LIBRARY_NAME}")).read_bytes()
    target.write_bytes(real[: len(real) // 2])
    result, logged = run_probe({"CXX": str(cxx), "DDPM_TF_KERNEL_CACHE": str(root)})
    assert_uses(result, fused=True)
    assert len(logged) == 1 and "again: it did not load (its checksum does not match" in logged[0]
    assert calls(cxx) == ["--version", "-c", "-shared"]
    assert build.read_library(target) == (real_build[0].parent / "plain.so").read_bytes()


# ------------------------------------------------------------------- concurrency and the cache
def test_two_processes_building_at_once_both_load_a_whole_library(real_build, tmp_path):
    # The compile step waits (up to a minute) until both processes are in it: a barrier.
    barrier = (
        'echo started >> "$here/starts"; n=0; '
        'while [ "$(wc -l < "$here/starts")" -lt 2 ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done'
    )
    step = f'[ "$1" = -c ] && {{ {barrier}; }}; {copying(real_build)}'
    cxx = fake_compiler(tmp_path / "bin", step)
    root = tmp_path / "cache"
    env = {"CXX": str(cxx), "DDPM_TF_KERNEL_CACHE": str(root)}
    processes = [subprocess.Popen(**python_command(env)) for _ in range(2)]
    results = [finished(p) for p in processes]
    for result, logged in results:
        assert_uses(result, fused=True)
        assert result["status"].startswith("fused kernels (compiled") and not logged
    assert calls(cxx).count("-c") == 2  # both compiled, at the same time
    (entry,) = root.iterdir()
    assert [p.name for p in entry.iterdir()] == [build.LIBRARY_NAME]  # no build folder left
    assert build.read_library(entry / build.LIBRARY_NAME) is not None


@pytest.mark.parametrize("why", ["a file in the path", "read-only"])
def test_an_unwritable_cache_builds_for_this_process_only(real_build, tmp_path, why):
    if why == "read-only" and os.geteuid() == 0:
        pytest.skip("permissions do not stop root")
    cxx = fake_compiler(tmp_path / "bin", copying(real_build))
    blocked = tmp_path / "blocked"
    if why == "a file in the path":
        blocked.write_text("a file, not a folder")
        root = blocked / "cache"
    else:
        blocked.mkdir()
        blocked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        root = blocked
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"CXX": str(cxx), "DDPM_TF_KERNEL_CACHE": str(root), "TMPDIR": str(scratch)}
    try:
        result, logged = run_probe(env)
    finally:
        if why == "read-only":
            blocked.chmod(stat.S_IRWXU)
    assert_uses(result, fused=True)
    assert len(logged) == 1 and "compiled for this process only" in logged[0]
    assert f"the cache folder {root} cannot be written" in logged[0]
    assert not list(scratch.iterdir())  # the private build folder is gone


def test_building_prunes_only_this_setups_stale_entries(monkeypatch, cache, tmp_path, caplog):
    cxx = fake_compiler(tmp_path / "bin", GARBAGE)
    entry = use(monkeypatch, cxx)
    setup = entry.name.split("-")[0]
    old = time.time() - 2 * DAY
    layout = {  # name: (files, age in seconds), relative to the cache
        f"{setup}-000000000001": ([build.LIBRARY_NAME], old),  # an older source: stale
        f"{setup}-000000000002": ([build.FAILURE_NAME], old),  # an older failed build: stale
        "0123456789abcdef0123": ([build.LIBRARY_NAME], old),  # the earlier naming: stale
        f"{setup}-000000000003": ([build.LIBRARY_NAME], time.time()),  # loaded lately
        f"{setup}-000000000004": (["tmpab12/group_norm.o"], time.time()),  # being built
        f"{setup}-000000000005": ([build.LIBRARY_NAME, "notes.txt"], old),  # not only ours
        f"abcdefabcdef-{entry.name[13:]}": ([build.LIBRARY_NAME], old),  # another CPU
        "mine": ([build.LIBRARY_NAME], old),  # not a name of ours
    }
    for name, (files, mtime) in layout.items():
        for file in files:
            (cache / name / file).parent.mkdir(parents=True, exist_ok=True)
            (cache / name / file).write_text("x")
        for path in sorted((cache / name).rglob("*"), reverse=True) + [cache / name]:
            os.utime(path, (mtime, mtime))
    (cache / "README").write_text("a file beside the entries")
    os.utime(cache / "README", (old, old))
    assert_falls_back(caplog)  # the garbage library is built (and pruning runs), then fails
    stale = {f"{setup}-000000000001", f"{setup}-000000000002", "0123456789abcdef0123"}
    assert {p.name for p in cache.iterdir()} == (set(layout) - stale) | {"README", entry.name}
    assert build.prune(cache, entry.name) == []  # the rest stays however often it runs
