"""Turns the runs of benches/produce/compare.sh into a Markdown table and an SVG plot.

usage: report.py RUNS.jsonl RESULTS.md RESULTS.svg

Each run is one `quipu bench produce --json` object with `label`, `nodes`, `partitions` and
`offered` (records/s asked for; 0 for as fast as it goes) added. The table puts each run beside
the storage engine's figure of the same run, and what the disk did during each run (compare.sh's
`disk`, when it has one); the plot draws, per setup, the p50 and p99 latency
against the throughput reached (one point per offered rate, the last one the maximum).
Runs with `ladder` true (compare.sh's LADDER) also make a table of held rates per topic size, with
each size's highest rate taken whole (at least 97% of it) with a p99 under 50 ms; a rate run
several times (LADDER_RUNS) counts as held when more than half of its runs held it. Standard
library only.
"""

import json
import math
import sys

runs_path, table_path, svg_path = sys.argv[1:4]
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
engine = next((r["storage_baseline_mib_per_second"] for r in runs
               if r.get("storage_baseline_mib_per_second")), None)
setups = []
for run in runs:
    if run["label"] != "storage engine alone" and run["label"] not in setups:
        setups.append(run["label"])

lines = [
    "| setup | offered (records/s) | records/s | MiB/s | vs engine | p50 ms | p99 ms | p99.9 ms | max ms "
    "| disk: MiB/s written, writes/s, flushes/s |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def disk(run):
    """What the disk under the data directory did during the run (compare.sh's `disk`)."""
    d = run.get("disk")
    if not d:
        return ""
    return (f"{d['write_mib_per_second']:.0f}, {d['writes_per_second']:,.0f}, "
            f"{d['flushes_per_second']:,.0f}")


if engine:
    base = next(r for r in runs if r.get("storage_baseline_mib_per_second"))
    lines.append(f"| storage engine alone (64 KiB batches, one fdatasync each) | | "
                 f"{engine * 1024:,.0f} | {engine:.1f} | 100% | | | | | {disk(base)} |")
for label in setups:
    of_setup = sorted((r for r in runs if r["label"] == label),
                      key=lambda r: r["offered"] or math.inf)
    for r in of_setup:
        if r.get("ladder"):
            continue  # in the held-rates table below (and in the plot)
        offered = f"{r['offered']:,}" if r["offered"] else "max"
        ratio = f"{100 * r['mib_per_second'] / engine:.0f}%" if engine else ""
        lat = r["latency_ms"]
        lines.append(
            f"| {label} | {offered} | {r['records_per_second']:,.0f} | "
            f"{r['mib_per_second']:.1f} | {ratio} | {lat['p50']:.2f} | {lat['p99']:.2f} | "
            f"{lat['p99_9']:.2f} | {lat['max']:.2f}"
            f"{' (%d failed)' % r['failed'] if r.get('failed') else ''} | {disk(r)} |")
# Held rates (LADDER, RF3_LADDER): per offered rate, what each setup took and its p99 in each run;
# then each setup's highest rate taken whole (at least 97% of it) with a p99 under 50 ms by more than
# half of its runs.
held = [r for r in runs if r.get("ladder")]
if held:
    # A setup: (nodes, partitions); RF 1 on one node, RF 3 on three (compare.sh's RF3_LADDER).
    def setup(r):
        return (r.get("nodes", 1), r["partitions"])

    sizes = sorted({setup(r) for r in held})
    rates = sorted({r["offered"] for r in held})

    def named(size):
        nodes, n = size
        return f"{n} partitions" if nodes == 1 else f"RF 3 on {nodes} nodes, {n} partitions"

    lines += ["", "Held rates, each on a fresh node or cluster (records/s taken; p50 / p99 ms):",
              "", "| offered | " + " | ".join(named(size) for size in sizes) + " |",
              "|---|" + "---|" * len(sizes)]

    def kept(r):
        return (r["records_per_second"] >= 0.97 * r["offered"]
                and r["latency_ms"]["p99"] < 50 and not r.get("failed"))

    def of(size, rate):
        return [r for r in held if setup(r) == size and r["offered"] == rate]

    def cell(r):
        return (f"{r['records_per_second']:,.0f}; {r['latency_ms']['p50']:.2f} / "
                f"{r['latency_ms']['p99']:.2f}{'' if kept(r) else ' (missed)'}"
                f"{' (%d failed)' % r['failed'] if r.get('failed') else ''}")

    for rate in rates:
        cells = []
        for size in sizes:
            each = of(size, rate)
            text = " · ".join(cell(r) for r in each)
            if len(each) > 1:
                text = f"held {sum(map(kept, each))} of {len(each)}: {text}"
            cells.append(text)
        lines.append(f"| {rate:,} | " + " | ".join(cells) + " |")
    best = []
    for size in sizes:
        met = [rate for rate in rates
               if of(size, rate) and 2 * sum(map(kept, of(size, rate))) > len(of(size, rate))]
        best.append(f"{max(met):,}" if met else "none")
    several = any(len(of(size, rate)) > 1 for size in sizes for rate in rates)
    lines.append("| highest held with p99 < 50 ms"
                 + (" (by more than half of its runs)" if several else "")
                 + " | " + " | ".join(best) + " |")
with open(table_path, "w") as f:
    f.write("\n".join(lines) + "\n")

# The plot: x = records/s reached, y = latency in ms on a log scale.
width, height, left, right, top, bottom = 760, 440, 70, 200, 30, 50
points = [(r["records_per_second"], r["latency_ms"][q])
          for r in runs if r["label"] in setups for q in ("p50", "p99")]
x_max = max([p[0] for p in points] + [engine * 1024 if engine else 0]) * 1.05 or 1
y_values = [max(p[1], 0.01) for p in points] or [1]
y_lo = 10 ** math.floor(math.log10(min(y_values)))
y_hi = 10 ** math.ceil(math.log10(max(y_values)))
if y_hi <= y_lo:
    y_hi = y_lo * 10


def sx(x):
    return left + (width - left - right) * x / x_max


def sy(y):
    span = math.log10(y_hi) - math.log10(y_lo)
    return top + (height - top - bottom) * (1 - (math.log10(max(y, y_lo)) - math.log10(y_lo)) / span)


colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       f'<text x="{left}" y="18">Produce latency against throughput (1 KiB records, '
       f'acks=all, fsync=always)</text>']
