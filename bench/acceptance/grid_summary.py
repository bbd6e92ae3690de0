#!/usr/bin/python3
"""Means per grid cell of defaults_grid.sh's result files: final accuracy
(min..max), the gap to the two offline rows, the slowest phase's time to
adapt and the optimizer steps. Usage: grid_summary.py OUT_DIR/*.json"""
import collections
import json
import statistics
import sys

cells = collections.defaultdict(list)
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1].rsplit("_", 1)[0]
    m = json.load(open(path))["metrics"]
    cells[name].append(m)
print("| capacity / ratio / epochs | runs | final accuracy, mean (min..max) | gap to offline, same steps | gap to offline, 5 epochs | slowest phase to adapt | optimizer steps |")
print("|---|---|---|---|---|---|---|")
for name in sorted(cells, key=lambda n: [float(x[1:]) for x in n.split("_")]):
    ms = cells[name]
    fin = [100 * m["final_accuracy"] for m in ms]
    cap, ratio, ep = (x[1:] for x in name.split("_"))
    adapt = max(max(p["time_to_adapt_s"] or float("inf") for p in m["phases"]) for m in ms)
    print("| %s / %s / %s | %d | %.2f%% (%.2f..%.2f) | %+.2f | %+.2f | %.2f s | %d |" % (
        cap, ratio, ep, len(ms), statistics.mean(fin), min(fin), max(fin),
        statistics.mean(m["gap_points"]["offline_steps"] for m in ms),
        statistics.mean(m["gap_points"]["offline_5ep"] for m in ms), adapt,
        statistics.mean(m["total_steps"] for m in ms)))
