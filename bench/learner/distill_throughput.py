"""Python twin of bench_distill_throughput's C++ loop (same model file, same loss).

usage: distill_throughput.py MODEL_PT THREADS STEPS WARMUP
Prints "jit <samples/s>" (the same TorchScript module, torch.jit.load) and
"eager <samples/s>" (an equivalent nn.Module MLP 784-64-10), each followed by
the same rate per second of process CPU time ("jit_cpu", "eager_cpu"), which a
loaded machine disturbs much less than wall time.
"""
import sys
import time

import torch
import torch.nn.functional as F

model_path = sys.argv[1]
threads, steps, warmup = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
B, ALPHA, T = 128, 0.5, 4.0
x = torch.rand(B, 1, 28, 28)
teacher = torch.randn(B, 10) * 3
labels = torch.randint(0, 10, (B,))


def kd_step(model, opt):
    # set_to_none like the C++ step (and PyTorch 2.x's default): no zeroing pass.
    opt.zero_grad(set_to_none=True)
    s = model(x)
    mask = labels.ge(0).float()
    ce = F.cross_entropy(s, labels.clamp(min=0), reduction="none") * mask
    log_ps = F.log_softmax(s / T, 1)
    log_pt = F.log_softmax(teacher / T, 1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1) * (T * T)
    loss = (ALPHA * ce + (mask * (1 - ALPHA) + (1 - mask)) * kl).mean()
    # The C++ step reads these scalars too (loss, CE, KD).
    _ = (loss.item(), ce.sum().item(), kl.mean().item())
    loss.backward()
    opt.step()


def run(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(warmup):
        kd_step(model, opt)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        kd_step(model, opt)
    return steps * B / (time.perf_counter() - t0), steps * B / (time.process_time() - c0)


jit = torch.jit.load(model_path)
jit.train()
print("jit %.1f\njit_cpu %.1f" % run(jit))
eager = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
print("eager %.1f\neager_cpu %.1f" % run(eager))
