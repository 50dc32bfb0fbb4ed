"""Where produces spent their time on the nodes, between two scrapes of their /metrics.

usage: phases.py save PORTS FILE [DIR]   (PORTS: the nodes' admin ports, comma-separated)
       phases.py diff PORTS FILE [DIR]   (prints the means since `save`)

Reads the histograms `quipu_produce_phase_seconds{phase}` (queued, leader_log, commit: on the
partitions' leaders), `quipu_raft_append_round_trip_seconds` (leaders),
`quipu_raft_append_handling_seconds` (followers) and `quipu_fsync_duration_seconds`, summed over
the nodes, and prints each one's mean over the interval in ms (a build without one prints
nothing for it), then the share of each one's observations that took longer than 2.5 and than
5 ms (where a request's tail comes from), then the bucket bound each one's p99 lies within
(with `quipu_produce_duration_seconds`, a produce's whole time on its leader, beside them: the
request's p99 less this is the client's and the network's share). With DIR (the nodes' data
directory), also the requests its disk took per fsync the nodes made, from `/proc/diskstats`
(a flush counts there as a write of no sectors too, so a data write and a flush are 2.00
writes and 1.00 flushes; other programs writing to the disk meanwhile count as well).
Standard library only.
"""

import json
import os
import re
import sys
import urllib.request

NAMES = {
    "quipu_produce_duration_seconds": "produce",
    "quipu_produce_phase_seconds/queued": "queued",
    "quipu_produce_phase_seconds/leader_log": "leader log",
    "quipu_produce_phase_seconds/commit": "commit",
    "quipu_raft_append_round_trip_seconds": "append round trip",
    "quipu_raft_append_handling_seconds": "follower handling",
    "quipu_fsync_duration_seconds": "fsync",
}


TAILS = ("0.0025", "0.005")


def scrape(ports):
    """Sum, count and the cumulative count at every bucket bound of each histogram, over the
    nodes (`NAME@BOUND`; the labels other than `phase` summed)."""
    totals = {}
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        for line in text.decode().splitlines():
            b = re.match(r'(\w+)_bucket\{(.*)le="([^"]*)"\} (\S+)$', line)
            if b:
                phase = re.search(r'phase="([^"]*)"', b.group(2))
                name = b.group(1) + (f"/{phase.group(1)}" if phase else "")
                if name in NAMES:
                    key = f"{name}@{b.group(3)}"
                    totals[key] = totals.get(key, 0.0) + float(b.group(4))
                continue
            m = re.match(r"(\w+)_(sum|count)(?:\{(.*)\})? (\S+)$", line)
            if not m:
                continue
            phase = re.search(r'phase="([^"]*)"', m.group(3) or "")
            name = m.group(1) + (f"/{phase.group(1)}" if phase else "")
            if name in NAMES:
                pair = totals.setdefault(name, [0.0, 0.0])
                pair[0 if m.group(2) == "sum" else 1] += float(m.group(4))
    return totals


def disk(directory):
    """Writes and flushes completed so far by the disk holding `directory`."""
    device = os.stat(directory).st_dev
    wanted = (os.major(device), os.minor(device))
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if (int(fields[0]), int(fields[1])) == wanted:
                # Writes completed (field 8); flushes completed (field 19, Linux 5.5 and later).
                flushes = float(fields[18]) if len(fields) > 18 else 0.0
                return {"disk/writes": float(fields[7]), "disk/flushes": flushes}
    return {}


if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("save", "diff"):
    sys.exit("usage: phases.py save|diff PORTS FILE [DIR]")
command, ports, path = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
directory = sys.argv[4] if len(sys.argv) == 5 else None
if command == "save":
    with open(path, "w") as f:
        json.dump({**scrape(ports), **(disk(directory) if directory else {})}, f)
else:
    with open(path) as f:
        before = json.load(f)
    after = {**scrape(ports), **(disk(directory) if directory else {})}
    parts = []
    for name, label in NAMES.items():
        if name not in after:
            continue
        seconds = after[name][0] - before.get(name, [0.0, 0.0])[0]
        count = after[name][1] - before.get(name, [0.0, 0.0])[1]
        if count > 0:
            parts.append(f"{label} {1000 * seconds / count:.2f}")
    if parts:
        print("  on the nodes, means in ms: " + ", ".join(parts))
    tails = []
    for name, label in NAMES.items():
        if name not in after:
            continue
        count = after[name][1] - before.get(name, [0.0, 0.0])[1]
        if count <= 0:
            continue
        over = []
        for le in TAILS:
            key = f"{name}@{le}"
            within = after.get(key, 0.0) - before.get(key, 0.0)
            over.append(f"{100 * (count - within) / count:.1f}%")
        tails.append(f"{label} {' / '.join(over)}")
    if tails:
        print("  longer than 2.5 / 5 ms: " + ", ".join(tails))
    p99s = []
    for name, label in NAMES.items():
        count = after.get(name, [0.0, 0.0])[1] - before.get(name, [0.0, 0.0])[1]
        if count <= 0:
            continue
        # Cumulative counts by bucket bound, smallest first (+Inf left out).
        cumulative = sorted(
            (float(key.split("@")[1]), after[key] - before.get(key, 0.0))
            for key in after
            if key.startswith(name + "@") and not key.endswith("@+Inf")
        )
        within = next((bound for bound, n in cumulative if n >= 0.99 * count), None)
        p99s.append(f"{label} " + (f"{1000 * within:g}" if within is not None else "beyond"))
    if p99s:
        print("  p99 within, in ms (bucket bounds): " + ", ".join(p99s))
    fsync = "quipu_fsync_duration_seconds"
    syncs = after.get(fsync, [0.0, 0.0])[1] - before.get(fsync, [0.0, 0.0])[1]
    if "disk/writes" in after and "disk/writes" in before and syncs > 0:
        writes = after["disk/writes"] - before["disk/writes"]
        flushes = after["disk/flushes"] - before["disk/flushes"]
        print(
            f"  the disk, per fsync: {writes / syncs:.2f} writes, {flushes / syncs:.2f} flushes "
            f"({int(syncs)} fsyncs)"
        )

