#!/usr/bin/env python3
"""Memory and threads of the server with many idle keep-alive connections.

    python3 bench/idle_memory.py [N] [plain|tls]     # default: 8000 plain

Starts the release binary with default settings (HTTPS with a throwaway
certificate for `tls`), opens N connections from loopback addresses
127.0.x.y, sends one GET /health on each and keeps them open (idle), then
prints the server's RSS before and after, the bytes per idle connection
and its thread count. Loopback only; every connection is closed at the end
(the server's keep-alive timeout is 5 s, so N must be opened within that).
"""

import os
import pathlib
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("STS_BIN", str(ROOT / "target/release/spotify-token-swap"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
TLS = len(sys.argv) > 2 and sys.argv[2] == "tls"
PORT = 18500 + (1 if TLS else 0)
THREADS = 8


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="idle-memory-")
    env = dict(
        PATH=os.environ["PATH"],
        SPOTIFY_CLIENT_ID="bench",
        SPOTIFY_CLIENT_SECRET="bench-secret",
        SPOTIFY_REDIRECT_URI="bench://callback",
        LISTEN_ADDR=f"127.0.0.1:{PORT}",
        LOG_LEVEL="warn",
    )
    ctx = None
    if TLS:
        cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True)
        env.update(TLS_CERT_FILE=cert, TLS_KEY_FILE=key)
        ctx = ssl.create_default_context(cafile=cert)
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)

        def one(i):
            s = socket.create_connection(
                ("127.0.0.1", PORT), source_address=(f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("closed before the answer")
                data += chunk
            return s

        conns = [one(0)]
        time.sleep(0.3)
        before = status(server.pid, "VmRSS")
        lock = threading.Lock()

        def work(lo, hi):
            mine = [one(i) for i in range(lo, hi)]
            with lock:
                conns.extend(mine)

        started = time.time()
        step = N // THREADS
        threads = [threading.Thread(target=work, args=(1 + k * step, 1 + (k + 1) * step))
                   for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - started
        time.sleep(0.3)
        after = status(server.pid, "VmRSS")
        idle = len(conns) - 1
        print(f"{'https' if TLS else 'plain'}: {idle} idle keep-alive connections opened in "
              f"{took:.1f} s; RSS {before} -> {after} KiB, "
              f"{(after - before) * 1024 / idle:.0f} bytes per idle connection; "
              f"threads {status(server.pid, 'Threads')}")
        for c in conns:
            c.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
