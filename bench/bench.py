#!/usr/bin/env python3
"""Benchmark spotify-token-swap against nginx as a reverse-proxy ceiling.

Started by bench/run (which installs wrk, nginx and openssl and builds the
release binary). Everything runs on loopback and every phase is bounded:

1. a throwaway CA and a server certificate for 127.0.0.1;
2. nginx as the HTTPS mock of Spotify's token endpoint (a fixed token JSON,
   keep-alive, access log of `$pid-$connection`, the request's number on its
   connection and `$ssl_session_reused` per request, so upstream TLS
   handshakes, and resumed ones, can be counted);
3. nginx as a reverse proxy to the same mock (upstream keep-alive, TLS) —
   the ceiling reference;
4. our release binary against the same mock (SPOTIFY_CA_FILE = the CA),
   with the server's DEFAULT settings (none of WORKER_THREADS,
   MAX_CONNECTIONS_PER_CLIENT... is set; `check-config` tells the table which
   defaults this build has), started with its RLIMIT_NOFILE soft limit raised
   to the hard limit (what the new connection model does itself);
5. 200 sequential swaps (one upstream connection expected), then
   RELOADS reloads of the mock, each closing our pooled upstream connection,
   with a few swaps after each: how many new upstream connections resumed
   their TLS session;
6. wrk POSTing `code=…` to each at c=16 and c=64 for BENCH_SECS seconds
   (peak RSS and CPU per request are taken here, before 7 and 8);
7. idle connections (bench/arrivals `idle`): BENCH_HOLD_CONNS (10,000)
   keep-alive connections, one per source address (127.1.0.1 on: not
   127.0.0.1, which is a default trusted proxy exempt from the per-client
   connection cap), each sends GET /health and stays open; while they are
   open, the server's threads and RSS (/proc/PID/status), then BYSTANDER (200)
   sequential GET /health, each on a new connection from 127.0.0.1, timed;
   and how many of the held connections were still open. The server's
   keep-alive idle timeout is 5 s, so everything is measured right after
   they are opened (the table says how long opening took);
8. open-loop arrivals (bench/arrivals `arrivals`), for each of
   BENCH_ARRIVAL_RATES (100, 500, 2000 new clients per second) for
   BENCH_ARRIVAL_SECS (10 s), ours and nginx alternating: each client
   connects from the next of BENCH_SOURCES (10,000) addresses, POSTs
   `code=…` to /swap, reads the answer, stays connected idle
   BENCH_ARRIVAL_IDLE (5 s) and closes. Arrivals follow the clock whatever
   the server does; p50 / p99 / max of the 200 answers, timed from each
   client's scheduled arrival to the answer's last byte; errors by kind
   (connect, reset, closed early, non-200, no answer within
   BENCH_ARRIVAL_TIMEOUT = 10 s). BENCH_ARRIVAL_ROUNDS (3) rounds each: the
   median by p99 is shown (on this 2-core shared machine nginx's own p99 at
   one rate ranged from 1.8 to 76 ms between single 3 s rounds). Also per
   phase: server CPU per client, new upstream connections (the mock's log),
   and the kernel's listen-queue overflows (a dropped SYN costs 1 s). Between phases, a bounded wait until the server
   answers GET /health within 100 ms again;
9. a slow upstream (BENCH_SLOW_SECS, 10 s; 0 skips it): a plain-HTTP
   stand-in for Spotify on loopback that answers every token request after
   BENCH_SLOW_UPSTREAM_MS (2,000 ms), and a second server of ours (default
   settings) pointed at it; as many clients as WORKER_THREADS each swap in
   a loop, so that many swaps always wait on the upstream, while
   bench/arrivals starts a GET /health on a new connection every 20 ms
   (open loop: a late answer never delays the next probe): the probes'
   p50 / p99 / max from their scheduled start, the swaps answered, and the
   most upstream calls in flight at once.
   BENCH_ONLY=slow runs this phase alone (no nginx, no certificates).
10. HTTPS arrivals (bench/tls_arrivals.py, Python asyncio), for each of
    BENCH_TLS_RATES (20, 100 new TLS clients per second) for BENCH_TLS_SECS
    (10 s): a second instance of our server serving HTTPS itself
    (TLS_CERT_FILE / TLS_KEY_FILE) and nginx, both with the same self-signed
    RSA-2048 certificate for 127.0.0.1; each client opens a new TLS
    connection, sends one GET /health, reads the answer and closes: p50 / p99
    / max from the scheduled arrival, handshake included, and errors.
    BENCH_TLS_ROUNDS (3) rounds each, ours and nginx alternating: the median
    by p99 is shown. `BENCH_ONLY=tls` runs this phase alone.
11. several apps (BENCH_APPS_ROUNDS, 5; 0 skips it): two more servers of
    ours against the same mock, default settings, one with the single-app
    settings and one with BENCH_APPS (25) apps in SPOTIFY_APPS; wrk c=64
    POSTs `code=…&client_id=…` to /swap on each, the 25-app server's
    requests naming each of its apps in turn (so every request is a lookup
    of its app by client id, and every app's credentials and cipher are
    used), the one-app server's naming its own app (which it ignores); the
    two alternate, BENCH_SECS each, and the table shows each one's median
    req/s and CPU per request, and their ratio.
    BENCH_ONLY=apps runs this phase alone (the mock, no ceiling).

Prints one table and writes it as Markdown and JSON under bench/results/.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(os.environ.get("STS_BIN", ROOT / "target/release/spotify-token-swap"))
SECS = int(os.environ.get("BENCH_SECS", "10"))
# Each load phase runs this many rounds (ours and nginx alternating); the
# table shows the median round by req/s, and the spread of all rounds.
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
CONNECTIONS = [16, 64]
ARRIVALS = pathlib.Path(os.environ.get(
    "BENCH_ARRIVALS_BIN", ROOT / "bench/arrivals/target/release/arrivals"))
# Open-loop arrivals: new clients per second, each rate for ARRIVAL_SECS.
ARRIVAL_RATES = [int(r) for r in os.environ.get("BENCH_ARRIVAL_RATES", "100,500,2000").split(",") if r]
ARRIVAL_SECS = float(os.environ.get("BENCH_ARRIVAL_SECS", "10"))
ARRIVAL_IDLE = float(os.environ.get("BENCH_ARRIVAL_IDLE", "5"))
ARRIVAL_TIMEOUT = float(os.environ.get("BENCH_ARRIVAL_TIMEOUT", "10"))
# Rounds per rate and server (ours and nginx alternating); the table shows
# the round with the median p99, and the errors of all rounds.
ARRIVAL_ROUNDS = max(1, int(os.environ.get("BENCH_ARRIVAL_ROUNDS", "3")))
# HTTPS arrivals: new TLS clients per second, each rate for TLS_SECS, and
# rounds per rate and server (the round with the median p99 is shown).
TLS_ARRIVALS = ROOT / "bench/tls_arrivals.py"
TLS_RATES = [float(r) for r in os.environ.get("BENCH_TLS_RATES", "20,100").split(",") if r]
TLS_SECS = float(os.environ.get("BENCH_TLS_SECS", "10"))
TLS_ROUNDS = max(1, int(os.environ.get("BENCH_TLS_ROUNDS", "3")))
# New TLS clients per server before the HTTPS rounds, not counted (the
# first handshakes of a process load the key and warm its caches).
TLS_WARMUP_CLIENTS = 5
# Client source addresses: SOURCES consecutive addresses from 127.1.0.1
# (not 127.0.0.1, a default trusted proxy exempt from the per-client
# connection cap), so each address holds one or two connections at a time,
# as real apps do, and a per-address cap of 2 or more never applies.
SOURCES = int(os.environ.get("BENCH_SOURCES", "10000"))
SRC_BASE = "127.1.0.1"
# Idle keep-alive connections held open, and the bystander's requests.
HOLD_CONNS = int(os.environ.get("BENCH_HOLD_CONNS", "10000"))
BYSTANDER = int(os.environ.get("BENCH_BYSTANDER", "200"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN_JSON = (
    '{"access_token":"BQD-bench-access-token-0123456789abcdefghijklmnopqrstuvwxyz",'
    '"token_type":"Bearer","expires_in":3600,'
    '"refresh_token":"AQD-bench-refresh-token-0123456789abcdefghijklmnopqrstuvwxyz",'
    '"scope":"user-read-private user-read-email"}'
)
# What every wrk script ends with: its summary as one JSON line.
WRK_DONE = r"""done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = "code=bench-authorization-code"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
""" + WRK_DONE


IDLE_SECS = int(os.environ.get("BENCH_IDLE_SECS", "60"))
# The slow-upstream phase: its length (0 skips it), the upstream's delay,
# and how often a /health probe starts.
SLOW_SECS = float(os.environ.get("BENCH_SLOW_SECS", "10"))
SLOW_UPSTREAM_MS = int(os.environ.get("BENCH_SLOW_UPSTREAM_MS", "2000"))
SLOW_PROBE_EVERY = 0.02
DELAY_MS = int(os.environ.get("BENCH_DELAY_MS", "20"))
# The several-apps phase: how many apps the second server has, and how many
# rounds of each server (alternating); 0 skips it.
APPS = int(os.environ.get("BENCH_APPS", "25"))
APPS_ROUNDS = int(os.environ.get("BENCH_APPS_ROUNDS", "5"))
APPS_CONNECTIONS = 64
# wrk's script for the phase: POST /swap naming the next app by client_id.
APPS_WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local ids = {IDS}
local i = 0
request = function()
  i = i % #ids + 1
  return wrk.format(nil, nil, nil, "code=bench-authorization-code&client_id=" .. ids[i])
end
""" + WRK_DONE
# Reloads of the mock after the sequential swaps, and swaps after each.
RELOADS = 3
SWAPS_PER_RELOAD = 2


