"""warren's soak check: minutes of mixed load with faults injected, on loopback.

Not a test (scripts/test does not run it): a long check that warren stays whole while its
workers fail under load. It starts `target/release/warren serve` with three apps, `hello`,
`flask` and `faulty` (tests/apps/failures, with request_timeout_s = 1 and max_requests = 50),
and a pool of client threads, each on its own keep-alive connection, offers requests at a
steady rate:

  good      hello /, flask /hello, faulty /hello and /count: each must be a 200 with the
            right body (a /count above max_requests is a failure too)
  injected  faulty /exit and /segv (the worker dies: 502), /sleep?s=3 (past
            request_timeout_s: 504)

On timers, more faults: SIGKILL to an idle-looking worker of hello every ~20 s (a hello
request that fails within 1 s after a kill may have been on that worker: it is counted as
injected, separately); slowloris clients (a request head sent a byte a second, which warren
must close after header_timeout_s, 10 s); a client that leaves a /drip stream early, and one
that reads it until request_timeout_s cuts it; and SIGHUP every ~30 s, which makes warren
re-read its config and redeploy every app (new workers up before the old drain): no request
may fail because of it.

warren's own process (`warren serve`, not its zygotes or workers) is sampled, open fds and
VmRSS, after a warm-up, every 30 s, and after 5 s of quiet at the end (the clients' keep-alive
connections still open both times). Then it gets SIGTERM and must exit within 30 s. The exit
status is non-zero when a request failed unexpectedly, fds grew by more than 10 or RSS by more
than 20%, a reload replaced no zygote, or warren did not stop cleanly. warren's log (and the
config) stay in a temporary directory, named at the start and at the end.

Crashes are counted against a crash loop only when no request was answered in between (five
in a row make one: the app then answers 503 for a while), so the injected ones, spread among
good requests, must never trip it: a 503 on a good request is an unexpected failure.

Environment:
  SOAK_DURATION  seconds of mixed load (default 600)
  SOAK_WARMUP    seconds of the same request mix before the first sample (default 60: the
                 allocator's arenas settle in the first minute or two)
  SOAK_RATE      requests per second offered, all apps together (default 200)
  SOAK_RELOAD    1: SIGHUP every ~30 s (default); 0: never (a warren without a SIGHUP handler
                 dies of it)
  SOAK_THREADS   client threads, one keep-alive connection each (default 64)
  SOAK_SEED      seed of the request mix (default: random, printed)
  SOAK_CRASH_SHARE  share of the requests that crash their worker, /exit and /segv in equal
                 parts (default 0.002); /sleep?s=3 is 0.002
"""

import collections
import http.client
import os
import queue
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WARREN = os.path.join(ROOT, "target/release/warren")

DURATION = float(os.environ.get("SOAK_DURATION", "600"))
RATE = float(os.environ.get("SOAK_RATE", "200"))
RELOAD = os.environ.get("SOAK_RELOAD", "1") == "1"
THREADS = int(os.environ.get("SOAK_THREADS", "64"))
SEED = int(os.environ.get("SOAK_SEED", str(random.randrange(1 << 32))))
CRASH_SHARE = float(os.environ.get("SOAK_CRASH_SHARE", "0.002"))

WARMUP_S = float(os.environ.get("SOAK_WARMUP", "60"))  # the same mix, before the first sample
QUIET_S = 5             # no load before the last sample
SAMPLE_EVERY_S = 30
RELOAD_EVERY_S = 30
KILL_EVERY_S = 20
SLOWLORIS_EVERY_S = 30  # SLOWLORIS_CLIENTS at a time
SLOWLORIS_CLIENTS = 3
DRIP_EVERY_S = 15       # one client leaves a /drip early, one reads it until it is cut
CLIENT_TIMEOUT_S = 10
KILL_WINDOW_S = 1.0     # a hello failure this soon after a SIGKILL is the kill's
HEADER_TIMEOUT_S = 10   # warren's default server.header_timeout_s
REQUEST_TIMEOUT_S = 1   # faulty's limits.request_timeout_s
MAX_REQUESTS = 50       # faulty's limits.max_requests
# warren closes a keep-alive connection idle for header_timeout_s: a client reconnects before.
IDLE_RECONNECT_S = HEADER_TIMEOUT_S - 2
FD_GROWTH_MAX = 10
RSS_GROWTH_MAX = 0.20
STOP_TIMEOUT_S = 30

