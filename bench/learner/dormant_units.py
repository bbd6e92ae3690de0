#!/usr/bin/env python3
"""Counts dormant hidden units of built-in MLP students on the Fashion-MNIST
test images: units active (> 0) on under 0.1% of the images, and on under 2%.

Usage: dormant_units.py VERSION.pt [VERSION.pt ...]   (needs python3-torch)
"""
import gzip
import sys

import numpy as np
import torch

IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def main():
    with gzip.open(IMAGES) as f:
        raw = f.read()
    x = torch.tensor(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0)
    for path in sys.argv[1:]:
        params = dict(torch.jit.load(path).named_parameters())
        h = x
        layer = 0
        while f"fc{layer}_weight" in params:
            h = torch.relu(h @ params[f"fc{layer}_weight"].T + params[f"fc{layer}_bias"])
            active = (h > 0).float().mean(0)
            print(f"{path} fc{layer}: {h.shape[1]} units, dormant (<0.1% active) {int((active < 0.001).sum())}, "
                  f"rarely active (<2%) {int((active < 0.02).sum())}")
            layer += 1


if __name__ == "__main__":
    main()
