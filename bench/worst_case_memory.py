#!/usr/bin/env python3
"""Worst-case memory per connection: what a hostile peer can make the
server hold, attack by attack.

    python3 bench/worst_case_memory.py [ATTACK[=N] ...]

With no argument, every attack with its default count. Attacks:

  tls-hello      an unfinished ClientHello announcing 0xffff bytes, of which
                 65,472 are sent in four records (rustls alone joins
                 fragments up to 64 KiB); N = 2000
  tls-hello-16k  the same announcement, 16 KiB - 1 bytes of it sent: the
                 most a handshake may buffer here; N = 2000
  tls-request    a full handshake, then a request head with a ~7 KiB path,
                 8,191 of an 8,192-byte body and all but the last byte of a
                 16 KiB TLS record; N = 1000
  tls-request-held  the same, but only as much of the 16 KiB record as the
                 server holds besides the request (20 KiB in all); N = 1000
  plain-request  a ~7 KiB request line and 8,191 of an 8,192-byte body;
                 N = 3900
  plain-unread   requests pipelined while never reading an answer, until the
                 server stops taking them (its answers wait for room in the
                 socket; the kernel holds what it could not send); N = 1000
  tls-unread     the same after a TLS handshake; N = 1000

Each attack starts the release binary afresh (default settings, except
MAX_CONNECTIONS=4000 as under the shipped unit's LimitNOFILE=4096, and a
throwaway certificate for the TLS attacks), makes one warm-up request of
the same kind, reads the server's RSS, then opens N connections from N
loopback addresses (127.2.x.y) and attacks on each from 16 threads. When
every connection is attacked and the server has taken the bytes in (well
inside the 10 s deadlines), it reads the RSS again and prints the RSS
growth per connection, and how many connections the server was still
holding. Where a cgroup v1 memory controller is writable (root), the
server runs in a cgroup of its own with no limit and the script also
prints what the cgroup was charged per connection (RSS plus the kernel's
socket and epoll objects). Loopback only; everything is closed at the end.
"""

import os
import pathlib
import resource
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("STS_BIN", str(ROOT / "target/release/spotify-token-swap"))

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
THREADS = 16
MAX_CONNECTIONS = 4000
DEFAULTS = {
    "tls-hello": 2000,
    "tls-hello-16k": 2000,
    "tls-request": 1000,
    "tls-request-held": 1000,
    "plain-request": 3900,
    "plain-unread": 1000,
    "tls-unread": 1000,
}
PATH = b"/" + b"a" * 7000
BODY_LENGTH = 8192
RECORD_PAYLOAD = 16384
# What a TLS connection may make the server hold of requests not complete
# yet (src/http/limits.rs, MAX_TLS_HELD_BYTES).
TLS_HELD_BYTES = 20 * 1024
MEMCG = pathlib.Path("/sys/fs/cgroup/memory")


def status_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


def source(i):
    return f"127.2.{i // 250}.{1 + i % 250}"


