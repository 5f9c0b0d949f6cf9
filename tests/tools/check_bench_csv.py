#!/usr/bin/python3
"""Checks the CSV of `palm bench --csv FILE` (and optionally its --plot SVG).

usage: check_bench_csv.py FILE.csv --transports shm,ipc,tcp --payloads 64,65536
                          --workers 1,2 --runs 1 [--svg FILE.svg]

Asserts the exact header, exactly one row per expected case (transports x
payloads x workers), positive figures, consistent ones (MB/s is msgs/s times
the payload, p50 <= p99 <= p99.9) and the runs asked for. Prints one line per
problem and exits 1, or prints "bench csv ok: N cases" and exits 0.
"""
import argparse
import csv
import itertools
import sys
import xml.etree.ElementTree as ET

HEADER = "transport,payload_bytes,workers,messages,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,runs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--transports", required=True)
    ap.add_argument("--payloads", required=True)
    ap.add_argument("--workers", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--svg")
    a = ap.parse_args()
    transports = a.transports.split(",")
    payloads = [int(p) for p in a.payloads.split(",")]
    workers = [int(w) for w in a.workers.split(",")]
    expected = set(itertools.product(transports, payloads, workers))

    problems = []
    with open(a.csv, newline="") as f:
        lines = f.read().splitlines()
    if not lines or lines[0] != HEADER:
        problems.append(f"header is {lines[0]!r}" if lines else "empty file")
    seen = set()
    for n, row in enumerate(csv.reader(lines[1:]), start=2):
        if len(row) != 10:
            problems.append(f"line {n}: {len(row)} fields")
            continue
        try:
            t = row[0]
            payload, nworkers, messages, runs = int(row[1]), int(row[2]), int(row[3]), int(row[9])
            mps, mbps, p50, p99, p999 = (float(x) for x in row[4:9])
        except ValueError as e:
            problems.append(f"line {n}: {e}")
            continue
        case = (t, payload, nworkers)
        if case not in expected:
            problems.append(f"line {n}: unexpected case {case}")
        if case in seen:
            problems.append(f"line {n}: case {case} twice")
        seen.add(case)
        if messages <= 0:
            problems.append(f"line {n}: messages {messages}")
        if runs != a.runs:
            problems.append(f"line {n}: runs {runs}, asked {a.runs}")
        for name, v in (("msgs_per_s", mps), ("mb_per_s", mbps), ("p50_us", p50), ("p99_us", p99),
                        ("p999_us", p999)):
            if not v > 0:
                problems.append(f"line {n}: {name} {v}")
        if not p50 <= p99 <= p999:
            problems.append(f"line {n}: percentiles out of order: {p50} {p99} {p999}")
        if mps > 0 and abs(mbps - mps * payload / 1e6) > 0.01 * mbps + 0.002:
            problems.append(f"line {n}: mb_per_s {mbps} is not msgs_per_s x payload ({mps * payload / 1e6:.3f})")
    for case in sorted(expected - seen):
        problems.append(f"case {case} missing")

    if a.svg:
        try:
            root = ET.parse(a.svg).getroot()
            text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
            if root.tag != "{http://www.w3.org/2000/svg}svg":
                problems.append(f"{a.svg}: root is {root.tag}")
            for t in transports:
                if t not in text:
                    problems.append(f"{a.svg}: no legend for {t}")
            lines_drawn = len(list(root.iter("{http://www.w3.org/2000/svg}polyline")))
            # Per worker count: one throughput line and two latency lines per transport.
            if lines_drawn != 3 * len(transports) * len(workers):
                problems.append(f"{a.svg}: {lines_drawn} lines drawn")
        except (OSError, ET.ParseError) as e:
            problems.append(f"{a.svg}: {e}")

    for p in problems:
        print(f"bench csv: {p}")
    if problems:
        return 1
    print(f"bench csv ok: {len(seen)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
