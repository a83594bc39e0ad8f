#!/usr/bin/env python3
"""Memory and time of the rate limiter's table as distinct clients arrive.

    python3 bench/limiter_memory.py [CLIENTS]     # default: 196608 (3 x 65,536)

Starts the release binary (`STS_BIN` to pick another) with default settings
and an encryption secret, then sends keep-alive `POST /refresh` requests
with a refresh token that does not open (answered 400 without calling
Spotify, after the rate-limit check), each from a new client: the peer is
127.0.0.1, a trusted proxy by default, naming the client in
`X-Forwarded-For` (a new IPv6 /64 each time). Prints, every 65,536 clients,
the server's RSS and the time those requests took; past 65,536 the table is
full and each new client takes the least recently seen one's place.
Loopback only; the server is stopped at the end.
"""

import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("STS_BIN", str(ROOT / "target/release/spotify-token-swap"))
CLIENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 3 * 65536
STEP = 65536
PORT = 18520
THREADS = 4
BODY = b"refresh_token=not-a-sealed-token"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def request(n):
    # Client n: the /64 2001:db8:XXXX:YYYY::/64.
    xff = f"2001:db8:{n >> 16:x}:{n & 0xffff:x}::1"
    return (
        b"POST /refresh HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + xff.encode()
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )


def send_range(first, last, failures):
    sock = socket.create_connection(("127.0.0.1", PORT))
    reader = sock.makefile("rb")
    for n in range(first, last):
        sock.sendall(request(n))
        status = reader.readline()
        length = 0
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        reader.read(length)
        if not status.startswith(b"HTTP/1.1 400"):
            failures.append(status)
    sock.close()


def main():
    env = dict(
        PATH=os.environ["PATH"],
        SPOTIFY_CLIENT_ID="bench",
        SPOTIFY_CLIENT_SECRET="bench-secret",
        SPOTIFY_REDIRECT_URI="bench://callback",
        SPOTIFY_ACCOUNTS_URL="https://127.0.0.1:9",
        ENCRYPTION_SECRET="bench-encryption-secret-0123456789abcdef",
        LISTEN_ADDR=f"127.0.0.1:{PORT}",
        LOG_LEVEL="error",
    )
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.05)
        send_range(0, 1, [])
        print(f"{'clients':>8} {'RSS':>9} {'ms for the last 65,536':>24}")
        print(f"{1:>8} {rss_kib(server.pid):>6} KiB")
        for start in range(0, CLIENTS, STEP):
            end = min(start + STEP, CLIENTS)
            failures = []
            per = (end - start + THREADS - 1) // THREADS
            began = time.monotonic()
            threads = [
                threading.Thread(target=send_range,
                                 args=(start + i * per, min(start + (i + 1) * per, end), failures))
                for i in range(THREADS)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = (time.monotonic() - began) * 1000
            print(f"{end:>8} {rss_kib(server.pid):>6} KiB {took:>21.0f}")
            if failures:
                print(f"  {len(failures)} unexpected answers, e.g. {failures[0]!r}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
