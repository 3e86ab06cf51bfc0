"""Plot one column of several runs' training curves (curve.csv) against minutes or steps.

    python bench/plot_curves.py runs/a runs/b --column fid --out curves.png
    python bench/plot_curves.py runs/study/* --column loss --x step --log-y --out loss.png

Each run is a line labelled with its directory name; rows where the column is empty are skipped.
With --column fid, the runs' real-vs-real floor (fid_floor) is drawn dashed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddpm_tf.training.ddpm_train_curve import COLUMNS, read_curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories holding curve.csv")
    parser.add_argument("--column", default="fid", choices=COLUMNS[2:], help="what to plot")
    parser.add_argument("--x", default="minutes", choices=("minutes", "step"))
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", required=True, help="PNG file")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    floors = []
    for run in args.runs:
        rows = [r for r in read_curve(Path(run) / "curve.csv") if r.get(args.column) is not None]
        if not rows:
            print(f"{run}: no {args.column} values", file=sys.stderr)
            continue
        axes.plot(
            [r[args.x] for r in rows],
            [r[args.column] for r in rows],
            marker=".",
            label=Path(run).name,
        )
        floors += [r["fid_floor"] for r in rows if r.get("fid_floor") is not None]
    if args.column == "fid" and floors:
        floor = min(floors)
        axes.axhline(floor, color="gray", linestyle="--", label=f"real vs real ({floor:.3g})")
    if args.log_y:
        axes.set_yscale("log")
    axes.set_xlabel("training minutes (wall time)" if args.x == "minutes" else "step")
    axes.set_ylabel("FID" if args.column == "fid" else args.column)
    axes.set_title(args.title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
