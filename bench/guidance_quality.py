"""Classifier guidance against classifier-free guidance, measured: FID and class agreement by scale.

Three ways to ask a model for a class, each at the guidance scales `SCALES`, sampled with
DPM-Solver++ at 20 steps (every class in turn, --num-samples images, one seed):

- `classifier/unconditional`: an unconditional run steered by a noisy classifier (classifier
  scale S);
- `classifier/null-class`: the class-conditional run's null class (guidance_scale 0) steered by
  the same classifier (it was trained on the same data under the same diffusion);
- `classifier-free`: the class-conditional run with classifier-free guidance scale S (0: its null
  class, 1: plainly conditional).

Each row: FID on the feature classifier's features against the test split, beside its floor (as
many training images), the share of samples that feature classifier assigns to the asked class,
and the seconds. Rows go to OUT/results.json as they finish (a rerun skips them), a plot to
OUT/guidance.png and sample grids to OUT/<row>.png.

    python bench/guidance_quality.py --unconditional runs/fashion_uncond \\
        --conditional runs/fashion_mnist --noisy-classifier runs/fashion_uncond/noisy_classifier \\
        --classifier runs/fashion_classifier.keras --data-dir ~/tfds --out runs/guidance/fashion
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import machine

from ddpm_tf.data import load_arrays
from ddpm_tf.evaluation import sample_quality
from ddpm_tf.features import ClassifierFeatures
from ddpm_tf.guidance import load_noisy_classifier
from ddpm_tf.pixels import save_grid, scale_to_unit
from ddpm_tf.runs import RunDirectory, load_model
from ddpm_tf.sampling import SamplingSpec, every_class, generate_uint8

SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
SPEC = SamplingSpec("dpm_solver++", "logsnr20")
WAYS = ("classifier/unconditional", "classifier/null-class", "classifier-free")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unconditional", type=Path, required=True, help="an unconditional run")
    parser.add_argument("--conditional", type=Path, help="a class-conditional run (optional)")
    parser.add_argument("--noisy-classifier", type=Path, required=True)
    parser.add_argument("--classifier", type=Path, required=True, help="the feature classifier")
    parser.add_argument("--data-dir")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


class Study:
    """The runs, the classifiers, the real images and the results file."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        args.out.mkdir(parents=True, exist_ok=True)
        self.results_path = args.out / "results.json"
        self.results = (
            json.loads(self.results_path.read_text()) if self.results_path.exists() else {}
        )
        data = RunDirectory(args.unconditional).saved_config()["data"]
        self.test, _ = load_arrays(data["dataset"], data["test_split"], data_dir=args.data_dir)
        train, _ = load_arrays(data["dataset"], data["train_split"], data_dir=args.data_dir)
        self.train = train
        self.extractor = ClassifierFeatures(args.classifier)
        self.noisy = load_noisy_classifier(args.noisy_classifier)
        self.labels = every_class(args.num_samples, self.noisy.num_classes)
        report = json.loads((args.noisy_classifier / "report.json").read_text())
        models = {"unconditional": args.unconditional, "conditional": args.conditional}
        self.results.setdefault(
            "setup",
            {
                "machine": machine(),
                "spec": SPEC.to_dict(),
                "num_samples": args.num_samples,
                "seed": args.seed,
                "noisy_classifier": {
                    k: report[k] for k in ("steps", "train_minutes", "parameters")
                },
                "noisy_accuracy_by_timestep": report["accuracy_by_timestep"],
                "runs": {k: str(v) for k, v in models.items() if v is not None},
            },
        )
        self.models = {k: load_model(v) for k, v in models.items() if v is not None}

    def agreement(self, images: np.ndarray) -> float:
        """The share of uint8 `images` the feature classifier assigns to the asked labels."""
        logits = np.concatenate(
            [
                self.extractor.model(scale_to_unit(images[s : s + 500]), training=False)
                for s in range(0, len(images), 500)
            ]
        )
        return float(np.mean(np.argmax(logits, -1) == self.labels))

    def row(self, way: str, scale: float) -> None:
        key = f"{way}@{scale:g}"
        if key in self.results:
            return
        model = self.models["unconditional" if way == "classifier/unconditional" else "conditional"]
        if way == "classifier-free":
            conditioning = {"guidance_scale": scale}
        else:
            guidance = 1.0 if way == "classifier/unconditional" else 0.0
            conditioning = {
                "guidance_scale": guidance,
                "classifier": self.noisy,
                "classifier_scale": scale,
            }
        began = time.perf_counter()
        images = generate_uint8(
            model,
            self.args.num_samples,
            self.args.seed,
            SPEC,
            labels=self.labels,
            batch_size=self.args.batch_size,
            **conditioning,
        )
        seconds = time.perf_counter() - began
        scores = sample_quality(self.test, images, self.extractor, reference_uint8=self.train)
        self.results[key] = {
            "way": way,
            "scale": scale,
            "fid": round(scores["fid"], 2),
            "fid_floor": round(scores["fid_floor"], 2),
            "agreement": round(self.agreement(images), 4),
            "seconds": round(seconds, 1),
        }
        save_grid(images[:100], self.args.out / f"{way.replace('/', '-')}@{scale:g}.png", ncols=10)
        self.results_path.write_text(json.dumps(self.results, indent=2) + "\n")
        print(key, self.results[key], flush=True)

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, (fid_axes, share_axes) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
        rows = [r for k, r in self.results.items() if k != "setup"]
        for way in WAYS:
            mine = sorted((r for r in rows if r["way"] == way), key=lambda r: r["scale"])
            if not mine:
                continue
            scales = [r["scale"] for r in mine]
            fid_axes.plot(scales, [r["fid"] for r in mine], marker="o", label=way)
            share_axes.plot(scales, [r["agreement"] for r in mine], marker="o", label=way)
        floor = np.mean([r["fid_floor"] for r in rows])
        fid_axes.axhline(floor, color="grey", linestyle="--", label="floor (real vs real)")
        fid_axes.set(xlabel="guidance scale", ylabel="FID (classifier features)")
        share_axes.set(xlabel="guidance scale", ylabel="share assigned to the asked class")
        fid_axes.legend(fontsize=8)
        figure.tight_layout()
        path = self.args.out / "guidance.png"
        figure.savefig(path)
        plt.close(figure)
        return path


def main() -> None:
    args = parse()
    study = Study(args)
    ways = WAYS if args.conditional is not None else WAYS[:1]
    for way in ways:
        for scale in SCALES:
            study.row(way, scale)
    print(f"plot: {study.plot()}")


if __name__ == "__main__":
    main()