# Axes, grid and ticks.
svg.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
           f'y2="{height - bottom}" stroke="black"/>')
svg.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>')
for i in range(6):
    x = x_max * i / 5
    svg.append(f'<text x="{sx(x):.0f}" y="{height - bottom + 16}" text-anchor="middle">'
               f'{x / 1000:.0f}k</text>')
decade = y_lo
while decade <= y_hi:
    svg.append(f'<line x1="{left}" y1="{sy(decade):.1f}" x2="{width - right}" '
               f'y2="{sy(decade):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left - 6}" y="{sy(decade) + 4:.1f}" text-anchor="end">'
               f'{decade:g}</text>')
    decade *= 10
svg.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" '
           f'text-anchor="middle">records/s reached</text>')
svg.append(f'<text x="16" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
           f'transform="rotate(-90 16 {(top + height - bottom) / 2:.0f})">latency, ms (log)</text>')
if engine:
    x = sx(engine * 1024)
    svg.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" '
               f'stroke="gray" stroke-dasharray="2,3"/>')
    svg.append(f'<text x="{x + 4:.1f}" y="{top + 12}" fill="gray">engine alone</text>')
for n, label in enumerate(setups):
    color = colors[n % len(colors)]
    of_setup = sorted((r for r in runs if r["label"] == label),
                      key=lambda r: r["records_per_second"])
    for q, dash in (("p50", ""), ("p99", ' stroke-dasharray="5,3"')):
        path = " ".join(f"{sx(r['records_per_second']):.1f},{sy(r['latency_ms'][q]):.1f}"
                        for r in of_setup)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        for r in of_setup:
            svg.append(f'<circle cx="{sx(r["records_per_second"]):.1f}" '
                       f'cy="{sy(r["latency_ms"][q]):.1f}" r="3" fill="{color}"/>')
    y = top + 44 + 34 * n
    svg.append(f'<text x="{width - right + 10}" y="{y}" fill="{color}">{label}</text>')
    svg.append(f'<text x="{width - right + 10}" y="{y + 14}" fill="{color}">'
               f'solid p50, dashed p99</text>')
svg.append("</svg>")
with open(svg_path, "w") as f:
    f.write("\n".join(svg) + "\n")
