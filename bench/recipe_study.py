"""Sample quality per CPU-minute of training recipes: train each row, score it, write the table.

A row is a name and the `ddpm-train` overrides on top of a preset. Each row is trained with the
programs as a user runs them (`ddpm-train --config PRESET --run-dir ROOT/NAME OVERRIDES`), then
scored by `ddpm-eval` with one sampler for every row (`--num-samples` samples against the test
split on the classifier's features, beside the real-vs-real floor at the same count). The table
gives the steps, the training minutes (from the run's curve.csv: wall time, evaluations included)
and FID with its floor; `--markdown` writes it with the command of every row.

Rerunning continues: a finished row is read back, an interrupted training resumes from its
checkpoint (the programs' own resume), a missing score is computed.

    python bench/recipe_study.py --preset fashion_mnist --data-dir ~/tfds \\
        --classifier runs/fashion_classifier.keras --root runs/study --markdown docs/study.md
    python bench/recipe_study.py ... --only preset no-min-snr       # some rows
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

# The rows: name -> overrides on the preset (the preset as written is the row "preset"). Rows
# name what they set, so a row may repeat a preset's own value. The rows measured before the
# fashion_mnist and digits presets became class-conditional keep their results with UNCONDITIONAL.
UNCONDITIONAL = ["data.class_conditional=false"]
EPSILON = [*UNCONDITIONAL, "diffusion.model_mean_type=epsilon", "diffusion.schedule=linear"]
V_COSINE = [
    "diffusion.model_mean_type=v",
    "diffusion.schedule=cosine",
    "diffusion.min_snr_gamma=5.0",
]
OLD = [
    *EPSILON,
    "train.learning_rate=2e-4",
    "model.dropout=0.1",
    "train.ema_decay=0.9995",
    "diffusion.min_snr_gamma=0.0",
]
ROWS: dict[str, list[str]] = {
    "preset": [],
    "unconditional": UNCONDITIONAL,
    "epsilon-linear": EPSILON,
    "epsilon-linear-cosine-lr": [*EPSILON, "train.decay=cosine"],
    "old-recipe-3k": ["train.steps=3000", *OLD],
    "old-recipe": OLD,
    "cosine-lr": ["train.decay=cosine"],
    "no-min-snr": ["diffusion.min_snr_gamma=0.0"],
    "batch64-7.5k": ["train.batch_size=64", "train.steps=7500"],
    "class-conditional": ["data.class_conditional=true"],
    "v-cosine": V_COSINE,
    "v-cosine-class-conditional": [*V_COSINE, "data.class_conditional=true"],
    "v-cosine-unconditional": [*V_COSINE, *UNCONDITIONAL],
    "bfloat16": ["train.mixed_precision=bfloat16"],
}
SAMPLER = ["--method", "dpm_solver++", "--steps", "logsnr20"]


def commands(args: argparse.Namespace, name: str) -> tuple[list[str], list[str]]:
    """The ddpm-train and ddpm-eval command lines of a row."""
    run = Path(args.root) / name
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    train = ["ddpm-train", "--config", args.preset, "--run-dir", str(run), *data, *ROWS[name]]
    train += args.set
    evaluate = ["ddpm-eval", str(run), *data, "--classifier", args.classifier, "--bpd-examples"]
    evaluate += ["0", "--num-samples", str(args.num_samples), *SAMPLER, "--out", str(run / "eval")]
    return train, evaluate


def training_minutes(run: Path) -> float:
    """Minutes of training wall time in the run's curve (its last row)."""
    with open(run / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["minutes"])


def study_row(args: argparse.Namespace, name: str) -> dict:
    """Trains and scores one row (or reads what an earlier call left) and returns its result."""
    train, evaluate = commands(args, name)
    run = Path(args.root) / name
    report_file = run / "eval" / "report.json"
    if not report_file.exists():
        for command in (train, evaluate):
            print("$", shlex.join(command), flush=True)
            subprocess.run(command, check=True)
    report = json.loads(report_file.read_text())
    quality = report["sample_quality"]
    return {
        "name": name,
        "overrides": ROWS[name],
        "steps": report["step"],
        "minutes": training_minutes(run),
        "fid": quality["fid"],
        "fid_floor": quality["fid_floor"],
        "num_samples": quality["num_fake"],
        "sampler": " ".join(SAMPLER),
        "train_command": shlex.join(train),
        "eval_command": shlex.join(evaluate),
    }


def _code(overrides: str) -> str:
    return f"`{overrides}`" if overrides else "(the preset as written)"


def markdown(rows: list[dict]) -> str:
    """The table, then the commands of every row."""
    lines = [
        "| row | overrides | steps | minutes | FID (floor) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_code(' '.join(r['overrides']))} | {r['steps']:,} | "
            f"{r['minutes']:.0f} | {r['fid']:.1f} ({r['fid_floor']:.2f}) |"
        )
    lines += ["", "```bash"]
    for r in rows:
        lines += [r["train_command"], r["eval_command"]]
    lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fashion_mnist", help="the ddpm-train --config")
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument("--classifier", required=True, help="a .keras file from ddpm-classifier")
    parser.add_argument("--root", required=True, help="directory of the rows' run directories")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples scored per row")
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="run only these rows")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides added to every row (e.g. train.steps=100 for a quick look)",
    )
    parser.add_argument("--json", help="write the results as JSON")
    parser.add_argument("--markdown", help="write the table and commands as Markdown")
    args = parser.parse_args(argv)
    rows = [study_row(args, name) for name in args.only or ROWS]
    for r in rows:
        print(
            f"{r['name']:<18} {r['steps']:>7,} steps {r['minutes']:>6.1f} min  "
            f"FID {r['fid']:.1f} (floor {r['fid_floor']:.2f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))


if __name__ == "__main__":
    sys.exit(main())
