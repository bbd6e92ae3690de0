"""Batch-1 and batch-64 latency of a CNN student in three TorchScript forms.

Why pruning a small CNN barely speeds up batch 1 when it is served through
optimize_for_inference: compares scripted, frozen, and frozen +
optimize_for_inference modules for the default CNN student (8/16 channels,
16 hidden) and its pruned shape (4/9 channels, 9 hidden), 1 intra-op thread,
best of 5 timing rounds. Needs Debian's python3-torch (same LibTorch 1.13).

    /usr/bin/python3 bench/compress/freeze_vs_optimize.py
"""
import time

import torch


class Cnn(torch.nn.Module):
    def __init__(self, c1, c2, hidden):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, c1, 3, padding=1)
        self.c2 = torch.nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = torch.nn.Linear(c2 * 7 * 7, hidden)
        self.out = torch.nn.Linear(hidden, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.out(torch.relu(self.fc(x.flatten(1))))


def micros_per_call(module, batch, calls):
    x = torch.rand(batch, 1, 28, 28)
    for _ in range(30):
        module(x)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            module(x)
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main():
    torch.set_num_threads(1)
    print("| student | form | batch-1 us | batch-64 us |")
    print("|---|---|---:|---:|")
    for name, shape in {"float (8/16, 16)": (8, 16, 16), "pruned (4/9, 9)": (4, 9, 9)}.items():
        model = Cnn(*shape).eval()
        forms = {
            "scripted": torch.jit.script(model),
            "frozen": torch.jit.freeze(torch.jit.script(model)),
            "frozen + optimize_for_inference": torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.script(model))),
        }
        for form, module in forms.items():
            print(f"| {name} | {form} | {micros_per_call(module, 1, 300):.1f} | "
                  f"{micros_per_call(module, 64, 30):.0f} |")


if __name__ == "__main__":
    main()