CONFIG = f"""\
[server]
listen = "127.0.0.1:0"

[apps.hello]
path = "{ROOT}/examples/apps/hello"
entry = "app:application"
workers = 2

[apps.flask]
path = "{ROOT}/examples/apps/flask"
entry = "app:app"
venv = "{ROOT}/.venv"
workers = 2

[apps.faulty]
path = "{ROOT}/tests/apps/failures"
entry = "app:application"
workers = 2

[apps.faulty.limits]
request_timeout_s = {REQUEST_TIMEOUT_S}
max_requests = {MAX_REQUESTS}
"""


def count_ok(body):
    """faulty's /count: `N PID`, N at most max_requests (the worker is retired after that)."""
    m = re.fullmatch(rb"(\d+) (\d+)", body)
    return bool(m) and 1 <= int(m.group(1)) <= MAX_REQUESTS


# Good requests: (weight, app, path, check of the body of the 200).
GOOD = [
    (35, "hello", "/", lambda b: b == b"Hello, World!\n"),
    (25, "flask", "/hello", lambda b: b == b"Hello from Flask!\n"),
    (20, "faulty", "/hello", lambda b: b == b"hello"),
    (20, "faulty", "/count", count_ok),
]
# Injected faults: (share of all requests, app, path, kind, expected status). Crashes are
# rare, see above.
FAULTS = [
    (CRASH_SHARE / 2, "faulty", "/exit", "exit", 502),
    (CRASH_SHARE / 2, "faulty", "/segv", "segv", 502),
    (0.002, "faulty", "/sleep?s=3", "sleep", 504),
]


class Request:
    __slots__ = ("app", "path", "check", "fault", "expect")

    def __init__(self, app, path, check=None, fault=None, expect=200):
        self.app, self.path, self.check, self.fault, self.expect = app, path, check, fault, expect


def pick(rng):
    """The next request of the mix."""
    r = rng.random()
    for share, app, path, kind, status in FAULTS:
        if r < share:
            return Request(app, path, fault=kind, expect=status)
        r -= share
    weight = rng.uniform(0, sum(g[0] for g in GOOD))
    for w, app, path, check in GOOD:
        if weight < w:
            return Request(app, path, check)
        weight -= w
    return Request(*GOOD[-1][1:])


