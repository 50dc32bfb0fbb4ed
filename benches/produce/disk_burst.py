"""What this disk sustains over time: appends made durable, second by second (issue 16).

WRITERS threads each append BLOCK bytes to a file of their own and `fdatasync` it, as fast as
they go, for SECONDS (each file starts again from empty after 1 GiB, so the run writes at most
WRITERS GiB of space at once). Every second it prints the MB written, the syncs completed and
their mean time, and, from /proc/diskstats for the device under DIR, the write requests and
flushes the device completed. A disk that is the same at every second gives one line repeated;
a virtual disk with a burst allowance shows it fall after a few GB and come back later, which
is what a benchmark run meets when it follows a heavy one (`compare.sh`'s rates after its
maximum). Standard library only; Linux only.

usage: python3 benches/produce/disk_burst.py DIR [WRITERS] [SECONDS] [BLOCK]
       (DIR on the data disk, removed after; defaults 9 30 65536: nine files are the logs of a
       three-node cluster's three partitions)
"""

import os
import shutil
import sys
import threading
import time

FILE_BYTES_MAX = 1 << 30


def device_of(path):
    """The /proc/diskstats name of the block device holding `path`, or None."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if int(fields[0]) == major and int(fields[1]) == minor:
                return fields[2]
    return None


def device_counters(name):
    """(write requests, flush requests) completed by device `name` so far, or None."""
    if name is None:
        return None
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == name:
                flushes = int(fields[18]) if len(fields) > 18 else 0
                return int(fields[7]), flushes
    return None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    writers = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    block = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
    if writers < 1 or seconds < 1 or not 512 <= block <= 1 << 24:
        sys.exit("WRITERS and SECONDS are at least 1, BLOCK 512 B to 16 MiB")
    os.makedirs(root, exist_ok=False)
    device = device_of(root)
    data = os.urandom(block)
    syncs = [0] * writers
    sync_seconds = [0.0] * writers
    stop = threading.Event()

    def write(i):
        fd = os.open(os.path.join(root, f"file-{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            length = 0
            while not stop.is_set():
                os.write(fd, data)
                began = time.perf_counter()
                os.fdatasync(fd)
                sync_seconds[i] += time.perf_counter() - began
                syncs[i] += 1
                length += block
                if length >= FILE_BYTES_MAX:
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    length = 0
        finally:
            os.close(fd)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    print(f"{writers} writers, {block} B appends, each fdatasynced; device {device or 'unknown'}")
    print("second  MB/s  syncs/s  sync ms  device writes/s  flushes/s")
    try:
        for thread in threads:
            thread.start()
        begin = time.monotonic()
        last = (begin, 0, 0.0, device_counters(device))
        for second in range(1, seconds + 1):
            time.sleep(max(0.0, begin + second - time.monotonic()))
            now = (time.monotonic(), sum(syncs), sum(sync_seconds), device_counters(device))
            elapsed = now[0] - last[0]
            done = now[1] - last[1]
            mean_ms = 1000 * (now[2] - last[2]) / done if done else 0.0
            if now[3] and last[3]:
                requests = f"{(now[3][0] - last[3][0]) / elapsed:15,.0f}  {(now[3][1] - last[3][1]) / elapsed:9,.0f}"
            else:
                requests = f"{'':>15}  {'':>9}"
            print(f"{second:6d}  {done * block / 1e6 / elapsed:4.0f}  {done / elapsed:7,.0f}  "
                  f"{mean_ms:7.2f}  {requests}", flush=True)
            last = now
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
