#!/usr/bin/python3
"""`palm stat` against a live farm made by hand: a `palm master` (every port
chosen by the OS, read from its log), a `palm worker` and `palm client`
sending 5 messages. The master's counters must show them: its parts'
messages and the worker on shm in its dispatch line. Then an address where
nothing answers: one line on stderr, exit 1. Every process it started is
ended by pid.

usage: stat_check.py PALM
Prints "STAT OK" when every check held, else the problems; exit 0 / 1.
"""
import re
import signal
import subprocess
import sys
import threading
import time

TIMEOUT = 30  # s for each step


def stats(text):
    """{line name: {key: int}} of palm stat's key=value lines."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        name = " ".join(w for w in words[:2] if "=" not in w)
        out[name] = {k: int(v) for k, v in (w.split("=", 1) for w in words if "=" in w)}
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    palm = sys.argv[1]
    problems = []
    procs = []
    try:
        any_port = "tcp://127.0.0.1:*"
        master = subprocess.Popen([palm, "master", "--name", "statfarm", "--db", any_port, "--pull", any_port,
                                   "--pub", any_port, "--wpull", any_port, "--wpush", any_port],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(master)
        db = None
        deadline = time.monotonic() + TIMEOUT
        while db is None and time.monotonic() < deadline:
            line = master.stdout.readline()
            if not line:
                break
            m = re.search(r"cache REP bound on (tcp://\S+)", line)
            if m:
                db = m.group(1)
        if db is None:
            print("PROBLEM the master did not say where its cache is")
            return 1
        # The rest of its log is read on, so that a full pipe never stalls it.
        threading.Thread(target=lambda: [None for _ in master.stdout], daemon=True).start()
        worker = subprocess.Popen([palm, "worker", "--db", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(worker)
        client = subprocess.run([palm, "client", "--server", "statfarm", "--db", db, "--function", "statfarm.upper",
                                 "--messages", "5"], capture_output=True, text=True, timeout=TIMEOUT)
        if client.returncode != 0 or client.stdout.count("A MESSAGE") != 5:
            problems.append(f"the client: exit {client.returncode}, {client.stdout!r} {client.stderr!r}")

        r = subprocess.run([palm, "stat", "--db", db], capture_output=True, text=True, timeout=TIMEOUT)
        print(f"palm stat --db {db}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        s = stats(r.stdout)
        if r.returncode != 0:
            problems.append(f"palm stat: exit {r.returncode}")
        if not r.stdout.startswith("server statfarm\n"):
            problems.append("palm stat: no `server statfarm` line first")
        for part in ("part inbound", "part dispatch", "part outbound"):
            if s.get(part, {}).get("in", 0) < 5 or s.get(part, {}).get("errors", -1) != 0:
                problems.append(f"palm stat: {part} does not show 5 messages in and no errors")
        d = s.get("dispatch", {})
        if d.get("workers.shm") != 1 or d.get("results.shm", 0) < 5 or d.get("in_flight") != 0:
            problems.append(f"palm stat: the dispatch line does not show the worker on shm and its results: {d}")

        r = subprocess.run([palm, "stat", "--db", "tcp://127.0.0.1:1", "--timeout", "300"], capture_output=True,
                           text=True, timeout=TIMEOUT)
        print(f"palm stat, nothing there: exit {r.returncode}, stderr {r.stderr!r}")
        if r.returncode != 1 or len(r.stderr.splitlines()) != 1 or "palm stat:" not in r.stderr:
            problems.append("palm stat where nothing answers: not one line on stderr and exit 1")
    finally:
        for p in reversed(procs):  # the worker, then the master
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    for p in problems:
        print(f"PROBLEM {p}")
    if problems:
        return 1
    print("STAT OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
