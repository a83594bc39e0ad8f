#!/usr/bin/env python3
"""Memory of pending device logins.

    python3 bench/device_memory.py [LOGINS]     # default: 9999 (one is asked for first)

Starts the release binary (`STS_BIN` to pick another) with device login on
(`PUBLIC_URL` its own loopback address), `DEVICE_MAX_PENDING=10000` (the
most it takes) and `RATE_LIMIT_PER_MINUTE=0`, asks for one code, reads the server's RSS, then
asks for LOGINS more over one keep-alive connection (`scope=streaming
user-read-email`, each one a pending login nobody finishes) and reads it
again. Prints both and the growth per login. No call to Spotify is made.
Loopback only; the server is stopped at the end.
"""

import http.client
import os
import socket
import subprocess
import sys
import time

BIN = os.environ.get("STS_BIN", "target/release/spotify-token-swap")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ask(conn):
    conn.request(
        "POST",
        "/device/code",
        body="scope=streaming+user-read-email",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"/device/code answered {resp.status}")


def main():
    logins = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SPOTIFY_CLIENT_ID": "id",
        "SPOTIFY_CLIENT_SECRET": "secret",
        "SPOTIFY_REDIRECT_URI": "myapp://cb",
        "ENCRYPTION_SECRET": "0123456789abcdef0123456789abcdef0123",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "RATE_LIMIT_PER_MINUTE": "0",
        "DEVICE_MAX_PENDING": "10000",
        "LOG_LEVEL": "warn",
    }
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port)
                ask(conn)
                break
            except OSError:
                time.sleep(0.05)
        before = rss_kib(server.pid)
        for _ in range(logins):
            ask(conn)
        after = rss_kib(server.pid)
        per = (after - before) * 1024 / logins
        print(f"{logins} pending logins: RSS {before} kB -> {after} kB, {per:.0f} bytes each")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
