#!/usr/bin/env python3
"""Test accuracy per Fashion-MNIST class of saved TorchScript students.

usage: per_class_accuracy.py MODEL.pt [MODEL.pt ...] [--data-dir DIR]

Reads the gzipped IDX test files (Debian's dataset-fashion-mnist by default),
scales pixels to [0, 1] as learner/idx_dataset.cc does, and prints overall and
per-class accuracy for each model. Needs python3-torch (analysis only; the
daemon never runs Python).
"""
import argparse
import gzip

import numpy as np
import torch


def read_idx(path):
    data = gzip.open(path).read()
    if data[2] == 8 and data[3] == 3:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    x = torch.tensor(read_idx(f"{a.data_dir}/t10k-images-idx3-ubyte.gz").copy()).float() / 255
    y = torch.tensor(read_idx(f"{a.data_dir}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    print("model | all | " + " | ".join(f"class {c}" for c in range(10)))
    for path in a.models:
        m = torch.jit.load(path).eval()
        with torch.no_grad():
            pred = m(x).argmax(1)
        per_class = [(pred[y == c] == c).float().mean().item() for c in range(10)]
        print(f"{path} | {(pred == y).float().mean().item():.4f} | " + " | ".join(f"{v:.3f}" for v in per_class))


if __name__ == "__main__":
    main()
