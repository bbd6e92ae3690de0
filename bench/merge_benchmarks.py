#!/usr/bin/env python3
"""Rebuilds docs/benchmarks.md from its hand-written header and the per-component fragments.

usage: bench/merge_benchmarks.py [--logs DIR] [--docs DIR]

docs/benchmarks.md has two parts separated by the MARKER line below: the header
(title, summary table against the targets, "not measured yet") is kept as it is;
everything after the marker is replaced by docs/benchmarks-{storage,learner,
serving,learning,compress,acceptance,restructuring,reliability,protocol}.md in that
order. With --logs, the raw output of the last
bench/run_all.sh run (every *.log in DIR, plus DIR/machine.txt) is appended as
an appendix, so the figures behind a fragment can be checked.

The summary's figures are written by hand from the fragments. As a guard, every
number in the summary table's "measured" column must occur verbatim in some
fragment; the script prints each one that does not (a stale summary) and exits 1.
"""
import argparse
import os
import re
import sys

MARKER = "<!-- generated below by bench/merge_benchmarks.py from docs/benchmarks-*.md: edit the fragments, not this part -->"
FRAGMENTS = ("storage", "learner", "serving", "learning", "compress", "acceptance", "restructuring", "reliability",
             "protocol")


def summary_numbers(header):
    """Numbers in the 'measured' column of the first table after '## Summary'."""
    lines = header.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("## Summary"))
    except StopIteration:
        return []
    col, numbers = None, []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if col is not None and numbers:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if col is None:
            col = next((i for i, c in enumerate(cells) if c.lower().startswith("measured")), None)
            continue
        if col >= len(cells) or set(cells[0]) <= set("-: "):
            continue
        numbers += re.findall(r"\d[\d,]*(?:\.\d+)?", cells[col])
    return numbers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--docs", default=os.path.normpath(os.path.join(here, "..", "docs")))
    ap.add_argument("--logs", help="directory with the raw *.log files of a bench/run_all.sh run")
    args = ap.parse_args()

    target = os.path.join(args.docs, "benchmarks.md")
    with open(target, encoding="utf-8") as f:
        text = f.read()
    if MARKER not in text:
        sys.exit("merge_benchmarks: %s has no marker line; the header must end with:\n%s" % (target, MARKER))
    header = text.split(MARKER, 1)[0].rstrip() + "\n\n" + MARKER + "\n"

    parts, fragment_text = [], ""
    for name in FRAGMENTS:
        path = os.path.join(args.docs, "benchmarks-%s.md" % name)
        if not os.path.exists(path):
            parts.append("## %s\n\nNo results yet (docs/benchmarks-%s.md is missing).\n" % (name.capitalize(), name))
            continue
        with open(path, encoding="utf-8") as f:
            body = f.read().strip() + "\n"
        fragment_text += body
        parts.append("<!-- from docs/benchmarks-%s.md -->\n%s" % (name, body))

    appendix = ""
    if args.logs:
        logs = sorted(n for n in os.listdir(args.logs) if n.endswith(".log"))
        appendix = "\n## Appendix: raw output of the last `bench/run_all.sh` run\n\n"
        machine = os.path.join(args.logs, "machine.txt")
        if os.path.exists(machine):
            with open(machine, encoding="utf-8") as f:
                appendix += "```\n%s```\n\n" % f.read()
        for name in logs:
            with open(os.path.join(args.logs, name), encoding="utf-8", errors="replace", newline="") as f:
                body = f.read()
            # Progress bars redraw with \r; keep the last state of each line.
            body = "\n".join(l.rsplit("\r", 1)[-1] for l in body.replace("\r\n", "\n").split("\n"))
            appendix += "### %s\n\n```\n%s\n```\n\n" % (name, body.strip())

    out = header + "\n" + "\n".join(parts) + appendix
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(out)
    os.replace(tmp, target)
    print("merge_benchmarks: wrote %s (%d fragments%s)" % (
        target, len(FRAGMENTS), ", with raw logs" if args.logs else ""))

    stale = [n for n in summary_numbers(header) if n not in fragment_text]
    if stale:
        print("merge_benchmarks: the summary table quotes figures no fragment contains (update the summary "
              "in docs/benchmarks.md): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
