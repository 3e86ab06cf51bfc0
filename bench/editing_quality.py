"""Editing measured on real test images: inpainting, SDEdit and DDIM inversion of a trained run.

On the first --num-images test images (a class-conditional run uses its null class, so nothing
but the image tells the model what it shows):

- inpainting with the centre (half the side) or the left half masked: the share of completions
  the classifier assigns to the image's true label, and FID of the completions against the whole
  test split on the classifier's features, beside the real-vs-real floor at the same count
  (training images); RePaint with ancestral steps for resample R = 1, 5, 10 (R = 1 is plain
  replacement) and replacement with DPM-Solver++;
- SDEdit at a range of strengths: FID, accuracy, and the distance to the input (RMSE in [-1, 1]
  units and PSNR);
- DDIM inversion then decoding at 20, 50 and 200 steps: PSNR of the reconstruction.

Results go to OUT/results.json row by row (a rerun skips the rows there), grids to OUT/*.png.

    python bench/editing_quality.py runs/fashion_mnist --data-dir ~/tfds \\
        --classifier runs/fashion_classifier.keras --out runs/fashion_mnist/editing
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import machine

from ddpm_tf.data import load_arrays
from ddpm_tf.evaluation import sample_quality
from ddpm_tf.features import ClassifierFeatures
from ddpm_tf.keras_files import load_keras_file
from ddpm_tf.pixels import save_grid, to_unit_range, unit_to_uint8
from ddpm_tf.runs import RunDirectory, load_model
from ddpm_tf.sampling import SamplingSpec

STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)
INVERSION_STEPS = (20, 50, 200)
SHOWN = 8  # images per picture


def masks(size: int) -> dict[str, np.ndarray]:
    """name -> [H, W, 1] float32 mask, 1 where known."""
    centre = np.ones((size, size, 1), np.float32)
    quarter = size // 4
    centre[quarter : size - quarter, quarter : size - quarter] = 0.0
    left = np.ones((size, size, 1), np.float32)
    left[:, : size // 2] = 0.0
    return {"centre": centre, "left": left}


def inpainting_rows(ancestral_steps: int, jump: int) -> dict[str, tuple[SamplingSpec, int]]:
    """row name -> (spec, resample)."""
    rows = {f"repaint-r{r}": (SamplingSpec("ancestral", ancestral_steps), r) for r in (1, 5, 10)}
    rows["replacement-dpm++20"] = (SamplingSpec("dpm_solver++", "logsnr20"), 1)
    return rows


def batched(fn: Callable[[np.ndarray, slice], np.ndarray], count: int, batch: int) -> np.ndarray:
    """fn(part, slice) over slices of `count` rows, concatenated."""
    return np.concatenate(
        [np.asarray(fn(slice(s, min(s + batch, count)))) for s in range(0, count, batch)]
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), over all pixels."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else math.inf


class Study:
    """The model, the data, the scorers and the results file."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = (
            json.loads(self.results_path.read_text()) if self.results_path.exists() else {}
        )
        self.model = load_model(args.run)
        data = (RunDirectory(args.run).saved_config() or {}).get("data", {})
        dataset = args.dataset or data["dataset"]
        test, labels = load_arrays(dataset, data.get("test_split", "test"), data_dir=args.data_dir)
        self.test_uint8, self.labels = test, labels
        self.images = to_unit_range(test[: args.num_images])
        self.true = labels[: args.num_images]
        train, _ = load_arrays(dataset, "train", data_dir=args.data_dir, label_key=None)
        self.train_uint8 = train
        self.extractor = ClassifierFeatures(args.classifier)
        self.classifier = load_keras_file(Path(args.classifier), "classifier model", "")
        self.results.setdefault("machine", machine())
        self.results.setdefault("num_images", args.num_images)

    def accuracy(self, images: np.ndarray) -> float:
        predicted = batched(
            lambda s: np.argmax(self.classifier(images[s], training=False), -1), len(images), 250
        )
        return float(np.mean(predicted == self.true[: len(images)]))

    def quality(self, images: np.ndarray) -> dict:
        uint8 = unit_to_uint8(images).numpy()
        scores = sample_quality(
            self.test_uint8, uint8, self.extractor, reference_uint8=self.train_uint8
        )
        return {
            "fid": round(scores["fid"], 2),
            "fid_floor": round(scores["fid_floor"], 2),
            "accuracy": round(self.accuracy(images), 4),
        }

    def row(self, key: str, make: Callable[[], tuple[np.ndarray, dict]]) -> np.ndarray | None:
        """Runs `make` (-> images, extra fields) unless `key` is done; records and saves."""
        path = self.out / f"{key}.npy"
        if key in self.results and path.exists():
            return np.load(path)
        began = time.perf_counter()
        images, extra = make()
        seconds = time.perf_counter() - began
        np.save(path, images[:SHOWN])
        self.results[key] = {**extra, "seconds": round(seconds, 1)}
        self.results_path.write_text(json.dumps(self.results, indent=2) + "\n")
        print(key, self.results[key], flush=True)
        return images[:SHOWN]

    def run_inpainting(self) -> None:
        args, model = self.args, self.model
        size = self.images.shape[1]
        for mask_name, mask in masks(size).items():
            shown = [self.images[:SHOWN], np.where(mask > 0, self.images[:SHOWN], 0.0)]
            black = np.where(mask > 0, self.images, -1.0)
            shown.append(
                self.row(f"inpaint-{mask_name}-masked", lambda b=black: (b, self.quality(b)))
            )
            for name, (spec, resample) in inpainting_rows(args.ancestral_steps, args.jump).items():

                def make(spec=spec, resample=resample, mask=mask):
                    filled = batched(
                        lambda s: model.inpaint(
                            self.images[s],
                            mask,
                            s.start,
                            spec=spec,
                            resample=resample,
                            jump=args.jump,
                        ),
                        len(self.images),
                        args.batch_size,
                    )
                    return filled, {
                        **self.quality(filled),
                        "spec": spec.to_dict(),
                        "resample": resample,
                        "jump": args.jump,
                    }

                shown.append(self.row(f"inpaint-{mask_name}-{name}", make))
            self.picture(f"inpaint-{mask_name}", shown)

    def run_sdedit(self) -> None:
        spec = SamplingSpec("dpm_solver++", "logsnr20")
        shown = [self.images[:SHOWN]]
        for strength in STRENGTHS:

            def make(strength=strength):
                edited = batched(
                    lambda s: self.model.img2img(self.images[s], strength, s.start, spec=spec),
                    len(self.images),
                    self.args.batch_size,
                )
                rmse = float(np.sqrt(np.mean((edited - self.images) ** 2)))
                return edited, {
                    **self.quality(edited),
                    "rmse": round(rmse, 4),
                    "psnr": round(psnr(edited, self.images), 2),
                    "spec": spec.to_dict(),
                }

            shown.append(self.row(f"sdedit-{strength:g}", make))
        self.picture("sdedit", shown)

    def run_inversion(self) -> None:
        images = self.images[: self.args.inversion_images]
        shown = [images[:SHOWN]]
        for steps in INVERSION_STEPS:

            def make(steps=steps):
                def roundtrip(s):
                    return self.model.decode(self.model.invert(images[s], steps), steps)

                decoded = batched(roundtrip, len(images), self.args.batch_size)
                return decoded, {"psnr": round(psnr(decoded, images), 2), "num_images": len(images)}

            shown.append(self.row(f"inversion-{steps}", make))
        self.picture("inversion", shown)

    def picture(self, name: str, columns: list[np.ndarray]) -> None:
        """One row per image, one column per setting."""
        grid = np.stack([unit_to_uint8(c).numpy() for c in columns], axis=1)
        save_grid(grid.reshape(-1, *grid.shape[2:]), self.out / f"{name}.png", ncols=len(columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory of ddpm-train")
    parser.add_argument("--classifier", required=True, help="ddpm-classifier's .keras file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", help="default: the run's")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--inversion-images", type=int, default=200)
    parser.add_argument("--ancestral-steps", type=int, default=100)
    parser.add_argument("--jump", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--only", nargs="+", choices=("inpainting", "sdedit", "inversion"))
    args = parser.parse_args()
    study = Study(args)
    print(machine(), flush=True)
    for part in args.only or ("inversion", "sdedit", "inpainting"):
        getattr(study, f"run_{part}")()


if __name__ == "__main__":
    main()