# --- warren and its processes ----------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def app_of(pid):
    """The app a zygote or worker runs (`warren-worker zygote --name APP ...`), or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag == b"--name":
            return value.decode(errors="replace")
    return None


def inner_pid(pid):
    """The pid a process has in its own pid namespace (1 for a confined zygote)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def wchan(pid):
    """Where in the kernel a process sleeps (an idle worker: reading its request pipe), or None."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip() or None
    except OSError:
        return None


class Warren:
    """`warren serve` on a temporary config, in its own process group, always stopped."""

    def __init__(self, tmp):
        self.config = os.path.join(tmp, "warren.toml")
        self.log_path = os.path.join(tmp, "warren.log")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.proc = None
        self.port = None

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [WARREN, "serve", "--config", self.config], stdout=subprocess.PIPE,
            stderr=self.log, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
            env={**os.environ, "WARREN_LOG": os.environ.get("WARREN_LOG", "info")})
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
        m = re.match(rb"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"warren did not print `listening on ADDR` ({line!r}); "
                               f"see {self.log_path}")
        self.port = int(m.group(1))
        # Nothing else is expected on stdout; drain it so that warren never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        for _, app, path, _ in GOOD:
            self.wait_ready(app, path)

    def wait_ready(self, app, path, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", path, headers={"Host": f"{app}.localhost"})
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"{app} did not answer 200 on {path}; see {self.log_path}")

    def alive(self):
        return self.proc.poll() is None

    def sample(self):
        """warren's own (open fds, VmRSS in KiB)."""
        pid = self.proc.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return fds, rss

    def descendants(self):
        """pid -> (state, ppid) of every process below warren."""
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = proc_stat(int(name))
                if st:
                    procs[int(name)] = st
        below, todo = {}, [self.proc.pid]
        children = collections.defaultdict(list)
        for pid, (_, ppid) in procs.items():
            children[ppid].append(pid)
        while todo:
            for child in children[todo.pop()]:
                below[child] = procs[child]
                todo.append(child)
        return below

    def workers(self, app):
        """{pid: state} of the app's workers (old generations' too, while they drain).

        Unconfined: warren → zygote → workers. Confined: warren → pid-namespace parent →
        zygote (pid 1 inside) → workers. A worker's parent runs the same app, and it is not
        pid 1 of its namespace.
        """
        procs = self.descendants()
        named = {pid for pid in procs if app_of(pid) == app}
        return {pid: state for pid, (state, ppid) in procs.items()
                if pid in named and ppid in named and inner_pid(pid) != 1}

    def zygotes(self, app):
        procs = self.descendants()
        return {procs[w][1] for w in self.workers(app) if w in procs}

    def stop(self):
        """SIGTERM; (exit status, seconds to exit), the status None if it had to be killed."""
        if not self.alive():
            return self.proc.returncode, 0.0
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            code = None
        self.log.close()
        return code, time.monotonic() - start

    def kill(self):
        """Last resort on the way out: warren's process group (it started it)."""
        if self.proc and self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# --- outcomes ---------------------------------------------------------------------------------

