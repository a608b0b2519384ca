"""Fit a logistic regression on DATA_DIR/train.npz; write the pickled model and its train accuracy.

Usage: python src/train.py DATA_DIR MODEL_PKL METRICS_JSON   (reads [train] C and max_iter)
"""

import json
import os
import pickle
import sys
import tomllib

import numpy as np
from sklearn.linear_model import LogisticRegression

data_dir, model_out, metrics_out = sys.argv[1:4]
with open("params.toml", "rb") as f:
    params = tomllib.load(f)["train"]

with np.load(os.path.join(data_dir, "train.npz")) as train:
    X, y = train["X"], train["y"]
model = LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"])).fit(X, y)
accuracy = round(float(model.score(X, y)), 6)

for path in (model_out, metrics_out):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
with open(model_out, "wb") as f:
    pickle.dump(model, f, protocol=5)
with open(metrics_out, "w") as f:
    json.dump({"train_accuracy": accuracy}, f, indent=2)
    f.write("\n")
print(f"train accuracy {accuracy:.4f}")
