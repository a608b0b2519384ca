"""Split scikit-learn's bundled digits dataset into train and test sets.

Usage: python src/prepare.py OUT_DIR   (reads [prepare] seed, test_size from params.toml)
Writes OUT_DIR/train.npz and OUT_DIR/test.npz, each holding arrays X and y.
"""

from __future__ import annotations

import argparse
import os
import tomllib

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.toml")
    args = parser.parse_args()

    with open(args.params, "rb") as f:
        params = tomllib.load(f)["prepare"]

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=params["test_size"], random_state=params["seed"], stratify=y
    )
    # np.savez stamps zip members with a fixed date, so equal arrays give equal bytes:
    # a rerun with unchanged params lets mlmake cut off everything downstream.
    os.makedirs(args.out_dir, exist_ok=True)
    np.savez(os.path.join(args.out_dir, "train.npz"), X=X_train, y=y_train)
    np.savez(os.path.join(args.out_dir, "test.npz"), X=X_test, y=y_test)
    print(f"prepare: {len(y_train)} train / {len(y_test)} test samples -> {args.out_dir}")


if __name__ == "__main__":
    main()
