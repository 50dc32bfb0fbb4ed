"""How long a consumer group takes to reach a stable assignment, with confluent-kafka members
(librdkafka), classic protocol or KIP-848, against a running cluster (`quipu dev`).

usage: rebalance.py BOOTSTRAP TOPIC PARTITIONS MEMBERS PROTOCOL

PROTOCOL is `classic` (range assignor, session.timeout.ms 6000, heartbeats every 500 ms) or
`consumer` (KIP-848: the coordinator assigns; its session timeout and heartbeat interval are the
server's `[groups] consumer_*` settings). Each member is a process
(`crates/quipu-kafka/tests/clients/group_members.py ... member NAME`) that prints its assignment
when it changes. Measured, in seconds:

- `form`: MEMBERS members started at once until the assignment is stable (every partition held
  by exactly one member, every member holding some);
- `join`: one more member started, until stable again with MEMBERS + 1;
- `kill`: one member SIGKILLed (it never leaves), until stable again with MEMBERS (includes the
  session timeout, after which the coordinator expires it).

Prints one JSON object.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

BOOTSTRAP, TOPIC, PARTITIONS, MEMBERS, PROTOCOL = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
CLIENT = {"classic": "confluent-kafka", "consumer": "confluent-kafka-consumer"}[PROTOCOL]
SCRIPT = os.path.join(os.path.dirname(__file__), "../../crates/quipu-kafka/tests/clients/group_members.py")
GROUP = f"rebalance-{PROTOCOL}-{MEMBERS}-{int(time.time())}"
DEADLINE_S = 180

latest = {}
lock = threading.Lock()


def start(name):
    process = subprocess.Popen(
        [sys.executable, SCRIPT, CLIENT, BOOTSTRAP, TOPIC, GROUP, "member", name],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read():
        for line in process.stdout:
            with lock:
                latest[name] = json.loads(line)

    threading.Thread(target=read, daemon=True).start()
    return process


def stable(names):
    with lock:
        held = [latest.get(n) for n in names]
    if any(not h for h in held):
        return False
    flat = [p for h in held for p in h]
    return len(flat) == PARTITIONS and set(flat) == set(range(PARTITIONS))


def until_stable(names):
    start_at = time.time()
    while not stable(names):
        if time.time() - start_at > DEADLINE_S:
            print(f"no stable assignment for {names} in {DEADLINE_S} s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.02)
    return time.time() - start_at


processes = {}
names = [f"m{i}" for i in range(MEMBERS)]
for name in names:
    processes[name] = start(name)
form = until_stable(names)
time.sleep(1)
processes["extra"] = start("extra")
join = until_stable(names + ["extra"])
time.sleep(1)
victim = names[0]
processes[victim].send_signal(signal.SIGKILL)
with lock:
    latest.pop(victim, None)
kill = until_stable(names[1:] + ["extra"])
for p in processes.values():
    p.kill()
print(json.dumps({"protocol": PROTOCOL, "members": MEMBERS, "partitions": PARTITIONS,
                  "form_s": round(form, 2), "join_s": round(join, 2), "kill_s": round(kill, 2)}))