def connect(i, receive_buffer=None):
    s = socket.socket()
    if receive_buffer:
        # Before connecting: it sets the window the peer may fill.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    s.settimeout(20)
    s.bind((source(i), 0))
    s.connect(("127.0.0.1", PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def hello_records(total):
    """Records carrying the start of a ClientHello that announces 0xffff
    bytes, `total` bytes on the wire in all (record headers included)."""
    message = b"\x01\x00\xff\xff" + os.urandom(0xFFFF)
    out, taken = b"", 0
    while len(out) < total:
        chunk = message[taken:taken + RECORD_PAYLOAD]
        taken += len(chunk)
        out += b"\x16\x03\x01" + struct.pack(">H", len(chunk)) + chunk
    return out[:total]


def request_head(method=b"POST"):
    return (method + b" " + PATH + b" HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(BODY_LENGTH).encode() + b"\r\n\r\n")


def tls_handshake(sock, ctx):
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed in the handshake")
            incoming.write(data)
    sock.sendall(outgoing.read())
    return tls, outgoing


class Attack:
    def __init__(self, name, ctx):
        self.name, self.ctx = name, ctx

    def hello(self):
        full = 4 * (5 + RECORD_PAYLOAD) - 64  # 65,472 of the 65,539 bytes announced
        return hello_records(full if self.name == "tls-hello" else 16 * 1024 - 1)

    def run(self, i):
        # The unread attacks fill the server's buffers sooner behind a
        # small window of their own; the server holds no more for a larger.
        sock = connect(i, 4096 if self.name.endswith("unread") else None)
        if self.name.startswith("tls-hello"):
            sock.sendall(self.hello())
        elif self.name.startswith("tls-request"):
            tls, out = tls_handshake(sock, self.ctx)
            request = request_head() + b"b" * (BODY_LENGTH - 1)
            tls.write(request)
            sock.sendall(out.read())
            tls.write(b"c" * RECORD_PAYLOAD)
            record = out.read()
            held = TLS_HELD_BYTES - len(request) - 1
            sock.sendall(record[:-1] if self.name == "tls-request" else record[:held])
        elif self.name == "plain-request":
            sock.sendall(request_head() + b"b" * (BODY_LENGTH - 1))
        elif self.name == "plain-unread":
            return Unread(sock)
        elif self.name == "tls-unread":
            return Unread(sock, *tls_handshake(sock, self.ctx))
        return sock


class Unread:
    """A connection that pipelines requests and never reads an answer."""

    REQUESTS = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n" * 64

    def __init__(self, sock, tls=None, out=None):
        self.sock, self.tls, self.out = sock, tls, out
        self.unsent = b""
        sock.setblocking(False)

    def push(self):
        """Sends what the socket takes now; whether it took anything."""
        if not self.unsent:
            if self.tls:
                self.tls.write(self.REQUESTS)
                self.unsent = self.out.read()
            else:
                self.unsent = self.REQUESTS
        try:
            sent = self.sock.send(self.unsent)
        except (BlockingIOError, OSError):
            return False
        self.unsent = self.unsent[sent:]
        return sent > 0

    def close(self):
        self.sock.close()

    def fileno(self):
        return self.sock.fileno()


def pump(conns):
    """Pushes requests on every unread connection until none has taken
    any for 0.5 s: the server has stopped taking them."""
    quiet_since = time.time()
    while time.time() - quiet_since < 0.5:
        if any([c.push() for c in conns]):
            quiet_since = time.time()
        else:
            time.sleep(0.02)


def start(env, cgroup):
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    if cgroup:
        (cgroup / "cgroup.procs").write_text(str(server.pid))
    deadline = time.time() + 10
    while time.time() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"the server did not start on port {PORT}")


def warm_up(ctx):
    sock = socket.create_connection(("127.0.0.1", PORT))
    if ctx:
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    while sock.recv(4096):
        pass
    sock.close()


def held(conns):
    """Connections the server has not closed (what it sent is read and
    dropped: TLS session tickets)."""
    alive = 0
    for conn in conns:
        s = getattr(conn, "sock", conn)
        s.setblocking(False)
        try:
            while s.recv(65536):
                pass
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def make_cgroup(name):
    if os.geteuid() != 0 or not (MEMCG / "cgroup.procs").exists():
        return None
    path = MEMCG / f"sts-bench-{name}-{os.getpid()}"
    try:
        path.mkdir()
        # Socket buffers are charged to a v1 cgroup only once it has a TCP
        # limit (cgroup v2 charges them always): set one, out of reach.
        (path / "memory.kmem.tcp.limit_in_bytes").write_text(str(2**62))
    except OSError:
        return None
    return path


def charged(cgroup):
    """What the cgroup is charged: memory (RSS and kernel objects), and
    socket buffers."""
    if not cgroup:
        return 0, 0
    read = lambda name: int((cgroup / name).read_text())
    return read("memory.usage_in_bytes"), read("memory.kmem.tcp.usage_in_bytes")


def measure(name, n, env, ctx):
    cgroup = make_cgroup(name)
    server = None
    conns, failed, lock = [], [], threading.Lock()
    try:
        server = start(env, cgroup)
        warm_up(ctx if name.startswith("tls") else None)
        time.sleep(0.3)
        rss0, cg0 = status_kb(server.pid, "VmRSS"), charged(cgroup)
        attack = Attack(name, ctx)
        started = time.time()

        def work(k, count):
            mine = []
            for i in range(k, n, count):
                try:
                    mine.append(attack.run(i))
                except OSError as e:
                    failed.append(e)
            with lock:
                conns.extend(mine)

        threads = [threading.Thread(target=work, args=(k, THREADS)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if name.endswith("unread"):
            pump(conns)
        took = time.time() - started
        time.sleep(1.0)
        rss1, cg1 = status_kb(server.pid, "VmRSS"), charged(cgroup)
        alive = held(conns)
        grew = (rss1 - rss0) * 1024
        line = (f"{name}: {n} connections attacked in {took:.1f} s, {alive} held; "
                f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
        if alive:
            line += f", {grew / alive:,.0f} bytes per held connection"
        if cgroup and alive:
            per = lambda k: (cg1[k] - cg0[k]) / max(alive, 1)
            line += (f"; cgroup charged {per(0):,.0f} bytes per held connection, "
                     f"and socket buffers {per(1):,.0f}")
        if failed:
            line += f"; {len(failed)} connects failed ({failed[0]})"
        if took > 8:
            line += " (WARNING: slower than the deadlines allow)"
        print(line, flush=True)
    finally:
        for s in conns:
            s.close()
        if server:
            server.terminate()
            server.wait()
        if cgroup:
            for _ in range(50):
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    wanted = sys.argv[1:] or list(DEFAULTS)
    tmp_dir = tempfile.TemporaryDirectory(prefix="worst-case-memory-")
    tmp = tmp_dir.name
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    ctx = ssl.create_default_context(cafile=cert)
    for spec in wanted:
        name, _, count = spec.partition("=")
        if name not in DEFAULTS:
            sys.exit(f"unknown attack {name}; one of {', '.join(DEFAULTS)}")
        env = dict(
            PATH=os.environ["PATH"],
            SPOTIFY_CLIENT_ID="bench",
            SPOTIFY_CLIENT_SECRET="bench-secret",
            SPOTIFY_REDIRECT_URI="bench://callback",
            LISTEN_ADDR=f"127.0.0.1:{PORT}",
            LOG_LEVEL="warn",
            MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        )
        if name.startswith("tls"):
            env.update(TLS_CERT_FILE=cert, TLS_KEY_FILE=key)
        measure(name, int(count) if count else DEFAULTS[name], env, ctx)


if __name__ == "__main__":
    main()
