"""Split scikit-learn's bundled iris dataset into OUT_DIR/train.npz and OUT_DIR/test.npz.

Usage: python src/prepare.py OUT_DIR   (reads [prepare] seed and test_size from params.toml)
"""

import os
import sys
import tomllib

import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

out_dir = sys.argv[1]
with open("params.toml", "rb") as f:
    params = tomllib.load(f)["prepare"]

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=params["test_size"], random_state=params["seed"], stratify=y
)
os.makedirs(out_dir, exist_ok=True)
# np.savez writes the same bytes for the same arrays, so mlmake can skip unchanged downstream steps.
np.savez(os.path.join(out_dir, "train.npz"), X=X_train, y=y_train)
np.savez(os.path.join(out_dir, "test.npz"), X=X_test, y=y_test)
print(f"{len(y_train)} train / {len(y_test)} test samples")
