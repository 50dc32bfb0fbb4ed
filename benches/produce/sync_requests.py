"""What one `fdatasync` of an append sends to the disk (issue 16: a sync's cost per entry).

Appends BLOCK bytes to each of FILES files in turn and `fdatasync`s each append, then prints,
per sync, the device's writes, KiB written and flushes, from `/proc/diskstats` of the device
holding DIR. Three kinds of space are compared, each in new files:
- `zeros`: written zeros, synced before the run (no extent conversion, no size change);
- `fallocate`: `posix_fallocate`d space, each file's in one call (unwritten extents, few
  enough for ext4 to keep them in the inode);
- `steps`: `posix_fallocate`d space in steps taken by the files in turn, as a node's busy logs
  take theirs (Quipu's segments grow by steps of up to `log.preallocate_bytes`): 1 MiB, or less
  where a file would take fewer than 16 (few appends per file), so that each file's space lies in
  many extents, which ext4 keeps in a tree block of their own;
- `extend`: nothing ahead, each append grows the file.
After each kind it prints `filefrag`'s count for the first file (where e2fsprogs is installed):
the ranges the kernel's FIEMAP reports, taken after the appends, not the extent records ext4
stores (adjacent ones may be reported as one), so a hint of the layout rather than its measure.
With PAUSE_MS, each append first waits that long, so a file's modification time moves on
between its syncs even with one file (a clock tick is 1–10 ms).

A flush request shows in `/proc/diskstats` both as a flush and as a write of no sectors: a sync
that sends one data write and a flush shows as 2.00 writes and 1.00 flushes.
Other programs writing to the same device during the run count too: run it on a quiet machine.
Standard library only; Linux only.

usage: python3 benches/produce/sync_requests.py DIR [FILES] [APPENDS] [BLOCK] [PAUSE_MS]
       (DIR on the data disk, removed after; defaults 480 2000 65536 0)
"""

import os
import shutil
import subprocess
import sys
import time

directory = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 480
appends = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
block_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
pause = (float(sys.argv[5]) if len(sys.argv) > 5 else 0.0) / 1000


def device_of(path):
    """The kernel's name of the block device holding `path` (as /proc/diskstats spells it)."""
    st = os.stat(path)
    uevent = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/uevent"
    for line in open(uevent):
        key, _, value = line.strip().partition("=")
        if key == "DEVNAME":
            return value
    raise SystemExit(f"no block device found for {path} ({uevent})")


def disk_counts(device):
    """(writes completed, sectors written, flushes completed) of `device` so far."""
    for line in open("/proc/diskstats"):
        fields = line.split()
        if fields[2] == device:
            # Fields after the name: reads 4, writes 4, in flight and times 3, discards 4,
            # flushes 2 (Linux 5.5 and later).
            return int(fields[7]), int(fields[9]), int(fields[18])
    raise SystemExit(f"{device} is not in /proc/diskstats")


def run(kind, device):
    per_file = (appends // files + 2) * block_bytes
    fds = []
    try:
        for i in range(files):
            fd = os.open(os.path.join(directory, f"{kind}{i}"), os.O_CREAT | os.O_RDWR, 0o644)
            fds.append(fd)
            if kind == "zeros":
                os.pwrite(fd, bytes(per_file), 0)
            elif kind == "fallocate":
                os.posix_fallocate(fd, 0, per_file)
        if kind == "steps":
            step = min(1 << 20, max(4096, per_file // 16 // 4096 * 4096))
            for offset in range(0, per_file, step):
                for fd in fds:
                    os.posix_fallocate(fd, offset, step)
        for fd in fds:
            os.fsync(fd)
        os.sync()
        block = b"x" * block_bytes
        positions = [0] * files
        before = disk_counts(device)
        for n in range(appends):
            i = n % files
            if pause:
                time.sleep(pause)
            os.pwrite(fds[i], block, positions[i])
            positions[i] += block_bytes
            os.fdatasync(fds[i])
        after = disk_counts(device)
    finally:
        for fd in fds:
            os.close(fd)
    writes, sectors, flushes = (b - a for a, b in zip(before, after))
    print(f"{kind:>9}: per sync {writes / appends:.2f} writes, "
          f"{sectors * 512 / 1024 / appends:.1f} KiB, {flushes / appends:.2f} flushes; "
          f"{extents(os.path.join(directory, f'{kind}0'))}")


def extents(path):
    """`filefrag`'s count of a file's extents, or why there is none."""
    # filefrag lives in /usr/sbin, off an ordinary user's PATH.
    filefrag = shutil.which("filefrag", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if filefrag is None:
        return "no extent count (filefrag, from e2fsprogs, not found)"
    try:
        out = subprocess.run([filefrag, path], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"no extent count ({e})"
    return out.stdout.strip().rsplit(": ", 1)[-1]


os.makedirs(directory, exist_ok=True)
try:
    device = device_of(directory)
    print(f"{files} files in turn, {appends} appends of {block_bytes} bytes, "
          f"pause {pause * 1000:g} ms, device {device}")
    for kind in ("zeros", "fallocate", "steps", "extend"):
        run(kind, device)
finally:
    shutil.rmtree(directory, ignore_errors=True)
