#!/usr/bin/python3
"""Does a served version's BatchNorm statistics cost it accuracy?

Scores each given TorchScript version on the Fashion-MNIST test set as saved,
then after recomputing its BatchNorm running statistics (reset, then 60
train-mode batches of 128 without gradients) from (a) a class-balanced 5,000
image subset of the training set, what a full replay buffer holds at the end
of the stream, and (b) the whole training set. A large rise would mean the
learner's rounds leave statistics that do not match the weights (for example
after weight averaging). Usage:

  /usr/bin/python3 bench/acceptance/bn_recalibrate.py STATE_DIR/models/v000011.pt ...
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import user_models  # noqa: E402


def accuracy(model, x, y):
    with torch.no_grad():
        p = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return 100.0 * float((p.numpy() == y).mean())


def recalibrate(model, x, batches=60, batch_size=128, seed=0):
    rng = np.random.default_rng(seed)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.zero_()
        elif name.endswith("running_var"):
            b.fill_(1.0)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.from_numpy(x[rng.choice(len(x), batch_size, replace=False)]))
    model.eval()


def main(paths):
    torch.set_num_threads(1)
    xtr, ytr = user_models.load_fashion("train")
    xte, yte = user_models.load_fashion("test")
    rng = np.random.default_rng(1)
    balanced = np.concatenate([rng.choice(np.where(ytr == c)[0], 500, replace=False) for c in range(10)])
    for path in paths:
        model = torch.jit.load(path)
        model.eval()
        served = accuracy(model, xte, yte)
        recalibrate(model, xtr[balanced])
        on_balanced = accuracy(model, xte, yte)
        model = torch.jit.load(path)
        recalibrate(model, xtr)
        on_all = accuracy(model, xte, yte)
        print("%s: as served %.2f%%, recalibrated on a balanced 5,000 %.2f%%, on all training images %.2f%%"
              % (path, served, on_balanced, on_all))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
