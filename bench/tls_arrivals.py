#!/usr/bin/env python3
"""Open-loop arrivals of new HTTPS clients, for bench/bench.py. Loopback only.

    python3 bench/tls_arrivals.py --port P --cafile CERT --rate R [--secs 10]
        [--timeout 10] [--path /health] [--sources N] [--src-base 127.1.0.1]

Client i is due at start + i/R seconds, for `secs` seconds, whatever
happened to the clients before it (open loop). Each is what an app does at
start with Python's asyncio: open a new TLS connection
(`asyncio.open_connection(ssl=...)`, TCP_NODELAY, certificate verified
against CERT for 127.0.0.1), send one `GET path`, read the whole answer,
close. Latency runs from the client's *scheduled* time to the last byte of
the answer, handshake included, so a late generator or a server that makes
connects wait is never hidden; the generator's own lateness is reported
too (`lag_*`). An answer not complete `timeout` seconds after the scheduled
time is a timeout. Client i connects from the (i mod `sources`)-th address
from `src-base` (last octets 0 and 255 skipped). One JSON line on stdout.

Like bench/arrivals it runs SCHED_FIFO where allowed (root): on two busy
cores its wake-ups were otherwise late by milliseconds, which it would have
charged to the server (`sched` in the output says which it got). It spends
its time waiting in epoll, so it leaves the cores to the servers.

Bounded: at most MAX_CLIENTS clients, each at most `timeout` seconds.
"""

import argparse
import asyncio
import ipaddress
import json
import math
import os
import ssl
import sys
import time

MAX_CLIENTS = 100_000
MAX_HEAD_BYTES = 16 * 1024
# A close that takes longer than this is not waited for: the answer is in.
CLOSE_WAIT_SECS = 1.0
ERROR_KINDS = ("connect", "tls", "reset", "eof", "non200", "bad_response", "timeout")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--secs", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--path", default="/health")
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--src-base", default="127.0.0.1")
    a = p.parse_args()
    if a.rate <= 0 or a.secs <= 0 or a.timeout <= 0 or a.sources <= 0:
        p.error("--rate, --secs, --timeout and --sources must be positive")
    if math.ceil(a.rate * a.secs) > MAX_CLIENTS:
        p.error(f"more than {MAX_CLIENTS} clients")
    if ipaddress.IPv4Address(a.src_base) not in ipaddress.IPv4Network("127.0.0.0/8"):
        p.error("--src-base must be in 127.0.0.0/8 (loopback only)")
    return a


def sources(base, n):
    """n loopback addresses from base on, last octets 0 and 255 skipped."""
    out = []
    addr = int(ipaddress.IPv4Address(base))
    while len(out) < n:
        if addr & 0xFF not in (0, 255):
            out.append(str(ipaddress.IPv4Address(addr)))
        addr += 1
        if addr >> 24 != 127:
            sys.exit("tls_arrivals: --sources runs past 127.255.255.254")
    return out


def percentile(sorted_values, p):
    """Nearest rank, as bench/arrivals computes it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[min(rank, len(sorted_values)) - 1] * 1000, 3)


async def one_client(port, ctx, request, source):
    """One new HTTPS connection, one request: its status."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, local_addr=(source, 0))
    except ssl.SSLError:
        raise ClientError("tls")
    except OSError:
        raise ClientError("connect")
    try:
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ClientError("bad_response")
        if len(head) > MAX_HEAD_BYTES:
            raise ClientError("bad_response")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
            length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                          if line.lower().startswith("content-length:"))
        except (IndexError, ValueError, StopIteration):
            raise ClientError("bad_response")
        await reader.readexactly(length)
        return status
    except asyncio.IncompleteReadError:
        raise ClientError("eof")
    except ssl.SSLError:
        raise ClientError("tls")
    except OSError:
        raise ClientError("reset")
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_SECS)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            pass


class ClientError(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


async def run(a):
    ctx = ssl.create_default_context(cafile=a.cafile)
    request = f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    addrs = sources(a.src_base, a.sources)
    loop = asyncio.get_running_loop()
    n = math.ceil(a.rate * a.secs)
    latencies, lags = [], []
    errors = dict.fromkeys(ERROR_KINDS, 0)

    async def client(i, due):
        lags.append(loop.time() - due)
        try:
            status = await asyncio.wait_for(
                one_client(a.port, ctx, request, addrs[i % len(addrs)]),
                due + a.timeout - loop.time())
        except ClientError as e:
            errors[e.kind] += 1
            return
        except asyncio.TimeoutError:
            errors["timeout"] += 1
            return
        if status == 200:
            latencies.append(loop.time() - due)
        else:
            errors["non200"] += 1

    start = loop.time() + 0.1
    tasks = []
    for i in range(n):
        due = start + i / a.rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client(i, due)))
    await asyncio.gather(*tasks)
    latencies.sort()
    lags.sort()
    return {
        "rate": a.rate, "secs": a.secs, "clients": n, "ok": len(latencies),
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
        "errors_total": sum(errors.values()), "errors": errors,
        "lag_p50_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99),
    }


def realtime():
    """SCHED_FIFO at the lowest real-time priority, where allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "fifo"
    except (OSError, AttributeError):
        return "other"


def main():
    a = parse_args()
    sched = realtime()
    started = time.monotonic()
    result = asyncio.run(run(a))
    result["run_secs"] = round(time.monotonic() - started, 2)
    result["sched"] = sched
    print(json.dumps(result))


if __name__ == "__main__":
    main()
