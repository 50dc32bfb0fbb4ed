#!/usr/bin/env python3
"""Splits a system-wide `perf record -g` of a produce run into CPU time per produce.

usage: cpu_split.py PERF_DATA PRODUCES NODE_PIDS CLIENT_PID [OUT_MD]

PRODUCES is the number of produce requests the nodes answered while perf recorded (from their
/metrics); NODE_PIDS a comma-separated list. The recording must sample `cpu-clock` (profile.sh does), so
that each sample is one period of one CPU's time; it is charged
to its process (the nodes together, the bench client, other programs and kernel threads, idle)
and to the first category below that its stack matches, tried in order, so that a sample inside
an `fdatasync` counts as syncing whatever its leaf. Kernel stacks are whole; user-space stacks of
a release build stop at the first function without a frame pointer, so user-space work is
classified by its leaf function only. Prints, and writes to OUT_MD, a Markdown table of
microseconds of CPU per produce request.
"""

import collections
import subprocess
import sys

# (category, frames that put a sample in it when anywhere in its stack), in priority order.
STACK_CATEGORIES = [
    (
        "sync (fdatasync, syncfs)",
        ("__x64_sys_fdatasync", "__x64_sys_fsync", "do_fsync", "__x64_sys_syncfs",
         "sync_filesystem"),
    ),
    ("file writes (pwrite)", ("__x64_sys_pwrite64", "ksys_pwrite64", "__x64_sys_pwritev2")),
    (
        "sockets (send, receive)",
        ("sock_write_iter", "sock_read_iter", "tcp_sendmsg", "tcp_recvmsg", "__sys_recvfrom",
         "__sys_sendto", "__sys_sendmsg", "___sys_sendmsg", "__sys_recvmsg", "___sys_recvmsg"),
    ),
    (
        "waiting and waking (epoll, futex, eventfd, switches)",
        ("do_epoll_wait", "__x64_sys_epoll_wait", "do_futex", "__x64_sys_futex",
         "eventfd_write", "eventfd_read", "__x64_sys_sched_yield", "finish_task_switch.isra.0",
         "__schedule"),
    ),
    (
        "interrupts and device notifications",
        ("asm_common_interrupt", "asm_sysvec_apic_timer_interrupt", "asm_sysvec_reschedule_ipi",
         "asm_sysvec_call_function_single", "handle_softirqs", "iowrite16"),
    ),
    ("page faults", ("asm_exc_page_fault",)),
]

# (category, leaf name prefixes) for user-space samples, in priority order.
LEAF_CATEGORIES = [
    ("copies (memmove)", ("__memmove", "__memcpy", "__memset")),
    ("checksums (CRC)", ("crc32fast", "crc32c", "<crc32")),
    (
        "allocator",
        ("malloc", "_int_malloc", "_int_free", "cfree", "free", "realloc", "_int_realloc",
         "unlink_chunk", "malloc_consolidate", "<quipu_alloc"),
    ),
    (
        "gRPC and HTTP/2 (tonic, hyper, h2, prost)",
        ("h2::", "<h2::", "http::", "<http::", "http_body", "<http_body", "hyper", "<hyper",
         "tonic::", "<tonic::", "prost::", "<prost::", "tower::", "<tower::", "axum::",
         "<axum::", "tokio_util::codec", "<tokio_util::codec"),
    ),
    ("tokio runtime", ("tokio::", "<tokio::")),
    ("openraft", ("openraft::", "<openraft::")),
    ("quipu", ("quipu", "<quipu")),
]

OTHER_USER = "other user space"
OTHER_KERNEL = "other kernel"


def categorize(stack):
    """The category of one sample's stack (leaf first)."""
    frames = set(stack)
    for name, markers in STACK_CATEGORIES:
        if any(marker in frames for marker in markers):
            return name
    leaf = stack[0] if stack else ""
    for name, prefixes in LEAF_CATEGORIES:
        if leaf.startswith(prefixes):
            return name
    # Kernel symbols of a sample outside the system calls above (perf marks none of them, so
    # tell by the stack: a kernel leaf sits under an entry frame).
    if any(f.startswith(("entry_SYSCALL", "do_syscall_64", "asm_")) for f in stack):
        return OTHER_KERNEL
    return OTHER_USER


def samples(perf_data):
    """Yields (pid, comm, stack) for every sample of the recording."""
    out = subprocess.run(
        ["perf", "script", "-i", perf_data, "-F", "pid,comm,ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    pid, comm, stack = None, None, []
    for line in out.split("\n"):
        if not line.strip():
            if pid is not None:
                yield pid, comm, stack
            pid, comm, stack = None, None, []
        elif line.startswith("\t"):
            fields = line.strip().split(None, 1)
            symbol = fields[1] if len(fields) > 1 else fields[0]
            stack.append(symbol.rsplit(" (", 1)[0])
        else:
            fields = line.split()
            pid, comm = int(fields[-1]), " ".join(fields[:-1])
    if pid is not None:
        yield pid, comm, stack


def main():
    perf_data, produces = sys.argv[1], int(sys.argv[2])
    nodes = {int(p) for p in sys.argv[3].split(",") if p}
    client = int(sys.argv[4])
    out_md = sys.argv[5] if len(sys.argv) > 5 else None
    if produces <= 0:
        sys.exit("no produce request was answered while perf recorded")
    frequency = None
    header = subprocess.run(
        ["perf", "report", "-i", perf_data, "--header-only"], capture_output=True, text=True,
    ).stdout
    for line in header.split("\n"):
        if "sample_freq" in line:
            frequency = int(line.split("sample_freq", 1)[1].split("=", 1)[1].split(",")[0].strip(" }"))
    if not frequency:
        sys.exit("cannot read the sampling frequency from the perf header")
    micros_per_sample = 1e6 / frequency
    columns = ["nodes", "bench client", "others"]
    table = collections.defaultdict(collections.Counter)
    idle = 0
    for pid, _comm, stack in samples(perf_data):
        if pid == 0:
            idle += 1
            continue
        column = "nodes" if pid in nodes else "bench client" if pid == client else "others"
        table[categorize(stack)][column] += 1
    order = [name for name, _ in STACK_CATEGORIES] + [OTHER_KERNEL]
    order += [name for name, _ in LEAF_CATEGORIES] + [OTHER_USER]
    per = lambda n: n * micros_per_sample / produces
    lines = [
        f"CPU per produce request, in microseconds ({produces} requests answered while "
        f"sampling at {frequency} Hz; idle: {per(idle):.0f} µs of the machine's CPUs per request)",
        "",
        "| category | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in order:
        row = table.get(name, collections.Counter())
        lines.append(f"| {name} | " + " | ".join(f"{per(row[c]):.0f}" for c in columns) + " |")
    totals = [sum(table[name][c] for name in table) for c in columns]
    lines.append("| **total** | " + " | ".join(f"**{per(t):.0f}**" for t in totals) + " |")
    text = "\n".join(lines)
    print(text)
    if out_md:
        with open(out_md, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
