"""Standardize the digits features, fitting on the train set only; optionally apply PCA.

Usage: python src/featurize.py IN_DIR OUT_DIR   (reads [featurize] pca_components; 0 = no PCA)
Reads IN_DIR/{train,test}.npz and writes OUT_DIR/{train,test}.npz with the same arrays X and y.
"""

from __future__ import annotations

import argparse
import os
import tomllib

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def load(path: str) -> dict[str, np.ndarray]:
    """Read every array of an .npz file."""
    with np.load(path) as data:
        return dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("in_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.toml")
    args = parser.parse_args()

    with open(args.params, "rb") as f:
        components = int(tomllib.load(f)["featurize"]["pca_components"])

    train = load(os.path.join(args.in_dir, "train.npz"))
    test = load(os.path.join(args.in_dir, "test.npz"))

    steps = [StandardScaler()]
    if components > 0:
        # The full SVD is exact and deterministic: reruns give byte-identical features.
        steps.append(PCA(n_components=components, svd_solver="full"))
    transform = make_pipeline(*steps).fit(train["X"])

    X_train, X_test = transform.transform(train["X"]), transform.transform(test["X"])
    os.makedirs(args.out_dir, exist_ok=True)
    np.savez(os.path.join(args.out_dir, "train.npz"), X=X_train, y=train["y"])
    np.savez(os.path.join(args.out_dir, "test.npz"), X=X_test, y=test["y"])
    print(f"featurize: {X_train.shape[1]} features per sample -> {args.out_dir}")


if __name__ == "__main__":
    main()
