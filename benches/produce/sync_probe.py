"""How this disk makes appends to many files durable (issue 16, fsyncs shared across partitions).

N preallocated files, each standing for a partition's active segment, get appends in groups of
G files (a group is the appends that wait for a sync at the same moment). Each append writes
BLOCK bytes to its file and 8 bytes to each of three small files beside it, as a node's log
writes its offset index, time index and flush mark. The group is then made durable one of four
ways:
- an `fdatasync` of each file, one after another (what one log per partition does);
- the same from one thread per file at once (a node's blocking pool);
- `sync_file_range(SYNC_FILE_RANGE_WRITE)` of every file first (the writes start together),
  then an `fdatasync` of each;
- one `syncfs(2)` of the filesystem (writes back every dirty file, the small ones too).

Prints, for each way, durable appends per second and the machine's CPU per append (all CPUs,
from /proc/stat, so the kernel's work on the disk's interrupts counts too). Two passes, the ways
alternating, since this VM drifts. Standard library only; Linux only (libc through ctypes).

usage: python3 benches/produce/sync_probe.py DIR [FILES] [GROUP] [APPENDS] [BLOCK]
       (DIR on the data disk, removed after; defaults 480 5 4000 65536)
"""

import ctypes
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2

directory = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 480
group = int(sys.argv[3]) if len(sys.argv) > 3 else 5
appends = int(sys.argv[4]) if len(sys.argv) > 4 else 4000
block_bytes = int(sys.argv[5]) if len(sys.argv) > 5 else 65536


def busy_ticks():
    """CPU ticks spent busy on every CPU so far (user, nice, system, irq, softirq)."""
    fields = list(map(int, open("/proc/stat").readline().split()[1:]))
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6]


def check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


# Every way runs PASSES times, one after another, on the same files.
WAYS, PASSES = 4, 2

os.makedirs(directory, exist_ok=True)
logs, small, dir_fd = [], [], None
try:
    # Room for every append of every pass, rounded up per file: no way writes past the
    # preallocated space (which would add block allocation and size changes to its syncs).
    preallocated = (WAYS * PASSES * appends // files + group + 1) * block_bytes
    for i in range(files):
        fd = os.open(os.path.join(directory, f"f{i}"), os.O_CREAT | os.O_RDWR, 0o644)
        os.posix_fallocate(fd, 0, preallocated)
        os.fsync(fd)
        logs.append(fd)
        beside = []
        for kind in ("index", "timeindex", "mark"):
            fd = os.open(os.path.join(directory, f"f{i}.{kind}"), os.O_CREAT | os.O_RDWR, 0o644)
            os.posix_fallocate(fd, 0, 1 << 20)
            os.fsync(fd)
            beside.append(fd)
        small.append(beside)
    dir_fd = os.open(directory, os.O_RDONLY)
    block = b"x" * block_bytes
    positions = [0] * files
    next_file = 0

    def append(i):
        os.pwrite(logs[i], block, positions[i])
        for fd in small[i]:
            os.pwrite(fd, b"\1" * 8, (positions[i] // block_bytes) * 8)
        positions[i] += block_bytes

    def each_in_turn(members):
        for i in members:
            append(i)
        for i in members:
            os.fdatasync(logs[i])

    def each_at_once(members):
        for i in members:
            append(i)
        list(pool.map(lambda i: os.fdatasync(logs[i]), members))

    def started_then_each(members):
        for i in members:
            append(i)
        for i in members:
            check(libc.sync_file_range(logs[i], 0, 0, SYNC_FILE_RANGE_WRITE), "sync_file_range")
        for i in members:
            os.fdatasync(logs[i])

    def one_syncfs(members):
        for i in members:
            append(i)
        check(libc.syncfs(dir_fd), "syncfs")

    ways = {
        "fdatasync of each, in turn": each_in_turn,
        "fdatasync of each, one thread per file": each_at_once,
        "writeback started for all, then fdatasync of each": started_then_each,
        "one syncfs": one_syncfs,
    }
    print(f"{files} files, groups of {group}, {appends} appends of {block_bytes} bytes per way")
    with ThreadPoolExecutor(group) as pool:
        assert len(ways) == WAYS
        for _ in range(PASSES):
            for name, way in ways.items():
                ticks, start, done = busy_ticks(), time.perf_counter(), 0
                while done < appends:
                    members = [(next_file + k) % files for k in range(group)]
                    next_file = (next_file + group) % files
                    way(members)
                    done += group
                took = time.perf_counter() - start
                cpu = (busy_ticks() - ticks) / os.sysconf("SC_CLK_TCK")
                print(f"{name}: {done / took:,.0f} durable appends/s, "
                      f"{cpu / done * 1e6:.0f} us of CPU each")
finally:
    for fd in logs + [fd for beside in small for fd in beside]:
        os.close(fd)
    if dir_fd is not None:
        os.close(dir_fd)
    shutil.rmtree(directory, ignore_errors=True)
