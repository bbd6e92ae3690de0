#!/usr/bin/env python3
"""Summarises class_incremental_recycle.sh output: per-configuration means and
the paired gap (points) of each incremental row to the offline row with the
same learning rate, with a 95% t interval over seeds.

Usage: class_incremental_gaps.py recycle_seed_*.txt
"""
import math
import statistics
import sys

# Two-sided 95% t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse(paths):
    rows = {}  # (config, row name) -> {seed: (final, steps)}
    for path in paths:
        with open(path) as f:
            for line in f:
                label, _, table = line.partition(" | ")
                fields = dict(kv.split("=", 1) for kv in label.split() if "=" in kv)
                cells = [c.strip() for c in ("| " + table).split("|")]
                config = " ".join(k + "=" + v for k, v in fields.items() if k != "seed")
                rows.setdefault((config, cells[1]), {})[int(fields["seed"])] = (float(cells[4]), int(cells[6]))
    return rows


def main():
    rows = parse(sys.argv[1:])
    for (config, name), by_seed in sorted(rows.items()):
        finals = [by_seed[s][0] for s in sorted(by_seed)]
        steps = by_seed[min(by_seed)][1]
        print(f"{config:28s} {name:15s} mean {statistics.mean(finals):.4f} steps {steps:5d} | "
              + " ".join(f"{x:.4f}" for x in finals))
    print()
    offline = {c.split()[0]: by_seed for (c, n), by_seed in rows.items() if n == "offline"}
    for (config, name), by_seed in sorted(rows.items()):
        if name == "offline":
            continue
        lr = config.split()[0]
        for ref_lr, ref in sorted(offline.items()):
            if ref_lr != lr and ref_lr != max(offline):
                continue  # the same learning rate, and the best-scoring one
            seeds = sorted(set(by_seed) & set(ref))
            gaps = [100 * (ref[s][0] - by_seed[s][0]) for s in seeds]
            mean = statistics.mean(gaps)
            half = T95.get(len(gaps) - 1, 1.96) * statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else 0
            within = sum(g <= 1.0 for g in gaps)
            print(f"{config} {name} vs offline6 {ref_lr}: gap {mean:.2f} points (95% {mean - half:.2f}..{mean + half:.2f}), "
                  f"{within}/{len(gaps)} seeds within 1; by seed " + " ".join(f"{g:.2f}" for g in gaps))


if __name__ == "__main__":
    main()
