#!/usr/bin/python3
"""palm farm and palm bench when the machine says no: one clear line on
stderr, exit code 1, no hang, nothing left behind.

usage: farm_failures.py PALM port-in-use
       farm_failures.py PALM full-shm
       farm_failures.py PALM interrupt
       farm_failures.py PALM cleanup

port-in-use  holds a listening socket on 127.0.0.1:P, runs `palm farm
             --port P` and `palm bench --port P`: each must fail with one
             line naming the address.
full-shm     (root only: CI runs as root) runs palm farm and palm bench in a
             mount namespace of their own whose /dev/shm is a 64 KiB tmpfs:
             each must fail with one line naming /dev/shm, and leave that
             tmpfs empty; then palm farm --bypass with a 24 MiB one, room
             for the master's segment but not the client's: one line, the
             client's reason in its log, nothing left.
interrupt    SIGINT to `palm bench` in the middle of a job: exit code 130,
             its workers ended, its segment removed.
cleanup      (root only) in a /dev/shm of its own: a farm killed with
             SIGKILL leaves its segment, `palm cleanup` removes it and keeps
             a live farm's.
Prints "FAILURES OK" when every check held, else the problems; exit 0 / 1.
"""
import glob
import os
import signal
import time
import shlex
import socket
import subprocess
import sys

TIMEOUT = 60  # s: "no hang"; a failing start takes well under a second


def run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None


def expect_one_line(name, r, code, needles, problems):
    if r is None:
        problems.append(f"{name}: still running after {TIMEOUT} s")
        return
    err = r.stderr.splitlines()
    print(f"{name}: exit {r.returncode}, stderr {r.stderr!r}")
    if r.returncode != code:
        problems.append(f"{name}: exit code {r.returncode}, expected {code}")
    if len(err) != 1:
        problems.append(f"{name}: {len(err)} lines on stderr, expected 1")
    for needle in needles:
        if needle not in r.stderr:
            problems.append(f"{name}: stderr does not name {needle!r}")


def port_in_use(palm, problems):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        address = f"127.0.0.1:{port}"
        r = run([palm, "farm", "--port", str(port), "--workers", "1", "--messages", "100"])
        expect_one_line("farm, port in use", r, 1, ["palm farm:", address, "in use"], problems)
        r = run([palm, "bench", "--port", str(port), "--transports", "tcp", "--payloads", "64", "--workers", "1",
                 "--runs", "1", "--messages", "100"])
        expect_one_line("bench, port in use", r, 1, ["palm bench:", address, "in use"], problems)


def in_small_shm(palm, size, args, name, problems):
    """Runs `palm ARGS` in a mount namespace whose /dev/shm is a tmpfs of
    `size` (private: the host's /dev/shm is untouched), then says on stderr
    what it left there. Returns (mounted, the run: None if it hung); a
    tmpfs that could not be mounted is a problem noted here."""
    script = (f"mount -t tmpfs -o size={size} palm-test-shm /dev/shm || exit 99; "
              f"{shlex.quote(palm)} {args}; rc=$?; "
              f"left=$(ls -A /dev/shm); test -z \"$left\" || echo \"left in /dev/shm: $left\" >&2; exit $rc")
    r = run(["unshare", "--mount", "sh", "-c", script])
    if r is not None and r.returncode == 99:
        problems.append(f"{name}: cannot mount a tmpfs on /dev/shm: {r.stderr.strip()}")
        return False, r
    return True, r


def full_shm(palm, problems):
    if os.geteuid() != 0:
        problems.append("full-shm needs root (unshare --mount and a tmpfs on /dev/shm); CI runs as root")
        return
    for name, args in (("farm", "farm --workers 1 --messages 100"),
                       ("bench", "bench --transports shm --payloads 64 --workers 1 --runs 1 --messages 100")):
        mounted, r = in_small_shm(palm, "64k", args, f"{name}, full /dev/shm", problems)
        if not mounted:
            continue
        expect_one_line(f"{name}, full /dev/shm", r, 1, [f"palm {name}:", "/dev/shm", "No space left"], problems)
    # Room for the master's segment but not for the client's bypass
    # segment: the client (a process of its own) says why on its log, which
    # the user sees, and the farm fails with one line.
    name = "farm --bypass, /dev/shm too small for the client"
    mounted, r = in_small_shm(palm, "24m", "farm --workers 1 --messages 100 --bypass", name, problems)
    if not mounted:
        return
    expect_one_line(name, r, 1, ["palm farm:", "bypass carried 0"], problems)
    if r is not None and not ("no bypass" in r.stdout and "/dev/shm" in r.stdout):
        problems.append(f"farm --bypass, /dev/shm too small: the client's reason is not in its log: {r.stdout!r}")


