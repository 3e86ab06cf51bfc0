"""Peak memory of ddpm-train against the size of its dataset: it must not grow with the images.

Writes folders of synthetic 64x64 RGB PNG files (coloured discs and squares on gradients, one
subfolder per shape, so the run is class-conditional) with 20,000 and 200,000 images, then runs
the same ddpm-train command on each (a small U-Net, 2,000 steps, no sampling or evaluation) and
reports the peak resident memory of the training process (`wait4`'s ru_maxrss), the time of the
first start's decoding and of training. Folders and runs are kept under --root and reused.

    python bench/data_memory.py --root /tmp/data_memory
    python bench/data_memory.py --root /tmp/data_memory --sizes 2000 20000 --steps 200
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 64
TRAIN = [  # the same run for every folder: small, so 2,000 steps take minutes on 2 cores
    "model.preset=small_28",
    "model.ch=16",
    "model.ch_mult=[1, 2, 2]",
    "model.attn_resolutions=[]",
    "train.batch_size=16",
    "run.log_every=500",
    "run.checkpoint_every=500",
    "run.sample_every=1000000",
    "run.eval_every=1000000",
    "run.bpd_examples=0",
]


def synthetic_image(index: int) -> tuple[str, np.ndarray]:
    """(class, uint8 [64, 64, 3]): a disc or a square of a random colour on a random gradient."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    background = (
        rng.uniform(0, 255, 3) * (0.5 + 0.5 * (yy if rng.random() < 0.5 else xx))[..., None]
    )
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
    shape = "discs" if index % 2 else "squares"
    if shape == "discs":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    else:
        inside = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    image = np.where(inside[..., None], rng.uniform(0, 255, 3), background)
    return shape, image.astype(np.uint8)


def make_folder(root: Path, count: int) -> Path:
    folder = root / f"images_{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    began = time.perf_counter()
    for i in range(count):
        shape, image = synthetic_image(i)
        path = folder / shape / f"{i // 1000:03d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    done.write_text("")
    print(f"wrote {count} PNG files to {folder} in {time.perf_counter() - began:.0f} s", flush=True)
    return folder


def train(folder: Path, run: Path, steps: int) -> dict:
    """Runs ddpm-train on `folder`; its peak RSS, decode seconds and training seconds."""
    command = [sys.executable, "-m", "ddpm_tf.training", "--images", str(folder)]
    command += [
        "--run-dir",
        str(run),
        "data.class_conditional=true",
        *TRAIN,
        f"train.steps={steps}",
    ]
    shutil.rmtree(run, ignore_errors=True)  # a fresh run: the first start decodes, then trains
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"ddpm-train failed on {folder}:\n{output[-3000:]}")
    decoding = re.findall(r"decoding images: (\d+)/(\d+) images \| ([\d.e+]+) images/s", output)
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "seconds": time.perf_counter() - began,
        "decode_rate": float(decoding[-1][2]) if decoding else None,
        "done": re.findall(r"done: step (\d+) in (\d+) s", output),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    from common import machine

    print(f"machine: {machine()}", flush=True)
    results = {}
    for count in args.sizes:
        folder = make_folder(args.root, count)
        results[count] = train(folder, args.root / f"run_{count}", args.steps)
        r = results[count]
        print(
            f"{count} images: peak RSS {r['peak_rss_mb']:.0f} MB, decoding "
            f"{r['decode_rate'] or 0:.0f} images/s, {r['seconds']:.0f} s in all {r['done']}",
            flush=True,
        )
    base = results[args.sizes[0]]["peak_rss_mb"]
    for count in args.sizes[1:]:
        ratio = results[count]["peak_rss_mb"] / base
        print(f"peak RSS {count} / {args.sizes[0]} images: {ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
