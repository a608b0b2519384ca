"""Score every pickled model on the test set and plot the best one's confusion matrix.

Usage: python src/evaluate.py MODELS_DIR FEATURES_DIR METRICS_JSON CONFUSION_PNG
Writes {"accuracy": {model: acc}, "best_model": name, "best_accuracy": acc} and a PNG whose bytes
depend only on the data (no timestamp or version in its metadata).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from sklearn.metrics import confusion_matrix  # noqa: E402


def plot_confusion(matrix, title: str, path: str) -> None:
    """Draw ``matrix`` with counts in each cell and save it as a deterministic PNG."""
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(matrix, cmap="Blues")
    for row, col in np.ndindex(matrix.shape):
        count = matrix[row, col]
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir")
    parser.add_argument("features_dir")
    parser.add_argument("metrics_out")
    parser.add_argument("plot_out")
    args = parser.parse_args()

    with np.load(os.path.join(args.features_dir, "test.npz")) as test:
        X, y = test["X"], test["y"]
    paths = sorted(glob.glob(os.path.join(args.models_dir, "*.pkl")))
    if not paths:
        raise SystemExit(f"evaluate.py: no *.pkl models in {args.models_dir}/")

    accuracy, predictions = {}, {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path, "rb") as f:
            model = pickle.load(f)
        predictions[name] = model.predict(X)
        accuracy[name] = round(float((predictions[name] == y).mean()), 6)
        print(f"evaluate: {name} test accuracy {accuracy[name]:.4f}")

    # Ties go to the first name in sorted order, so the choice is stable across runs.
    best = max(sorted(accuracy), key=lambda name: accuracy[name])
    os.makedirs(os.path.dirname(args.metrics_out) or ".", exist_ok=True)
    with open(args.metrics_out, "w") as f:
        report = {"accuracy": accuracy, "best_model": best, "best_accuracy": accuracy[best]}
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")

    matrix = confusion_matrix(y, predictions[best], labels=list(range(10)))
    plot_confusion(matrix, f"{best}: test accuracy {accuracy[best]:.3f}", args.plot_out)
    print(f"evaluate: best {best} ({accuracy[best]:.4f}) -> {args.metrics_out}, {args.plot_out}")


if __name__ == "__main__":
    main()