def children(pid):
    kids = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            pass
    return kids


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def interrupt(palm, problems):
    # A job far longer than the test: only the signal can end it.
    p = subprocess.Popen([palm, "bench", "--transports", "shm", "--payloads", "64", "--workers", "2", "--runs", "1",
                          "--messages", "1000000000", "--idle", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Its children: the 2 workers, then the client once they joined.
        segments, kids = [], []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not segments or len(kids) < 3) and p.poll() is None:
            time.sleep(0.1)
            segments = glob.glob(f"/dev/shm/palm-farm-{p.pid}-*")
            kids = children(p.pid)
        if not segments or len(kids) < 3:
            problems.append(f"the bench did not start a farm within 20 s (segments {segments}, processes {kids})")
            return
        time.sleep(1.0)  # well into the job
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"still running {TIMEOUT} s after SIGINT")
            return
        print(f"interrupt: exit {p.returncode}, stdout {out!r}, stderr {err!r}")
        if p.returncode != 130:
            problems.append(f"exit code {p.returncode} after SIGINT, expected 130")
        if out:
            problems.append("a report on stdout after SIGINT")
        left = glob.glob(f"/dev/shm/palm-farm-{p.pid}-*")
        if left:
            problems.append(f"left in /dev/shm: {left}")
        for k in kids:
            if alive(k):
                problems.append(f"process {k} (a worker or the client) still running")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def cleanup(palm, problems):
    if os.geteuid() != 0:
        problems.append("cleanup needs root (unshare --mount and a tmpfs on /dev/shm); CI runs as root")
        return
    # In a /dev/shm of its own: the other tests' segments, stale ones too,
    # are not this test's to remove. A farm killed with SIGKILL leaves its
    # segment (its workers and client end: their parent died); a live farm
    # beside it keeps its own; `palm cleanup` removes the first only. The
    # farms' temp dirs (their workers' logs) go in a TMPDIR of the test's,
    # removed after: the killed farm cannot remove its own.
    q = shlex.quote(palm)
    script = f"""
mount -t tmpfs -o size=2g palm-test-shm /dev/shm || exit 99
export TMPDIR=$(mktemp -d) || exit 99
trap 'rm -rf "$TMPDIR"' EXIT
wait_segment() {{  # wait_segment PID: until /dev/shm/palm-farm-PID-* exists (10 s at most)
  for i in $(seq 100); do ls /dev/shm/palm-farm-$1-* >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no segment of farm $1"; return 1
}}
{q} farm --workers 1 --messages 1000000000 >/dev/null 2>&1 & dead=$!
wait_segment $dead || exit 1
kill -KILL $dead; wait $dead
{q} farm --workers 1 --messages 1000000000 >/dev/null 2>&1 & live=$!
wait_segment $live || {{ kill -INT $live; exit 1; }}
echo "before: $(ls /dev/shm | tr '\\n' ' ')"
{q} cleanup; rc=$?
echo "after: $(ls /dev/shm | tr '\\n' ' ')"
kill -INT $live; wait $live
echo "live farm: exit $?"
echo "at the end: [$(ls -A /dev/shm)]"
echo "dead=$dead live=$live"
exit $rc
"""
    r = run(["unshare", "--mount", "sh", "-c", script])
    if r is None:
        problems.append(f"cleanup: still running after {TIMEOUT} s")
        return
    print(f"cleanup: exit {r.returncode}\n{r.stdout}{r.stderr}")
    if r.returncode == 99:
        problems.append(f"cleanup: cannot mount a tmpfs on /dev/shm: {r.stderr.strip()}")
        return
    out = r.stdout
    pids = dict(kv.split("=") for kv in out.splitlines()[-1].split()) if "dead=" in out else {}
    if r.returncode != 0 or not pids:
        problems.append(f"cleanup: exit {r.returncode}")
        return
    dead, live = pids["dead"], pids["live"]
    after = next((l for l in out.splitlines() if l.startswith("after:")), "")
    if f"palm cleanup: removed /dev/shm/palm-farm-{dead}-" not in out:
        problems.append("cleanup: the dead farm's segment was not reported removed")
    if f"palm-farm-{dead}-" in after:
        problems.append("cleanup: the dead farm's segment is still there")
    if f"palm-farm-{live}-" not in after:
        problems.append("cleanup: the live farm's segment was removed")
    if "live farm: exit 130" not in out:
        problems.append("cleanup: the live farm did not end cleanly after it (exit 130 on SIGINT)")
    if "at the end: []" not in out:
        problems.append("cleanup: /dev/shm is not empty at the end")


def main():
    modes = {"port-in-use": port_in_use, "full-shm": full_shm, "interrupt": interrupt, "cleanup": cleanup}
    if len(sys.argv) != 3 or sys.argv[2] not in modes:
        print(__doc__, file=sys.stderr)
        return 2
    palm, what = sys.argv[1], sys.argv[2]
    problems = []
    modes[what](palm, problems)
    for p in problems:
        print(f"PROBLEM {p}")
    if problems:
        return 1
    print("FAILURES OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
