#!/usr/bin/python3
"""A user's own models for the distilld acceptance run, in plain PyTorch.

Builds, trains and saves (torch.jit.save(torch.jit.script(model))):
  teacher.pt      Teacher: MLP 784-1200-1200-10, all 60,000 training images
  student_mlp.pt  MLP: 784-64-10, classes 0 and 1 only
  student_cnn.pt  CNN with BatchNorm, classes 0 and 1 only (saved in eval mode)

Every module takes float [N,1,28,28] in [0,1] and returns logits [N,10].

  /usr/bin/python3 bench/acceptance/user_models.py --out DIR [--force] [--threads 2]
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"

SEED = 1234
TEACHER_EPOCHS = 6
STUDENT_EPOCHS = 2
STUDENT_CLASSES = (0, 1)


# ---------------------------------------------------------------- data


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


_CACHE = {}


def load_fashion(split):
    """(images float32 [N,1,28,28] in [0,1], labels int64 [N]) for 'train' or 'test'."""
    if split in _CACHE:
        return _CACHE[split]
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(os.path.join(DATA_DIR, prefix + "-images-idx3-ubyte.gz"))
    y = _read_idx(os.path.join(DATA_DIR, prefix + "-labels-idx1-ubyte.gz"))
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    _CACHE[split] = (x, y)
    return x, y


# ---------------------------------------------------------------- models


class Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 1200)
        self.fc2 = nn.Linear(1200, 1200)
        self.fc3 = nn.Linear(1200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


# ---------------------------------------------------------------- training


def accuracy(model, x, y, batch=1000):
    """Top-1 accuracy (fraction) of `model` on numpy x, y; per-class too."""
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy())
    p = np.concatenate(preds)
    per_class = {int(c): float((p[y == c] == c).mean()) for c in range(10) if (y == c).any()}
    return float((p == y).mean()), per_class


def train_supervised(model, x, y, epochs, seed, lr=1e-3, batch=128, cosine=False, log=None):
    """Adam on cross-entropy; with cosine=True the learning rate follows a
    cosine from lr to 0 over the epochs (stepped per epoch)."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    n = len(x)
    for ep in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(n))
        total = 0.0
        t0 = time.time()
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        if sched is not None:
            sched.step()
        if log:
            log("  epoch %d/%d: loss %.4f (%.1f s)" % (ep + 1, epochs, total / n, time.time() - t0))
    model.eval()
    return model


def _save(model, path):
    model.eval()
    scripted = torch.jit.script(model)
    tmp = path + ".tmp"
    torch.jit.save(scripted, tmp)
    os.replace(tmp, path)


def build_teacher(path, log=print):
    xtr, ytr = load_fashion("train")
    torch.manual_seed(SEED)
    model = Teacher()
    log("training teacher (784-1200-1200-10) on 60,000 images, %d epochs of Adam (cosine lr)" % TEACHER_EPOCHS)
    train_supervised(model, xtr, ytr, TEACHER_EPOCHS, SEED, lr=1e-3, batch=128, cosine=True, log=log)
    _save(model, path)


def build_student(kind, path, log=print):
    xtr, ytr = load_fashion("train")
    mask = np.isin(ytr, STUDENT_CLASSES)
    x, y = xtr[mask], ytr[mask]
    torch.manual_seed(SEED + (1 if kind == "mlp" else 2))
    model = MLP() if kind == "mlp" else CNN()
    log("training %s student on classes %s (%d images), %d epochs"
        % (kind, list(STUDENT_CLASSES), len(x), STUDENT_EPOCHS))
    train_supervised(model, x, y, STUDENT_EPOCHS, SEED + 10, lr=1e-3, batch=64, log=log)
    _save(model, path)  # eval mode: BatchNorm uses its running statistics


MODEL_FILES = {"teacher": "teacher.pt", "mlp": "student_mlp.pt", "cnn": "student_cnn.pt"}


def ensure_models(out_dir, force=False, kinds=("teacher", "mlp", "cnn"), log=print):
    """Builds the missing model files in out_dir; returns {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for kind in kinds:
        path = os.path.abspath(os.path.join(out_dir, MODEL_FILES[kind]))
        paths[kind] = path
        if os.path.exists(path) and not force:
            log("%s: %s exists, kept" % (kind, path))
            continue
        t0 = time.time()
        if kind == "teacher":
            build_teacher(path, log=log)
        else:
            build_student(kind, path, log=log)
        log("%s: wrote %s (%.1f s)" % (kind, path, time.time() - t0))
    return paths


def test_accuracies(paths, log=print):
    xte, yte = load_fashion("test")
    result = {}
    for kind, path in paths.items():
        m = torch.jit.load(path)
        acc, per_class = accuracy(m, xte, yte)
        two = float(np.mean([(per_class[c]) for c in STUDENT_CLASSES]))
        result[kind] = {"test_accuracy": acc, "per_class": per_class}
        log("%-8s test accuracy %.2f%%   (classes 0,1: %.2f%%)" % (kind, 100 * acc, 100 * two))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for teacher.pt, student_mlp.pt, student_cnn.pt")
    ap.add_argument("--force", action="store_true", help="rebuild files that already exist")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = ensure_models(args.out, force=args.force)
    test_accuracies(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