class DelayProxy:
    """A TCP proxy on loopback that delays every chunk by DELAY_MS in each
    direction, standing in for the network distance to Spotify."""

    def __init__(self, target_port, delay_s):
        import threading
        self.target_port = target_port
        self.delay_s = delay_s
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            time.sleep(self.delay_s)  # SYN/ACK distance
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.sock.close()


def timed_swap_ms(port):
    t0 = time.monotonic()
    ok = swap_once(port, timeout=10)
    return (time.monotonic() - t0) * 1000 if ok else float("nan")


def idle_latency(env, mock_port, our_port):
    """p50 of warm swaps and the latency of one swap after IDLE_SECS idle,
    with DELAY_MS added each way between us and the mock."""
    proxy = DelayProxy(mock_port, DELAY_MS / 1000)
    env = dict(env, SPOTIFY_ACCOUNTS_URL=f"https://127.0.0.1:{proxy.port}")
    proc = subprocess.Popen([str(BIN)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(our_port)
        timed_swap_ms(our_port)  # first connection
        warm = statistics.median(timed_swap_ms(our_port) for _ in range(10))
        conns_before = proxy.connections
        time.sleep(IDLE_SECS)
        after_idle = timed_swap_ms(our_port)
        return {
            "delay_ms_each_way": DELAY_MS,
            "idle_secs": IDLE_SECS,
            "warm_p50_ms": round(warm, 1),
            "after_idle_ms": round(after_idle, 1),
            "new_upstream_connections_after_idle": proxy.connections - conns_before,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proxy.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_certs(d):
    ext = d / "srv.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem",
         "-days", "2", "-subj", "/CN=bench throwaway CA"])
    run(["openssl", "req", *ec, "-keyout", d / "srv.key", "-out", d / "srv.csr",
         "-subj", "/CN=127.0.0.1"])
    run(["openssl", "x509", "-req", "-in", d / "srv.csr", "-CA", d / "ca.pem",
         "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "srv.pem", "-days", "2",
         "-extfile", ext])


def make_rsa_cert(d):
    """A self-signed RSA-2048 certificate for 127.0.0.1 (rsa.pem, rsa.key):
    what an operator trying built-in HTTPS makes first. Served by our HTTPS
    instance and by nginx alike; the clients trust it as their CA."""
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", d / "rsa.key", "-out", d / "rsa.pem", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])


def hard_nofile():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def start_nginx(d, name, http_block, workers, connections=8192):
    prefix = d / name
    prefix.mkdir()
    (prefix / "logs").mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes {workers};\nuser root;\n"
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        f"worker_rlimit_nofile {min(2 * connections + 1024, hard_nofile())};\n"
        f"events {{ worker_connections {connections}; }}\n"
        f"http {{\n client_body_temp_path {prefix}/body;\n proxy_temp_path {prefix}/proxy;\n"
        f" fastcgi_temp_path {prefix}/f;\n uwsgi_temp_path {prefix}/u;\n scgi_temp_path {prefix}/s;\n"
        f" keepalive_requests 10000000;\n keepalive_timeout 75s;\n{http_block}\n}}\n"
    )
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on port {port}")


