#!/usr/bin/env python3
"""Plots the demo's test accuracy per version over time as a self-contained SVG.

usage: bench/plot_demo.py STATE_DIR_OR_SUMMARY_JSON [OUTPUT.svg]   (default docs/demo-accuracy.svg)

Input: <state>/demo-summary.json written by `distilld demo` (teacher_accuracy,
versions[{id, status, phase, acc_seen, acc_all}], inference_requests,
failed_requests, seconds). When <state>/registry.sqlite sits next to it, each
version's creation time (versions.created_us, opened read-only) gives the x
axis in seconds since the first version; otherwise the x axis is the version
order. The SVG is written by hand so that no plotting library is needed
(Debian's python3-matplotlib is not among the project's packages).
"""
import html
import json
import os
import sqlite3
import sys

WIDTH, HEIGHT = 760, 430
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 56, 62
SERIES = (("acc_all", "all 10 classes", "#1f77b4"), ("acc_seen", "classes seen so far", "#ff7f0e"))
STATUS_FILL = {"active": "#2ca02c", "retired": "#ffffff", "rejected": "#d62728", "candidate": "#bbbbbb"}


def load(path):
    summary_path = os.path.join(path, "demo-summary.json") if os.path.isdir(path) else path
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    created = {}
    registry = os.path.join(os.path.dirname(os.path.abspath(summary_path)), "registry.sqlite")
    if os.path.exists(registry):
        try:
            db = sqlite3.connect("file:%s?mode=ro" % registry, uri=True)
            created = {vid: us for vid, us in db.execute("SELECT id, created_us FROM versions")}
            db.close()
        except sqlite3.Error as e:  # a busy or older registry: fall back to version order
            print("plot_demo: registry not read (%s); x axis is the version order" % e, file=sys.stderr)
            created = {}
    return summary, created


def svg_plot(summary, created):
    versions = sorted(summary.get("versions", []), key=lambda v: v["id"])
    if not versions:
        raise SystemExit("plot_demo: the summary lists no versions")
    use_time = all(v["id"] in created for v in versions)
    if use_time:
        t0 = min(created[v["id"]] for v in versions)
        xs = [(created[v["id"]] - t0) / 1e6 for v in versions]
        x_label = "seconds since the first version was registered"
    else:
        xs = [float(i) for i in range(len(versions))]
        x_label = "version (in order of creation)"
    x_max = max(xs) if max(xs) > 0 else 1.0
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + pw * x / x_max if len(versions) > 1 else LEFT + pw / 2

    def py(acc):
        return TOP + ph * (1.0 - acc)

    out = []
    add = out.append
    add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
        'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">' % (WIDTH, HEIGHT, WIDTH, HEIGHT))
    add('<rect width="100%" height="100%" fill="#ffffff"/>')
    title = "distilld demo: test accuracy of each version (Fashion-MNIST, class-incremental)"
    add('<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>' % (LEFT, html.escape(title)))
    sub = "%d inference requests, %d failed; %.0f s in all" % (
        summary.get("inference_requests", 0), summary.get("failed_requests", 0), summary.get("seconds", 0))
    add('<text x="%d" y="40" fill="#555555">%s</text>' % (LEFT, html.escape(sub)))
    # Grid and y axis.
    for i in range(11):
        acc = i / 10
        y = py(acc)
        add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>' % (
            LEFT, y, LEFT + pw, y, "#999999" if i == 0 else "#e5e5e5"))
        add('<text x="%d" y="%.1f" text-anchor="end">%d%%</text>' % (LEFT - 6, y + 4, i * 10))
    add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999999"/>' % (LEFT, TOP, LEFT, TOP + ph))
    add('<text transform="translate(18,%d) rotate(-90)" text-anchor="middle">test accuracy</text>'
        % (TOP + ph // 2))
    # X ticks: one per version, labelled with the version and its phase.
    for v, x in zip(versions, xs):
        X = px(x)
        add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999999"/>' % (X, TOP + ph, X, TOP + ph + 5))
        add('<text x="%.1f" y="%d" text-anchor="middle">v%d</text>' % (X, TOP + ph + 18, v["id"]))
        add('<text x="%.1f" y="%d" text-anchor="middle" fill="#777777" font-size="10">%s</text>' % (
            X, TOP + ph + 30, ("%.0f s" % x) if use_time else ("phase %d" % v.get("phase", 0))))
    add('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (LEFT + pw // 2, HEIGHT - 12, html.escape(x_label)))
    # Teacher reference.
    teacher = summary.get("teacher_accuracy")
    if teacher is not None:
        y = py(teacher)
        add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#7f7f7f" stroke-dasharray="6,4"/>' % (
            LEFT, y, LEFT + pw, y))
    # Series.
    for key, _, color in SERIES:
        pts = " ".join("%.1f,%.1f" % (px(x), py(v[key])) for v, x in zip(versions, xs))
        add('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>' % (pts, color))
        for v, x in zip(versions, xs):
            add('<circle cx="%.1f" cy="%.1f" r="4.5" fill="%s" stroke="%s" stroke-width="2">'
                '<title>v%d (%s, phase %d): %s %.2f%%</title></circle>' % (
                    px(x), py(v[key]), STATUS_FILL.get(v["status"], "#ffffff"), color, v["id"], v["status"],
                    v.get("phase", 0), key, 100 * v[key]))
    # Legend.
    lx, ly = LEFT + pw + 16, TOP + 6
    for i, (_, label, color) in enumerate(SERIES):
        y = ly + 20 * i
        add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (lx, y, lx + 24, y, color))
        add('<text x="%d" y="%d">%s</text>' % (lx + 30, y + 4, html.escape(label)))
    y = ly + 40
    if teacher is not None:
        add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#7f7f7f" stroke-dasharray="6,4"/>' % (lx, y, lx + 24, y))
        add('<text x="%d" y="%d">teacher %.2f%%</text>' % (lx + 30, y + 4, 100 * teacher))
    y += 28
    for status in ("active", "retired", "rejected"):
        add('<circle cx="%d" cy="%d" r="4.5" fill="%s" stroke="#333333"/>' % (lx + 12, y, STATUS_FILL[status]))
        add('<text x="%d" y="%d">%s</text>' % (lx + 30, y + 4, status))
        y += 18
    y += 10
    add('<text x="%d" y="%d" font-size="11" fill="#555555">final (v%d):</text>' % (lx, y, versions[-1]["id"]))
    add('<text x="%d" y="%d" font-size="11" fill="#555555">all %.2f%%, seen %.2f%%</text>' % (
        lx, y + 15, 100 * versions[-1]["acc_all"], 100 * versions[-1]["acc_seen"]))
    add("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    here = os.path.dirname(os.path.abspath(__file__))
    output = argv[2] if len(argv) > 2 else os.path.join(here, "..", "docs", "demo-accuracy.svg")
    summary, created = load(argv[1])
    svg = svg_plot(summary, created)
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(svg)
    os.replace(tmp, output)
    print("plot_demo: wrote %s (%d versions)" % (os.path.normpath(output), len(summary["versions"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