class Stats:
    """Every outcome, classified; shared by the client threads and the fault timers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.ok_by_app = collections.Counter()
        self.latencies = collections.defaultdict(list)  # app -> seconds of its 200s
        self.injected = collections.Counter()
        self.unexpected = collections.Counter()  # (what, detail) -> count
        self.examples = []
        self.kills = []          # monotonic times of the SIGKILLs
        self.max_lag = 0.0       # the generator's worst delay past a request's due time
        self.reloads = 0
        self.reloads_effective = 0
        self.slowloris = []      # seconds until warren closed each one
        self.drips_left = 0
        self.drips_cut = []      # seconds until request_timeout_s cut each one
        self.t0 = None           # start of the mixed load; None during the warm-up

    def fail(self, what, detail, body=b""):
        """An unexpected failure: counted, and the first few kept as examples."""
        self.unexpected[(what, detail)] += 1
        if len(self.examples) < 10:
            snippet = body[:80].decode(errors="replace").strip()
            when = "warm-up" if self.t0 is None else f"t={time.monotonic() - self.t0:.1f}s"
            self.examples.append(
                f"{when} {what}: {detail}"
                + (f" ({snippet!r})" if snippet else ""))

    def record(self, req, outcome, end, lag):
        with self.lock:
            self.sent += 1
            self.max_lag = max(self.max_lag, lag)
            if isinstance(outcome, BaseException):
                status, body, latency = None, b"", None
                detail = f"{type(outcome).__name__}: {outcome}"
            else:
                status, body, latency = outcome
                detail = str(status)
            if req.fault:
                if status == req.expect:
                    self.injected[f"{req.fault} → {req.expect}"] += 1
                    return
            elif status == 200 and req.check(body):
                self.ok += 1
                self.ok_by_app[req.app] += 1
                self.latencies[req.app].append(latency)
                return
            elif status == 200:
                detail = "200 with a wrong body"
            if (status != 200 and req.app == "hello"
                    and any(k <= end <= k + KILL_WINDOW_S for k in self.kills)):
                self.injected["killed worker (hello, ≤ 1 s after a SIGKILL)"] += 1
                return
            self.fail(f"{req.app} {req.path}", detail, body)


# --- load -------------------------------------------------------------------------------------

class Load:
    """Client threads, each on a keep-alive connection, fed by a generator at a fixed rate.

    The generator sets each request's due time by the clock, not by the answers (open loop),
    through a bounded queue: if warren stalls long enough to fill it, the generator waits.
    """

    def __init__(self, port, stats):
        self.port, self.stats = port, stats
        self.queue = queue.Queue(maxsize=max(100, int(RATE * 5)))
        self.abort = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(THREADS)]
        for t in self.threads:
            t.start()

    def client(self):
        conn, last = None, 0.0
        while True:
            item = self.queue.get()
            if item is None:
                break
            due, req = item
            if self.abort.is_set():
                self.queue.task_done()
                continue
            start = time.monotonic()
            if conn is not None and start - last > IDLE_RECONNECT_S:
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
            try:
                conn.request("GET", req.path, headers={"Host": f"{req.app}.localhost"})
                resp = conn.getresponse()
                body = resp.read()
                outcome = (resp.status, body, time.monotonic() - start)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                outcome = e
                conn.close()
                conn = None
            last = time.monotonic()
            self.stats.record(req, outcome, last, start - due)
            self.queue.task_done()
        if conn is not None:
            conn.close()

    def run(self, seconds, rng, should_stop):
        """Offers RATE requests/s for `seconds`, then waits for the answers."""
        start = time.monotonic()
        for i in range(int(seconds * RATE)):
            due = start + i / RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if should_stop():
                self.abort.set()
                break
            self.queue.put((due, pick(rng)))
        self.queue.join()

    def close(self):
        """Ends the threads, which close their connections."""
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)


# --- faults on timers -------------------------------------------------------------------------

class Chaos:
    """The timed faults: kills, reloads, slowloris and /drip clients; and the samples."""

    def __init__(self, warren, stats, samples):
        self.warren, self.stats, self.samples = warren, stats, samples
        self.helpers = []
        self.pending_checks = []  # (due, zygotes before the SIGHUP)

    def schedule(self):
        """(seconds after the start of the load, event), in order, all within the run."""
        events = []

        def every(first, step, what):
            t = first
            while t < DURATION:
                events.append((t, what))
                t += step

        every(SAMPLE_EVERY_S, SAMPLE_EVERY_S, "sample")
        if RELOAD:
            every(RELOAD_EVERY_S + 1, RELOAD_EVERY_S, "reload")
        every(KILL_EVERY_S / 2, KILL_EVERY_S, "kill")
        every(5, SLOWLORIS_EVERY_S, "slowloris")
        every(7, DRIP_EVERY_S, "drip")
        return sorted(events, key=lambda e: e[0])

    def run(self, t0, stop):
        for at, what in self.schedule():
            while time.monotonic() < t0 + at:
                if stop.wait(max(0.0, min(0.5, t0 + at - time.monotonic()))):
                    return
                if not self.warren.alive():
                    return
                self.check_reloads()
            try:
                getattr(self, what)(t0)
            except Exception as e:  # e.g. warren gone mid-event: the main loop sees it too
                with self.stats.lock:
                    self.stats.fail(f"timer {what}", f"{type(e).__name__}: {e}")

    def spawn(self, target, *args):
        """Runs a helper client in its own thread; an error of its own is a failure too."""
        def run():
            try:
                target(*args)
            except Exception as e:
                with self.stats.lock:
                    self.stats.fail(target.__name__, f"{type(e).__name__}: {e}")

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.helpers.append(t)

    def join(self):
        """Waits for the helper clients, and for the checks of the last reloads to be due."""
        for t in self.helpers:
            t.join(timeout=HEADER_TIMEOUT_S * 3)
        if self.pending_checks:
            time.sleep(max(0.0, max(due for due, _ in self.pending_checks) - time.monotonic()))
        self.check_reloads(final=True)

    def sample(self, t0):
        fds, rss = self.warren.sample()
        t = time.monotonic() - t0
        self.samples.append((f"t={t:.0f}s", t, fds, rss))
        with self.stats.lock:
            sent, unexpected = self.stats.sent, sum(self.stats.unexpected.values())
        print(f"   {self.samples[-1][0]:>8}: warren fds {fds}, RSS {rss / 1024:.1f} MiB; "
              f"{sent} requests, {unexpected} unexpected failures", flush=True)

    def reload(self, t0):
        before = self.warren.zygotes("hello") | self.warren.zygotes("flask")
        os.kill(self.warren.proc.pid, signal.SIGHUP)
        with self.stats.lock:
            self.stats.reloads += 1
        # The new generations must be up and the old ones gone within 20 s.
        self.pending_checks.append((time.monotonic() + 20, before))

    def check_reloads(self, final=False):
        """A reload is effective when none of hello's and flask's zygotes before it is left."""
        now = time.monotonic()
        for check in list(self.pending_checks):
            due, before = check
            if now < due and not final:
                continue
            after = self.warren.zygotes("hello") | self.warren.zygotes("flask")
            if before and not before & after:
                with self.stats.lock:
                    self.stats.reloads_effective += 1
            self.pending_checks.remove(check)

    def kill(self, t0):
        """SIGKILL to one worker of hello that looks idle: asleep reading its request pipe."""
        idle = [pid for pid, state in self.warren.workers("hello").items()
                if state == "S" and wchan(pid) in ("anon_pipe_read", "pipe_read", None)]
        if not idle:
            return
        with self.stats.lock:
            self.stats.kills.append(time.monotonic())
        try:
            os.kill(random.choice(idle), signal.SIGKILL)
        except ProcessLookupError:
            with self.stats.lock:
                self.stats.kills.pop()

    def slowloris(self, t0):
        for _ in range(SLOWLORIS_CLIENTS):
            self.spawn(self.slowloris_client)

    def slowloris_client(self):
        """A request head sent a byte a second: warren must close it after header_timeout_s."""
        start = time.monotonic()
        give_up = start + HEADER_TIMEOUT_S * 2
        closed = None
        with socket.create_connection(("127.0.0.1", self.warren.port), timeout=5) as s:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: ")
                while time.monotonic() < give_up:
                    readable, _, _ = select.select([s], [], [], 1.0)
                    # Whatever warren says (nothing, or a 408), it must end with a close.
                    if readable and not s.recv(4096):
                        closed = time.monotonic() - start
                        break
                    if not readable:
                        s.sendall(b"x")
            except OSError:  # reset, or a broken pipe on the next byte: closed too
                closed = time.monotonic() - start
        with self.stats.lock:
            if closed is not None and closed <= HEADER_TIMEOUT_S + 3:
                self.stats.slowloris.append(closed)
            else:
                self.stats.fail("slowloris", "still open after 20 s" if closed is None
                                else f"closed only after {closed:.1f} s")

    def drip(self, t0):
        self.spawn(self.drip_client, False)
        self.spawn(self.drip_client, True)

    def drip_client(self, to_the_end):
        """GET /drip on faulty: leave after three chunks, or read until warren cuts it."""
        start = time.monotonic()
        data, closed = b"", False
        with socket.create_connection(("127.0.0.1", self.warren.port),
                                      timeout=CLIENT_TIMEOUT_S) as s:
            try:
                s.sendall(b"GET /drip HTTP/1.1\r\nHost: faulty.localhost\r\n\r\n")
                while to_the_end or data.count(b"drop") < 3:
                    chunk = s.recv(4096)
                    if not chunk:
                        closed = True
                        break
                    data += chunk
            except OSError as e:
                closed = not isinstance(e, socket.timeout)
        took = time.monotonic() - start
        with self.stats.lock:
            if not data.startswith(b"HTTP/1.1 200"):
                self.stats.fail("faulty /drip", (data.split(b"\r\n")[0].decode(errors="replace")
                                                 or "no answer"), data)
            elif not to_the_end:
                self.stats.drips_left += 1
            elif closed and not data.endswith(b"0\r\n\r\n") and took < REQUEST_TIMEOUT_S + 5:
                self.stats.drips_cut.append(took)
            else:
                self.stats.fail("faulty /drip", f"not cut by request_timeout_s "
                                f"({'closed' if closed else 'open'} after {took:.1f} s)")


# --- report -----------------------------------------------------------------------------------

def log_summary(path):
    """Counts of warren's WARN and ERROR lines, by message (numbers blurred)."""
    levels = collections.Counter()
    messages = collections.Counter()
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    with open(path, errors="replace") as f:
        for line in f:
            line = ansi.sub("", line)
            m = re.search(r"\b(WARN|ERROR)\b (.*)", line)
            if not m:
                continue
            levels[m.group(1)] += 1
            # Drop the target and the fields that vary (pids, times, ids).
            msg = re.sub(r"\b\w+=(\"[^\"]*\"|\S+)", "", m.group(2).split(": ", 1)[-1])
            messages[f"{m.group(1)} {re.sub(r'[0-9]+', 'N', ' '.join(msg.split()))}"] += 1
    return levels, messages


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def main():
    if not os.access(WARREN, os.X_OK):
        sys.exit(f"soak: {WARREN} is missing (cargo build --release --workspace)")
    rng = random.Random(SEED)
    tmp = tempfile.mkdtemp(prefix="warren-soak-")
    warren = Warren(tmp)
    stats = Stats()
    samples = []
    print(f"soak: {DURATION:.0f} s at {RATE:.0f} req/s, {THREADS} clients, reload "
          f"{'on' if RELOAD else 'off'}, seed {SEED}; warren log: {warren.log_path}", flush=True)
    load = None
    try:
        warren.start()
        print(f"-- warren up on 127.0.0.1:{warren.port} (pid {warren.proc.pid}); "
              f"warm-up {WARMUP_S:.0f} s", flush=True)
        load = Load(warren.port, stats)
        load.run(WARMUP_S, rng, lambda: not warren.alive())
        time.sleep(1)
        samples.append(("start", 0.0, *warren.sample()))
        print(f"   {'start':>8}: warren fds {samples[-1][2]}, RSS {samples[-1][3] / 1024:.1f} MiB",
              flush=True)

        print(f"-- mixed load with faults, {DURATION:.0f} s", flush=True)
        chaos = Chaos(warren, stats, samples)
        stop = threading.Event()
        t0 = stats.t0 = time.monotonic()
        timer = threading.Thread(target=chaos.run, args=(t0, stop), daemon=True)
        timer.start()
        load.run(DURATION, rng, lambda: not warren.alive())
        stop.set()
        timer.join()
        chaos.join()
        if not warren.alive():
            status = warren.proc.returncode
            hint = " (killed by SIGHUP: no reload handler? try SOAK_RELOAD=0)" \
                if status == -signal.SIGHUP else ""
            raise RuntimeError(f"warren exited during the run ({status}){hint}; "
                               f"see {warren.log_path}")

        print(f"-- load stopped; {QUIET_S} s of quiet", flush=True)
        time.sleep(QUIET_S)
        samples.append(("end", DURATION, *warren.sample()))
        print(f"   {'end':>8}: warren fds {samples[-1][2]}, RSS {samples[-1][3] / 1024:.1f} MiB",
              flush=True)
        load.close()
        load = None
        code, took = warren.stop()
    except BaseException:
        if load:
            load.abort.set()
        warren.kill()
        print(f"soak: aborted; warren's log and config are kept in {tmp}", file=sys.stderr)
        raise

    problems = []
    (_, _, fds0, rss0), (_, _, fds1, rss1) = samples[0], samples[-1]
    unexpected = sum(stats.unexpected.values())
    if unexpected:
        problems.append(f"{unexpected} unexpected failures")
    if fds1 - fds0 > FD_GROWTH_MAX:
        problems.append(f"fds grew by {fds1 - fds0} (more than {FD_GROWTH_MAX})")
    if rss1 > rss0 * (1 + RSS_GROWTH_MAX):
        problems.append(f"RSS grew by {100 * (rss1 / rss0 - 1):.0f}% "
                        f"(more than {100 * RSS_GROWTH_MAX:.0f}%)")
    if stats.reloads_effective < stats.reloads:
        problems.append(f"{stats.reloads - stats.reloads_effective} reloads left hello's or "
                        "flask's zygote in place")
    if code != 0:
        problems.append("warren did not exit within 30 s of SIGTERM" if code is None
                        else f"warren exited with status {code} after SIGTERM")

    injected = sum(stats.injected.values())
    print(f"\n### soak: {DURATION:.0f} s, {RATE:.0f} req/s offered, {THREADS} clients, "
          f"seed {SEED}\n")
    print("| | |\n|---|---:|")
    print(f"| requests sent | {stats.sent} |")
    print(f"| 200 (body checked) | {stats.ok} ("
          + ", ".join(f"{a} {n}" for a, n in sorted(stats.ok_by_app.items())) + ") |")
    print(f"| injected failures | {injected} |")
    for kind, n in sorted(stats.injected.items()):
        print(f"| &nbsp;&nbsp;{kind} | {n} |")
    print(f"| **unexpected failures** | **{unexpected}** |")
    for app, lat in sorted(stats.latencies.items()):
        print(f"| {app}: latency of the 200s p50 / p99 / max | {1e3 * percentile(lat, 0.5):.1f} / "
              f"{1e3 * percentile(lat, 0.99):.1f} / {1e3 * max(lat):.0f} ms |")
    print(f"| generator's worst lag | {1e3 * stats.max_lag:.0f} ms |")
    print(f"| workers killed (SIGKILL to hello) | {len(stats.kills)} |")
    print(f"| reloads (SIGHUP) / zygotes replaced | {stats.reloads} / {stats.reloads_effective} |")
    sl = stats.slowloris
    print(f"| slowloris closed by warren | {len(sl)}"
          + (f", after {min(sl):.1f}–{max(sl):.1f} s |" if sl else " |"))
    dc = stats.drips_cut
    print(f"| /drip left early / cut by request_timeout_s | {stats.drips_left} / {len(dc)}"
          + (f" (after {min(dc):.1f}–{max(dc):.1f} s) |" if dc else " |"))
    print(f"| warren fds start → end | {fds0} → {fds1} ({fds1 - fds0:+d}) |")
    print(f"| warren RSS start → end | {rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB "
          f"({100 * (rss1 / rss0 - 1):+.1f}%) |")
    # Not a criterion, a hint: most of the growth is the first minutes' high-water marks.
    later = next(((label, rss) for label, t, _, rss in samples[1:-1] if t >= 120), None)
    if later:
        print(f"| warren RSS {later[0]} → end | {later[1] / 1024:.1f} → {rss1 / 1024:.1f} MiB "
              f"({100 * (rss1 / later[1] - 1):+.1f}%) |")
    print(f"| SIGTERM to exit | {took:.1f} s, status {code} |")

    print("\nwarren fds and RSS: " + ", ".join(f"{label} {fds}/{rss / 1024:.1f}"
                                               for label, _, fds, rss in samples))
    if stats.unexpected:
        print("\nunexpected failures:")
        for (what, detail), n in stats.unexpected.most_common():
            print(f"  {n:6d}  {what}: {detail}")
        print("first ones:")
        for e in stats.examples:
            print(f"  {e}")
    levels, messages = log_summary(warren.log_path)
    print(f"\nwarren log: {levels['WARN']} WARN, {levels['ERROR']} ERROR lines"
          + (", the most frequent:" if messages else ""))
    for msg, n in messages.most_common(12):
        print(f"  {n:6d}  {msg[:150]}")

    if problems:
        print(f"\nsoak: FAILED: {'; '.join(problems)}. warren's log: {warren.log_path}")
        sys.exit(1)
    print(f"\nsoak: passed (failures only where injected; fds and RSS flat). "
          f"warren's log: {warren.log_path}")


if __name__ == "__main__":
    main()
