"""Fit one classifier on the featurized train set and pickle it.

Usage: python src/train.py --model logreg|rf --seed N FEATURES_DIR MODEL_PKL METRICS_JSON
Reads [train] logreg_c, logreg_max_iter, rf_trees from params.toml. The metrics file holds the
train accuracy. With a fixed seed the pickle is byte-identical from one run to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tomllib

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


def build(model: str, seed: int, params: dict):
    """Return an unfitted estimator for ``model``."""
    if model == "logreg":
        return LogisticRegression(
            C=float(params["logreg_c"]), max_iter=int(params["logreg_max_iter"]), random_state=seed
        )
    if model == "rf":
        return RandomForestClassifier(n_estimators=int(params["rf_trees"]), n_jobs=1, random_state=seed)
    raise SystemExit(f"train.py: unknown model {model!r} (expected 'logreg' or 'rf')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("features_dir")
    parser.add_argument("model_out")
    parser.add_argument("metrics_out")
    parser.add_argument("--params", default="params.toml")
    args = parser.parse_args()

    with open(args.params, "rb") as f:
        params = tomllib.load(f)["train"]

    with np.load(os.path.join(args.features_dir, "train.npz")) as train:
        X, y = train["X"], train["y"]
    # One BLAS thread: the Mlfile declares cpus = 1 and mlmake runs the variants side by side,
    # so letting each one spawn a thread per core would only oversubscribe the machine.
    with threadpool_limits(limits=1):
        estimator = build(args.model, args.seed, params).fit(X, y)
    accuracy = float(estimator.score(X, y))

    for path in (args.model_out, args.metrics_out):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(args.model_out, "wb") as f:
        pickle.dump(estimator, f, protocol=5)
    with open(args.metrics_out, "w") as f:
        json.dump({"train_accuracy": round(accuracy, 6)}, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"train: {args.model} seed={args.seed} train accuracy {accuracy:.4f} -> {args.model_out}")


if __name__ == "__main__":
    main()
