"""Score MODEL_PKL on DATA_DIR/test.npz and write the test accuracy to METRICS_JSON.

Usage: python src/evaluate.py MODEL_PKL DATA_DIR METRICS_JSON
"""

import json
import os
import pickle
import sys

import numpy as np

model_in, data_dir, metrics_out = sys.argv[1:4]
with open(model_in, "rb") as f:
    model = pickle.load(f)
with np.load(os.path.join(data_dir, "test.npz")) as test:
    accuracy = round(float(model.score(test["X"], test["y"])), 6)

os.makedirs(os.path.dirname(metrics_out) or ".", exist_ok=True)
with open(metrics_out, "w") as f:
    json.dump({"test_accuracy": accuracy}, f, indent=2)
    f.write("\n")
print(f"test accuracy {accuracy:.4f}")