def pids_of(root_pid):
    """The process and its children (nginx master + workers)."""
    pids = [root_pid]
    try:
        children = pathlib.Path(f"/proc/{root_pid}/task/{root_pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def cpu_secs(root_pid):
    total = 0
    for pid in pids_of(root_pid):
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def status_kb(root_pid, key):
    total = 0
    for pid in pids_of(root_pid):
        try:
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def threads(root_pid):
    return sum(status_kb(p, "Threads") for p in [root_pid])


def raise_nofile():
    """preexec_fn: RLIMIT_NOFILE soft limit = hard limit, what the new
    connection model does itself at start (a no-op for it)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_of(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def effective_settings(env):
    """The server's own defaults, as `check-config` prints them (whatever
    this build's defaults are; keys it does not have are left out)."""
    keys = ("WORKER_THREADS", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_CLIENT",
            "TRUSTED_PROXIES", "RATE_LIMIT_PER_MINUTE", "LOG_LEVEL")
    out = subprocess.run([str(BIN), "check-config"], env=env, capture_output=True,
                         text=True, timeout=20)
    found = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in keys:
            found[key.strip()] = value.strip()
    return found


def arrivals_run(port, rate):
    """One open-loop phase (bench/arrivals): `rate` new keep-alive clients
    per second for ARRIVAL_SECS, each one POST /swap then ARRIVAL_IDLE s idle."""
    cmd = [str(ARRIVALS), "arrivals", "--port", str(port), "--rate", str(rate),
           "--secs", str(ARRIVAL_SECS), "--idle", str(ARRIVAL_IDLE),
           "--timeout", str(ARRIVAL_TIMEOUT), "--path", "/swap",
           "--body", "code=bench-authorization-code",
           "--sources", str(SOURCES), "--src-base", SRC_BASE]
    limit = ARRIVAL_SECS + ARRIVAL_TIMEOUT + ARRIVAL_IDLE + 60
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tls_arrivals_run(port, rate, cafile, secs):
    """One open-loop HTTPS phase (bench/tls_arrivals.py): `rate` new TLS
    clients per second for `secs`, each one GET /health."""
    cmd = [sys.executable, str(TLS_ARRIVALS), "--port", str(port), "--cafile", str(cafile),
           "--rate", str(rate), "--secs", str(secs), "--timeout", str(ARRIVAL_TIMEOUT),
           "--path", "/health", "--sources", str(SOURCES), "--src-base", SRC_BASE]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         timeout=secs + ARRIVAL_TIMEOUT + 60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tls_arrivals_phase(d, env, nginx_pid, nginx_port):
    """HTTPS arrivals at each of TLS_RATES: a second instance of our server
    serving HTTPS itself with rsa.pem, and nginx serving the same
    certificate, ours and nginx alternating, TLS_ROUNDS rounds each."""
    port = free_port()
    tls_env = dict(env, LISTEN_ADDR=f"127.0.0.1:{port}",
                   TLS_CERT_FILE=str(d / "rsa.pem"), TLS_KEY_FILE=str(d / "rsa.key"))
    proc = subprocess.Popen([str(BIN)], env=tls_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    try:
        wait_port(port)
        servers = (("ours", proc.pid, port), ("nginx", nginx_pid, nginx_port))
        for _, _, p in servers:
            tls_arrivals_run(p, TLS_WARMUP_CLIENTS, d / "rsa.pem", 1)
        rows = []
        for rate in TLS_RATES:
            rounds = {key: [] for key, _, _ in servers}
            for _ in range(TLS_ROUNDS):
                for key, pid, p in servers:
                    before_cpu = cpu_secs(pid)
                    result = tls_arrivals_run(p, rate, d / "rsa.pem", TLS_SECS)
                    result["server"] = key
                    result["cpu_s"] = round(cpu_secs(pid) - before_cpu, 2)
                    rounds[key].append(result)
            rows += [median_tls_arrivals(r) for r in rounds.values()]
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def listen_overflows():
    """The kernel's count of connections dropped because a listen queue was
    full (TcpExt ListenOverflows; machine-wide, every listener): a dropped
    SYN is retried after 1 s."""
    try:
        lines = pathlib.Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return 0


def settle(port, timeout=30.0):
    """After an arrivals phase: wait (bounded) until GET /health on a new
    connection is answered within 100 ms, so one phase's backlog does not
    land in the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200") and time.monotonic() - t0 < 0.1:
                time.sleep(0.5)
                return round(time.monotonic() - t0, 3)
        except OSError:
            pass
        time.sleep(0.2)
    return None


def hold_run(pid, port):
    """HOLD_CONNS idle keep-alive connections (bench/arrivals idle): each
    sends GET /health and stays open. While they are open: the server's
    threads and RSS, and BYSTANDER sequential GET /health on new connections."""
    before = {"rss_kib": status_kb(pid, "VmRSS"), "threads": status_kb(pid, "Threads")}
    cmd = [str(ARRIVALS), "idle", "--port", str(port), "--conns", str(HOLD_CONNS),
           "--bystander", str(BYSTANDER), "--sources", str(SOURCES), "--src-base", SRC_BASE]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holding = json.loads(proc.stdout.readline())
        during = {"rss_kib": status_kb(pid, "VmRSS"), "threads": status_kb(pid, "Threads")}
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result.update(holding=holding, before=before, during=during)
    return result


def swap_once(port, timeout=2.0):
    body = b"code=bench-authorization-code"
    req = (b"POST /swap HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b" ", 2)[1] == b"200"


def wrk(port, connections, d, text=WRK_SCRIPT, name="post.lua"):
    script = d / name
    script.write_text(text)
    out = run(["wrk", "-t2", f"-c{connections}", f"-d{SECS}s", "--timeout", "5s",
               "-s", str(script), f"http://127.0.0.1:{port}/swap"]).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise RuntimeError("wrk printed no summary:\n" + out)


def upstream_connections(log, start_line):
    lines = log.read_text().splitlines()[start_line:]
    conns = {line.split()[0] for line in lines if line.strip()}
    return len(lines), len(conns)


def upstream_handshakes(log, start_line):
    """Requests, new connections (first request logged) and resumed TLS
    sessions among them, in the mock's log from start_line on."""
    lines = [line.split() for line in log.read_text().splitlines()[start_line:] if line.strip()]
    new = [fields for fields in lines if fields[1] == "1"]
    resumed = [fields for fields in new if fields[2] == "r"]
    return len(lines), len(new), len(resumed)


def reload_mock(mock):
    """SIGHUP to the mock's nginx master: new workers take over, the old ones
    close their idle keep-alive connections (our pooled one among them) and
    exit. Returns once they are gone."""
    old = set(pids_of(mock.pid)) - {mock.pid}
    os.kill(mock.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        workers = set(pids_of(mock.pid)) - {mock.pid}
        if workers and not workers & old:
            return
        time.sleep(0.01)
    raise RuntimeError("the mock's old nginx workers were still running 10 s after a reload")


def after_mock_close(mock, our_port, mock_log):
    """RELOADS times: the mock closes our pooled upstream connection, then
    SWAPS_PER_RELOAD swaps. Each reload should cost one new connection, and
    its handshake should resume the TLS session."""
    before = log_lines(mock_log)
    for _ in range(RELOADS):
        reload_mock(mock)
        for _ in range(SWAPS_PER_RELOAD):
            assert swap_once(our_port)
    requests, new, resumed = upstream_handshakes(mock_log, before)
    return {
        "reloads": RELOADS,
        "swaps": RELOADS * SWAPS_PER_RELOAD,
        "upstream_requests": requests,
        "new_upstream_connections": new,
        "resumed": resumed,
    }


def log_lines(log):
    try:
        return len(log.read_text().splitlines())
    except OSError:
        return 0


def load(name, pid, port, connections, d, mock_log):
    # Warm up (connections to the mock, caches), then measure.
    run(["wrk", "-t1", "-c4", "-d1s", "-s", str(d / "post.lua"), f"http://127.0.0.1:{port}/swap"])
    before_cpu = cpu_secs(pid)
    before_log = log_lines(mock_log)
    result = wrk(port, connections, d)
    cpu = cpu_secs(pid) - before_cpu
    upstream_requests, upstream_conns = upstream_connections(mock_log, before_log)
    n = max(result["requests"], 1)
    return {
        "server": name,
        "connections": connections,
        "req_per_sec": round(result["requests"] / (result["duration_us"] / 1e6)),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "non2xx": result["non2xx"],
        "socket_errors": result["socket_errors"],
        "cpu_us_per_req": round(cpu * 1e6 / n, 1),
        "rss_peak_kib": status_kb(pid, "VmHWM"),
        "threads": threads(pid),
        "upstream_handshakes_per_1000": round(upstream_conns * 1000 / max(upstream_requests, 1), 2),
    }


def time_to_first_swap(env, port, rounds=5):
    samples = []
    for _ in range(rounds):
        t0 = time.monotonic()
        proc = subprocess.Popen([str(BIN)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        ok = False
        try:
            while time.monotonic() - t0 < 5:
                try:
                    if swap_once(port):
                        ok = True
                        break
                except OSError:
                    time.sleep(0.0005)
            samples.append((time.monotonic() - t0) * 1000 if ok else float("nan"))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return round(statistics.median(samples), 1)


class SlowUpstream:
    """A plain-HTTP stand-in for Spotify's token endpoint on loopback that
    answers each POST after `delay_s` (keep-alive, a thread per connection),
    counting the calls in flight and the most at once."""

    def __init__(self, delay_s):
        import http.server
        import threading
        outer = self
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.calls += 1
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay_s)
                    self._answer(TOKEN_JSON.encode())
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def do_HEAD(self):
                # The server's keep-warm request: answered at once.
                self._answer(b"")

            def _answer(self, body):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def slow_upstream_run():
    """Phase 9: WORKER_THREADS clients swapping in a loop against an
    upstream that takes SLOW_UPSTREAM_MS per call, on a server of ours with
    default settings, while bench/arrivals starts a GET /health on a new
    connection every SLOW_PROBE_EVERY (open loop, from 127.0.0.1)."""
    import threading
    upstream = SlowUpstream(SLOW_UPSTREAM_MS / 1000)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SPOTIFY_CLIENT_ID": "bench-client",
        "SPOTIFY_CLIENT_SECRET": "bench-secret",
        "SPOTIFY_REDIRECT_URI": "bench://callback",
        "SPOTIFY_ACCOUNTS_URL": f"http://127.0.0.1:{upstream.port}",
        "ENCRYPTION_SECRET": "bench-encryption-secret-0123456789abcdef",
        "LISTEN_ADDR": f"127.0.0.1:{port}",
    }
    settings = effective_settings(env)
    workers = int(settings.get("WORKER_THREADS", "32"))
    proc = subprocess.Popen([str(BIN)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    stop = threading.Event()
    # (when answered, whether 200), appended from the swappers' threads.
    swaps = []

    def swapper():
        while not stop.is_set():
            try:
                ok = swap_once(port, timeout=SLOW_UPSTREAM_MS / 1000 * 4 + 30)
            except (OSError, IndexError):
                ok = False
            swaps.append((time.monotonic(), ok))

    try:
        wait_port(port)
        swappers = [threading.Thread(target=swapper, daemon=True) for _ in range(workers)]
        for t in swappers:
            t.start()
        # Every swap has reached the upstream (or waits for a slot).
        time.sleep(min(1.0, SLOW_UPSTREAM_MS / 2000))
        start = time.monotonic()
        cmd = [str(ARRIVALS), "arrivals", "--port", str(port),
               "--rate", str(1 / SLOW_PROBE_EVERY), "--secs", str(SLOW_SECS),
               "--idle", "0", "--timeout", "10", "--path", "/health"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SLOW_SECS + 60,
                             check=True)
        elapsed = time.monotonic() - start
        probes = json.loads(out.stdout.strip().splitlines()[-1])
        stop.set()
        for t in swappers:
            t.join(timeout=SLOW_UPSTREAM_MS / 1000 * 4 + 60)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
        upstream.close()
    during = [ok for at, ok in swaps if start <= at <= start + elapsed]
    return {
        "settings": settings,
        "workers": workers,
        "upstream_ms": SLOW_UPSTREAM_MS,
        "secs": SLOW_SECS,
        "probes": probes["clients"],
        "probes_failed": probes["errors_total"],
        "health_p50_ms": probes["p50_ms"],
        "health_p99_ms": probes["p99_ms"],
        "health_max_ms": probes["max_ms"],
        "probe_lag_p99_ms": probes["lag_p99_ms"],
        "swaps_ok": sum(ok for _, ok in swaps),
        "swaps_failed": sum(not ok for _, ok in swaps),
        "swaps_per_sec_while_probed": round(len(during) / elapsed, 1),
        "upstream_calls": upstream.calls,
        "most_upstream_in_flight": upstream.most_in_flight,
    }


def apps_env(base, port, names):
    """A server's environment: the single-app settings without `names`,
    else SPOTIFY_APPS and each app's own."""
    env = dict(base, LISTEN_ADDR=f"127.0.0.1:{port}")
    if not names:
        env.update(SPOTIFY_CLIENT_ID="bench-client", SPOTIFY_CLIENT_SECRET="bench-secret",
                   SPOTIFY_REDIRECT_URI="bench://callback")
        return env
    env["SPOTIFY_APPS"] = ",".join(names)
    for name in names:
        var = f"SPOTIFY_APP_{name.upper()}_"
        env[var + "CLIENT_ID"] = f"bench-client-{name}"
        env[var + "CLIENT_SECRET"] = f"bench-secret-{name}"
        env[var + "REDIRECT_URI"] = f"bench-{name}://callback"
    return env


def apps_run(d, mock_port):
    """Phase 10: wrk c=64 on /swap of a one-app server and of a server with
    APPS apps (every request naming the next app by client_id), against the
    HTTPS mock, alternating, APPS_ROUNDS rounds each."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SPOTIFY_ACCOUNTS_URL": f"https://127.0.0.1:{mock_port}",
        "SPOTIFY_CA_FILE": str(d / "ca.pem"),
        "ENCRYPTION_SECRET": "bench-encryption-secret-0123456789abcdef",
    }
    names = [f"app{i:02}" for i in range(1, APPS + 1)]
    servers = {}
    for key, apps in (("one", []), ("many", names)):
        port = free_port()
        ids = [f"bench-client-{n}" for n in apps] or ["bench-client"]
        script = APPS_WRK_SCRIPT.replace("{IDS}", "{" + ",".join(f'"{i}"' for i in ids) + "}")
        proc = subprocess.Popen([str(BIN)], env=apps_env(base, port, apps),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=raise_nofile)
        servers[key] = {"proc": proc, "port": port, "script": script, "rounds": []}
    try:
        # Warm up at the measured concurrency, so each server's pool of
        # upstream connections is full before its first round.
        for key, srv in servers.items():
            wait_port(srv["port"])
            (d / f"apps-{key}.lua").write_text(srv["script"])
            run(["wrk", "-t2", f"-c{APPS_CONNECTIONS}", "-d2s", "-s",
                 str(d / f"apps-{key}.lua"), f"http://127.0.0.1:{srv['port']}/swap"])
        for i in range(APPS_ROUNDS):
            order = ["one", "many"] if i % 2 == 0 else ["many", "one"]
            for key in order:
                srv = servers[key]
                before = cpu_secs(srv["proc"].pid)
                result = wrk(srv["port"], APPS_CONNECTIONS, d, srv["script"], f"apps-{key}.lua")
                cpu = cpu_secs(srv["proc"].pid) - before
                srv["rounds"].append({
                    "req_per_sec": round(result["requests"] / (result["duration_us"] / 1e6)),
                    "p99_ms": round(result["p99_us"] / 1000, 2),
                    "cpu_us_per_req": round(cpu * 1e6 / max(result["requests"], 1), 1),
                    "non2xx": result["non2xx"],
                    "socket_errors": result["socket_errors"],
                })
    finally:
        for srv in servers.values():
            srv["proc"].terminate()
            srv["proc"].wait(timeout=30)
    out = {"apps": APPS, "rounds": APPS_ROUNDS, "secs": SECS, "connections": APPS_CONNECTIONS}
    for key, srv in servers.items():
        rounds = srv["rounds"]
        out[key] = {
            "median_req_per_sec": statistics.median(r["req_per_sec"] for r in rounds),
            "median_cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in rounds),
            "median_p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "rounds_req_per_sec": [r["req_per_sec"] for r in rounds],
            "rounds_cpu_us_per_req": [r["cpu_us_per_req"] for r in rounds],
            "non2xx": sum(r["non2xx"] for r in rounds),
            "socket_errors": sum(r["socket_errors"] for r in rounds),
        }
    out["many_over_one"] = round(
        out["many"]["median_req_per_sec"] / max(out["one"]["median_req_per_sec"], 1), 3)
    # Each round's two runs are next to each other in time, so their ratio
    # carries less of the machine's changing load than the medians' ratio.
    pairs = list(zip(servers["one"]["rounds"], servers["many"]["rounds"]))
    out["round_ratio_median_req_per_sec"] = round(statistics.median(
        m["req_per_sec"] / max(o["req_per_sec"], 1) for o, m in pairs), 3)
    out["round_ratio_median_cpu_us_per_req"] = round(statistics.median(
        m["cpu_us_per_req"] / max(o["cpu_us_per_req"], 0.1) for o, m in pairs), 3)
    return out


def render_apps(s):
    apps = s.get("apps")
    if not apps:
        return []
    out = [
        "",
        f"Several apps: wrk c={apps['connections']} POST /swap for {apps['secs']} s, "
        f"{apps['rounds']} rounds of each server alternating; the {apps['apps']}-app server's "
        f"requests name each of its apps in turn by client_id:",
        "",
        "| server | median req/s | every round req/s | median CPU µs/req | median p99 ms "
        "| non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in (("one", "1 app"), ("many", f"{apps['apps']} apps")):
        r = apps[key]
        out.append(
            f"| {label} | {r['median_req_per_sec']:g} | "
            f"{', '.join(str(v) for v in r['rounds_req_per_sec'])} | "
            f"{r['median_cpu_us_per_req']:g} | {r['median_p99_ms']:g} | {r['non2xx']} | "
            f"{r['socket_errors']} |"
        )
    out += [
        "",
        f"- {apps['apps']} apps / 1 app: median req/s {apps['many_over_one']}; median of "
        f"each round's ratio: req/s {apps['round_ratio_median_req_per_sec']}, CPU per request "
        f"{apps['round_ratio_median_cpu_us_per_req']}",
    ]
    return out


def render_slow(s):
    slow = s.get("slow_upstream")
    if not slow:
        return []
    return [
        "",
        f"Slow upstream: {slow['workers']} clients (WORKER_THREADS) each swap in a loop "
        f"against an upstream that answers after {slow['upstream_ms']} ms, while bench/arrivals "
        f"starts a GET /health on a new connection every {SLOW_PROBE_EVERY * 1000:g} ms for "
        f"{slow['secs']:g} s (latency from each probe's scheduled start; generator lag p99 "
        f"{ms_or_dash(slow['probe_lag_p99_ms'])} ms):",
        "",
        "| /health probes | failed | p50 ms | p99 ms | max ms | swaps 200 | swaps failed "
        "| swaps/s while probed | most upstream calls at once |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {slow['probes']} | {slow['probes_failed']} | {ms_or_dash(slow['health_p50_ms'])} | "
        f"{ms_or_dash(slow['health_p99_ms'])} | {ms_or_dash(slow['health_max_ms'])} | "
        f"{slow['swaps_ok']} | {slow['swaps_failed']} | {slow['swaps_per_sec_while_probed']} | "
        f"{slow['most_upstream_in_flight']} |",
    ]


def main():
    if not BIN.exists():
        sys.exit(f"{BIN} not found: run bench/run (it builds the release binary)")
    if (HOLD_CONNS > 0 or ARRIVAL_RATES or SLOW_SECS > 0) and not ARRIVALS.exists():
        sys.exit(f"{ARRIVALS} not found: run bench/run (it builds bench/arrivals)")
    if os.environ.get("BENCH_ONLY") == "slow":
        slow = slow_upstream_run()
        print("\n".join(render_slow({"slow_upstream": slow})))
        print(json.dumps(slow))
        return
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    d = pathlib.Path(tempfile.mkdtemp(prefix="sts-bench-"))
    load_start = os.getloadavg()
    t_start = time.monotonic()
    procs = []
    try:
        make_certs(d)
        make_rsa_cert(d)
        mock_port, proxy_port, our_port = free_port(), free_port(), free_port()
        tls_proxy_port = free_port()
        mock_log = d / "mock" / "logs" / "access.log"
        # A fixed session-ticket key, so tickets the mock issued before a
        # reload still resume after it (without one, nginx 1.22 makes new
        # keys at every reload, and no session could resume across it).
        (d / "ticket.key").write_bytes(os.urandom(80))
        mock = start_nginx(d, "mock", f"""
 log_format conn '$pid-$connection $connection_requests $ssl_session_reused';
 access_log {mock_log} conn;
 ssl_session_cache shared:SSL:1m;
 ssl_session_ticket_key {d}/ticket.key;
 server {{
  listen 127.0.0.1:{mock_port} ssl backlog=4096;
  ssl_certificate {d}/srv.pem;
  ssl_certificate_key {d}/srv.key;
  location = /api/token {{ default_type application/json; return 200 '{TOKEN_JSON}'; }}
 }}""", workers=1)
        procs.append(mock)
        wait_port(mock_port)
        if os.environ.get("BENCH_ONLY") == "apps":
            apps = apps_run(d, mock_port)
            print("\n".join(render_apps({"apps": apps})))
            print(json.dumps(apps))
            return

        ceiling = start_nginx(d, "ceiling", f"""
 access_log off;
 upstream spotify {{ server 127.0.0.1:{mock_port}; keepalive 64; }}
 server {{
  listen 127.0.0.1:{proxy_port} backlog=4096;
  location = /health {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
  location = /swap {{
   proxy_pass https://spotify/api/token;
   proxy_http_version 1.1;
   proxy_set_header Connection "";
   proxy_set_header Authorization "Basic YmVuY2gtY2xpZW50OmJlbmNoLXNlY3JldA==";
   proxy_ssl_session_reuse on;
   proxy_ssl_verify on;
   proxy_ssl_trusted_certificate {d}/ca.pem;
   proxy_ssl_name 127.0.0.1;
  }}
 }}
 server {{
  listen 127.0.0.1:{tls_proxy_port} ssl backlog=4096;
  ssl_certificate {d}/rsa.pem;
  ssl_certificate_key {d}/rsa.key;
  location = /health {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
 }}""", workers="auto", connections=16384)
        procs.append(ceiling)
        wait_port(proxy_port)

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SPOTIFY_CLIENT_ID": "bench-client",
            "SPOTIFY_CLIENT_SECRET": "bench-secret",
            "SPOTIFY_REDIRECT_URI": "bench://callback",
            "SPOTIFY_ACCOUNTS_URL": f"https://127.0.0.1:{mock_port}",
            "SPOTIFY_CA_FILE": str(d / "ca.pem"),
            "ENCRYPTION_SECRET": "bench-encryption-secret-0123456789abcdef",
            "LISTEN_ADDR": f"127.0.0.1:{our_port}",
        }
        settings = effective_settings(env)
        if os.environ.get("BENCH_ONLY") == "tls":
            only = {"tls_arrivals": tls_arrivals_phase(d, env, ceiling.pid, tls_proxy_port),
                    "tls_config": tls_config()}
            print("\n".join(render_tls_arrivals(only)))
            print(json.dumps(only["tls_arrivals"]))
            return
        first_swap_ms = time_to_first_swap(env, our_port)
        idle = idle_latency(env, mock_port, our_port) if IDLE_SECS > 0 else None
        if os.environ.get("BENCH_ONLY") == "idle":
            print(json.dumps(idle))
            return

        ours_log = open(d / "ours.stderr", "w")
        ours = subprocess.Popen([str(BIN)], env=env, stdout=subprocess.DEVNULL, stderr=ours_log,
                                preexec_fn=raise_nofile)
        procs.append(ours)
        wait_port(our_port)
        time.sleep(0.3)
        rss_idle_kib = status_kb(ours.pid, "VmRSS")
        threads_idle = threads(ours.pid)
        ceiling_rss_idle = status_kb(ceiling.pid, "VmRSS")

        # Connection reuse: sequential swaps, then count mock connections.
        before = log_lines(mock_log)
        sequential = 200
        for _ in range(sequential):
            assert swap_once(our_port)
        seq_requests, seq_conns = upstream_connections(mock_log, before)

        # Session resumption: the mock closes the pooled connection.
        resumption = after_mock_close(mock, our_port, mock_log)

        rows = []
        for c in CONNECTIONS:
            rounds = {"ours": [], "nginx": []}
            for _ in range(ROUNDS):
                rounds["ours"].append(load("spotify-token-swap", ours.pid, our_port, c, d, mock_log))
                rounds["nginx"].append(load("nginx (ceiling)", ceiling.pid, proxy_port, c, d, mock_log))
            rows += [median_round(rounds["ours"]), median_round(rounds["nginx"])]
        for r in rows:
            r["rss_idle_kib"] = rss_idle_kib if r["server"] == "spotify-token-swap" else ceiling_rss_idle

        # After the wrk phases, so their peak RSS is theirs alone: idle
        # connections held open, then the open-loop arrivals.
        servers = (("ours", ours.pid, our_port), ("nginx", ceiling.pid, proxy_port))
        hold = {}
        if HOLD_CONNS > 0:
            for key, pid, port in servers:
                hold[key] = hold_run(pid, port)
                hold[key]["settle_s"] = settle(port)
        arrivals = []
        for rate in ARRIVAL_RATES:
            rounds = {key: [] for key, _, _ in servers}
            for _ in range(ARRIVAL_ROUNDS):
                for key, pid, port in servers:
                    before_cpu = cpu_secs(pid)
                    before_log = log_lines(mock_log)
                    before_overflows = listen_overflows()
                    result = arrivals_run(port, rate)
                    result["listen_overflows"] = listen_overflows() - before_overflows
                    result["server"] = key
                    result["cpu_s"] = round(cpu_secs(pid) - before_cpu, 2)
                    (result["upstream_requests"], result["upstream_connections"],
                     _) = upstream_handshakes(mock_log, before_log)
                    result["settle_s"] = settle(port)
                    rounds[key].append(result)
            arrivals += [median_arrivals(r) for r in rounds.values()]
        tls_arrivals = (tls_arrivals_phase(d, env, ceiling.pid, tls_proxy_port)
                        if TLS_RATES else [])
        threads_after = threads(ours.pid)
        rss_peak_after_kib = status_kb(ours.pid, "VmHWM")
        slow = slow_upstream_run() if SLOW_SECS > 0 else None
        apps = apps_run(d, mock_port) if APPS_ROUNDS > 0 else None

        size = BIN.stat().st_size
        stripped = d / "stripped"
        shutil.copy(BIN, stripped)
        subprocess.run(["strip", str(stripped)], check=False)
        summary = {
            "machine": f"{os.cpu_count()} cores, {socket.gethostname()}",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "bench_secs": SECS,
            "rounds": ROUNDS,
            "settings": settings,
            "server_nofile": nofile_of(ours.pid),
            "ceiling_nofile": nofile_of(pids_of(ceiling.pid)[-1]),
            "binary_bytes": size,
            "binary_stripped_bytes": stripped.stat().st_size,
            "static_binary_bytes": static_binaries(),
            "exec_to_first_swap_ms": first_swap_ms,
            "rss_idle_kib": rss_idle_kib,
            "threads_idle": threads_idle,
            "sequential_swaps": sequential,
            "sequential_upstream_connections": seq_conns,
            "sequential_upstream_requests": seq_requests,
            "after_mock_close": resumption,
            "rows": rows,
            "after_idle": idle,
            "hold": hold,
            "arrivals": arrivals,
            "slow_upstream": slow,
            "apps": apps,
            "arrivals_config": {
                "secs": ARRIVAL_SECS, "idle_secs": ARRIVAL_IDLE,
                "timeout_secs": ARRIVAL_TIMEOUT, "sources": SOURCES, "src_base": SRC_BASE,
                "rounds": ARRIVAL_ROUNDS,
            },
            "tls_arrivals": tls_arrivals,
            "tls_config": tls_config(),
            "threads_after_all": threads_after,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "run_secs": round(time.monotonic() - t_start),
            "rss_peak_after_all_kib": rss_peak_after_kib,
        }
        ratios = {}
        for c in CONNECTIONS:
            ours_r = next(r for r in rows if r["server"] == "spotify-token-swap" and r["connections"] == c)
            ngx_r = next(r for r in rows if r["server"] != "spotify-token-swap" and r["connections"] == c)
            ratios[f"c{c}"] = {
                "throughput": round(ours_r["req_per_sec"] / max(ngx_r["req_per_sec"], 1), 2),
                "cpu_per_req": round(ours_r["cpu_us_per_req"] / max(ngx_r["cpu_us_per_req"], 0.1), 2),
            }
        summary["ours_over_nginx"] = ratios

        md = render_markdown(summary)
        print(md)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (results_dir / f"bench-{stamp}.md").write_text(md)
        (results_dir / f"bench-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
        (results_dir / "latest.md").write_text(md)
        (results_dir / "latest.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"written: bench/results/bench-{stamp}.md and .json")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


def median_round(rounds):
    """The round with the median req/s, with every round's req/s and CPU."""
    ordered = sorted(rounds, key=lambda r: r["req_per_sec"])
    row = dict(ordered[len(ordered) // 2])
    row["rounds_req_per_sec"] = [r["req_per_sec"] for r in rounds]
    row["rounds_cpu_us_per_req"] = [r["cpu_us_per_req"] for r in rounds]
    row["non2xx"] = sum(r["non2xx"] for r in rounds)
    row["socket_errors"] = sum(r["socket_errors"] for r in rounds)
    row["rss_peak_kib"] = max(r["rss_peak_kib"] for r in rounds)
    return row


def median_arrivals(rounds):
    """The round with the median p99 (no 200 at all sorts last), with every
    round's p99 and the errors of all rounds added up."""
    ordered = sorted(rounds, key=lambda r: float("inf") if r["p99_ms"] is None else r["p99_ms"])
    row = dict(ordered[len(ordered) // 2])
    row["rounds"] = len(rounds)
    row["rounds_p99_ms"] = [r["p99_ms"] for r in rounds]
    row["clients"] = sum(r["clients"] for r in rounds)
    row["ok"] = sum(r["ok"] for r in rounds)
    row["errors_total"] = sum(r["errors_total"] for r in rounds)
    row["errors"] = {k: sum(r["errors"][k] for r in rounds) for k in row["errors"]}
    statuses = {}
    for r in rounds:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    row["statuses"] = statuses
    row["connection_close"] = sum(r["connection_close"] for r in rounds)
    for k in ("cpu_s", "upstream_requests", "upstream_connections", "listen_overflows"):
        row[k] = sum(r[k] for r in rounds)
    row["lag_p99_ms"] = max(r["lag_p99_ms"] or 0 for r in rounds)
    return row


def median_tls_arrivals(rounds):
    """The HTTPS round with the median p99 (no 200 at all sorts last), with
    every round's p99 and the clients, answers and errors of all rounds."""
    ordered = sorted(rounds, key=lambda r: float("inf") if r["p99_ms"] is None else r["p99_ms"])
    row = dict(ordered[len(ordered) // 2])
    row["rounds"] = len(rounds)
    row["rounds_p99_ms"] = [r["p99_ms"] for r in rounds]
    for k in ("clients", "ok", "errors_total", "cpu_s"):
        row[k] = round(sum(r[k] for r in rounds), 2)
    row["errors"] = {k: sum(r["errors"][k] for r in rounds) for k in row["errors"]}
    row["lag_p99_ms"] = max(r["lag_p99_ms"] or 0 for r in rounds)
    return row


def tls_config():
    return {"secs": TLS_SECS, "rounds": TLS_ROUNDS, "sources": SOURCES, "src_base": SRC_BASE,
            "timeout_secs": ARRIVAL_TIMEOUT}


def static_binaries():
    """Size of the static binary bench/run built for this machine, if it did."""
    triple = os.environ.get("BENCH_STATIC_TRIPLE")
    path = ROOT / "target" / "dist" / str(triple) / "spotify-token-swap"
    return {triple: path.stat().st_size} if triple and path.exists() else {}


def render_markdown(s):
    out = [
        f"Benchmark {s['date']} — {s['machine']}; wrk {s['bench_secs']} s per run, "
        f"median of {s['rounds']} round(s); encryption on; this script ran {s['run_secs']} s; "
        f"load average {s['loadavg_start'][0]} at its start, {s['loadavg_end'][0]} at its end"
        + (" (more than the cores: other work shared the machine)"
           if max(s["loadavg_start"][0], s["loadavg_end"][0]) > (os.cpu_count() or 1) else ""),
        "",
        "Our server runs with its default settings ("
        + ", ".join(f"{k}={v}" for k, v in s["settings"].items())
        + f"), RLIMIT_NOFILE soft = hard = {s['server_nofile']} (raised by the bench); "
        f"nginx: {s['ceiling_nofile']} per worker.",
        "",
        "| server | conns | req/s | p50 ms | p99 ms | non-2xx | socket errors | CPU µs/req "
        "| RSS idle KiB | RSS peak KiB | threads | upstream handshakes /1000 req |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        out.append(
            f"| {r['server']} | {r['connections']} | {r['req_per_sec']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['non2xx']} | {r['socket_errors']} | {r['cpu_us_per_req']} | "
            f"{r['rss_idle_kib']} | {r['rss_peak_kib']} | {r['threads']} | "
            f"{r['upstream_handshakes_per_1000']} |"
        )
    out += [
        "",
        "| ours / nginx | throughput | CPU per request |",
        "|---|---|---|",
    ]
    for c, r in s["ours_over_nginx"].items():
        out.append(f"| {c} | {r['throughput']} | {r['cpu_per_req']} |")
    out.append("")
    for r in s["rows"]:
        out.append(
            f"- {r['server']}, c={r['connections']}, every round: req/s "
            f"{', '.join(str(v) for v in r['rounds_req_per_sec'])}; CPU µs/req "
            f"{', '.join(str(v) for v in r['rounds_cpu_us_per_req'])}"
        )
    out += [
        "",
        f"- binary: {s['binary_bytes']} bytes ({s['binary_stripped_bytes']} stripped)",
        "- static stripped binary (scripts/cross-build): "
        + (", ".join(f"{t} {n} bytes" for t, n in s["static_binary_bytes"].items())
           or "not built (BENCH_STATIC=0)"),
        f"- exec → first successful swap: {s['exec_to_first_swap_ms']} ms (median of 5)",
        f"- idle: RSS {s['rss_idle_kib']} KiB, {s['threads_idle']} threads",
        f"- {s['sequential_swaps']} sequential swaps used {s['sequential_upstream_connections']} "
        f"upstream connection(s) for {s['sequential_upstream_requests']} upstream requests",
    ]
    closed = s["after_mock_close"]
    out.append(
        f"- after the mock closed the pooled connection ({closed['reloads']} reloads, "
        f"{closed['swaps']} swaps): {closed['new_upstream_connections']} new upstream "
        f"connection(s), {closed['resumed']} resumed"
    )
    idle = s.get("after_idle")
    if idle:
        out.append(
            f"- with {idle['delay_ms_each_way']} ms added each way to the mock: warm swap p50 "
            f"{idle['warm_p50_ms']} ms; after {idle['idle_secs']} s idle {idle['after_idle_ms']} ms "
            f"({idle['new_upstream_connections_after_idle']} new upstream connection(s))"
        )
    out += render_hold(s) + render_arrivals(s) + render_slow(s) + render_tls_arrivals(s)
    out += render_apps(s)
    out.append("")
    return "\n".join(out)


def ms_or_dash(v):
    return "–" if v is None else f"{v:g}"


def render_hold(s):
    hold = s.get("hold") or {}
    if not hold:
        return []
    out = [
        "",
        f"Idle keep-alive connections: {next(iter(hold.values()))['conns']} clients from "
        f"{next(iter(hold.values()))['sources']} addresses each send GET /health and stay "
        f"open; measured while they are open; then a bystander's sequential GET /health, "
        f"each on a new connection from 127.0.0.1:",
        "",
        "| server | answered 200 | errors | open when measured | threads before / during "
        "| RSS before / during KiB | KiB per open connection | bystander ok | bystander p50 / p99 / max ms "
        "| still open after bystander |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, h in hold.items():
        name = "spotify-token-swap" if key == "ours" else "nginx (ceiling)"
        open_n = h["holding"]["open"]
        per = ((h["during"]["rss_kib"] - h["before"]["rss_kib"]) / open_n) if open_n else None
        errs = ", ".join(f"{k} {v}" for k, v in h["errors"].items() if v and k != "timeout_unconnected")
        by_errs = ", ".join(f"{k} {v}" for k, v in h["bystander_errors"].items())
        out.append(
            f"| {name} | {h['answered_200']} (in {h['opened_in_s']} s; "
            f"{h['connection_close']} with `Connection: close`) | {errs or 0} | {open_n} | "
            f"{h['before']['threads']} / {h['during']['threads']} | "
            f"{h['before']['rss_kib']} / {h['during']['rss_kib']} | "
            f"{'–' if per is None else round(per, 2)} | "
            f"{h['bystander_ok']}/{h['bystander']}{' (' + by_errs + ')' if by_errs else ''} | "
            f"{ms_or_dash(h['bystander_p50_ms'])} / {ms_or_dash(h['bystander_p99_ms'])} / "
            f"{ms_or_dash(h['bystander_max_ms'])} | {h['open_after_bystander']} |"
        )
    return out


def render_arrivals(s):
    rows = s.get("arrivals") or []
    if not rows:
        return []
    cfg = s["arrivals_config"]
    out = [
        "",
        f"Open-loop arrivals: new keep-alive clients per second for {cfg['secs']:g} s, each "
        f"one POST /swap, then idle {cfg['idle_secs']:g} s and close; from {cfg['sources']} "
        f"addresses ({cfg['src_base']} on). Latency of the 200 answers from each client's "
        f"scheduled arrival (not from when it managed to connect) to the answer's last byte; "
        f"errors: connect failed, reset, closed before a whole answer (eof), non-200, no "
        f"whole answer {cfg['timeout_secs']:g} s after the arrival (timeout). Listen queue "
        f"overflows: the kernel's count during the phase (machine-wide; a dropped SYN "
        f"is retried after 1 s). "
        + (f"{cfg['rounds']} rounds per row: the round with the median p99; clients, "
           f"answers and errors of all rounds. " if cfg["rounds"] > 1 else "")
        + f"Generator scheduling: {', '.join(sorted({r['sched'] for r in rows}))} "
        f"(fifo = SCHED_FIFO, see bench/arrivals).",
        "",
        "| new clients/s | server | clients | answered 200 | p50 ms | p99 ms | max ms "
        "| errors | connect / reset / eof / non-200 / timeout | `Connection: close` answers "
        "| server CPU µs per client | new upstream connections | listen queue overflows "
        "| generator lag p99 ms | p99 ours / nginx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["rate"], r["server"]): r for r in rows}
    for r in rows:
        e = r["errors"]
        ratio = ""
        if r["server"] == "ours":
            ngx = by.get((r["rate"], "nginx"))
            if ngx and ngx["p99_ms"] and r["p99_ms"] is not None:
                ratio = f"{r['p99_ms'] / ngx['p99_ms']:.1f}×"
        name = "spotify-token-swap" if r["server"] == "ours" else "nginx (ceiling)"
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items() if k != "200")
        out.append(
            f"| {r['rate']:g} | {name} | {r['clients']} | {r['ok']} | {ms_or_dash(r['p50_ms'])} | "
            f"{ms_or_dash(r['p99_ms'])} | {ms_or_dash(r['max_ms'])} | {r['errors_total']} | "
            f"{e['connect']} / {e['reset']} / {e['eof']} / {e['non200']}"
            f"{' (' + statuses + ')' if statuses else ''} / {e['timeout']}"
            f"{' / local ' + str(e['local']) if e['local'] else ''}"
            f"{' / bad answer ' + str(e['bad_response']) if e['bad_response'] else ''} | "
            f"{r['connection_close']} | {round(r['cpu_s'] * 1e6 / max(r['clients'], 1))} | "
            f"{r['upstream_connections']} | {r['listen_overflows']} | "
            f"{ms_or_dash(r['lag_p99_ms'])} | {ratio} |"
        )
    return out


def render_tls_arrivals(s):
    rows = s.get("tls_arrivals") or []
    if not rows:
        return []
    cfg = s["tls_config"]
    out = [
        "",
        f"HTTPS arrivals: new TLS clients per second for {cfg['secs']:g} s, each a new "
        f"connection from Python asyncio (TCP_NODELAY, certificate verified) sending one "
        f"GET /health, reading the answer and closing; from {cfg['sources']} addresses "
        f"({cfg['src_base']} on). Our server serves HTTPS itself (TLS_CERT_FILE / "
        f"TLS_KEY_FILE), nginx the same self-signed RSA-2048 certificate. Latency of the 200 "
        f"answers from each client's scheduled arrival to the answer's last byte, handshake "
        f"included; no whole answer {cfg['timeout_secs']:g} s after the arrival is a timeout. "
        + (f"{cfg['rounds']} rounds per row: the round with the median p99; clients, answers "
           f"and errors of all rounds. " if cfg["rounds"] > 1 else "")
        + f"Generator scheduling: {', '.join(sorted({r['sched'] for r in rows}))}.",
        "",
        "| new TLS clients/s | server | clients | answered 200 | p50 ms | p90 ms | p99 ms "
        "| max ms | errors | p99 of every round ms | server CPU µs per client "
        "| generator lag p99 ms | p99 ours / nginx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["rate"], r["server"]): r for r in rows}
    for r in rows:
        ratio = ""
        if r["server"] == "ours":
            ngx = by.get((r["rate"], "nginx"))
            if ngx and ngx["p99_ms"] and r["p99_ms"] is not None:
                ratio = f"{r['p99_ms'] / ngx['p99_ms']:.1f}×"
        name = "spotify-token-swap" if r["server"] == "ours" else "nginx"
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v)
        out.append(
            f"| {r['rate']:g} | {name} | {r['clients']} | {r['ok']} | {ms_or_dash(r['p50_ms'])} | "
            f"{ms_or_dash(r['p90_ms'])} | {ms_or_dash(r['p99_ms'])} | {ms_or_dash(r['max_ms'])} | "
            f"{errs or 0} | {', '.join(ms_or_dash(v) for v in r['rounds_p99_ms'])} | "
            f"{round(r['cpu_s'] * 1e6 / max(r['clients'], 1))} | "
            f"{ms_or_dash(r['lag_p99_ms'])} | {ratio} |"
        )
    return out


if __name__ == "__main__":
    main()
