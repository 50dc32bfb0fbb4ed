"""How this disk makes appends to many files durable (issue 16, fsyncs shared across partitions):
N preallocated files each get one 8 KiB pwrite per round, then either an fdatasync per file (one
after another, then from 64 threads at once, as a node's blocking pool issues them) or one
syncfs(2) of the filesystem. Prints durable file appends per second for each. Standard library
only; Linux only (syncfs through libc).

usage: python3 benches/produce/sync_probe.py DIR [FILES] [ROUNDS]   (DIR on the data disk; removed after)
"""

import ctypes
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL("libc.so.6", use_errno=True)
directory = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 480
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
os.makedirs(directory, exist_ok=True)
fds = []
try:
    for i in range(files):
        fd = os.open(os.path.join(directory, f"f{i}"), os.O_CREAT | os.O_RDWR, 0o644)
        os.posix_fallocate(fd, 0, 16 << 20)
        os.fsync(fd)
        fds.append(fd)
    dir_fd = os.open(directory, os.O_RDONLY)
    block = b"x" * 8192
    positions = [0] * files

    def append_to_each():
        for i, fd in enumerate(fds):
            os.pwrite(fd, block, positions[i])
            positions[i] += len(block)

    def syncfs():
        if libc.syncfs(dir_fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")

    with ThreadPoolExecutor(64) as pool:
        ways = {
            "fdatasync of each file, one after another": lambda: [os.fdatasync(fd) for fd in fds],
            "fdatasync of each file, 64 threads at once": lambda: list(pool.map(os.fdatasync, fds)),
            "one syncfs for all": syncfs,
        }
        for _ in range(2):
            for name, sync in ways.items():
                start = time.perf_counter()
                for _ in range(rounds):
                    append_to_each()
                    sync()
                took = time.perf_counter() - start
                print(f"{name}: {files * rounds / took:,.0f} durable appends/s "
                      f"({files} files x {rounds} rounds in {took:.2f} s)")
finally:
    for fd in fds:
        os.close(fd)
    shutil.rmtree(directory, ignore_errors=True)
