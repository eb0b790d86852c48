#!/usr/bin/env python3
"""Concurrent readers of /api/v1/profiles while the catalog is republished.

Usage:
    LABFORGE_HUB_ADMIN_TOKEN=… python3 benches/hub-consistency.py URL \\
        --toggle-file TOGGLE_JSON \\
        --filter-query 'user=U&group=G' [--full-query 'user=A&group=STAFF'] \\
        [--readers 1000] [--republishes 100] [--profiles 200]

URL is a running `labforge serve` (http://127.0.0.1:PORT). TOGGLE_JSON is
what benches/hub-setup.py printed: the images with two published digests,
`first` (older) and `second` (current at the start).

READERS keep-alive connections (HTTP/1.1, raw asyncio streams) each GET the
full profile list (`?` + --full-query) over and over; a tenth of them ask for
a filtered list (`?` + --filter-query). Every response must be a 200 whose `ETag` is
`"` + the first 32 hex digits of sha256(body) + `"`; every body under one
ETag must be byte-identical; the first body of each ETag must parse as a
JSON list of --profiles profiles (the filtered list: the same count every
time); and every ETag must be one the writer saw published.

Meanwhile the writer republishes REPUBLISHES times with
`POST /api/v1/images/NAME/rollback` (admin token): image i of the toggle list
goes to its `first` digest on pass 1 and back to `second` on pass 2, so each republish
serves a document that was never served before. After each one it fetches
both lists itself (the published ETags), checks that the rolled-back
profile now names the digest it was sent to, and waits until readers have
received the new document at least --min-reads times (or --settle seconds)
before the next republish, so that every document is read while the next
one is swapped in.

Prints a summary and one JSON line (`RESULT {...}`); exits 1 on any failure.
Standard library only.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from urllib.parse import quote, urlsplit


class Failure(Exception):
    pass


async def read_response(reader):
    """(status, headers, body) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise Failure(f"not an HTTP response: {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        raise Failure("a response with neither Content-Length nor chunked encoding")
    return status, headers, body


def request(method, host, path, body=b"", token=None):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def etag_of(body):
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class Check:
    """What the readers saw, per list (full / filtered)."""

    def __init__(self, name, expected_count):
        self.name = name
        self.expected_count = expected_count  # None: learnt from the first body
        self.bodies = {}  # etag -> bytes
        self.reads = {}  # etag -> count
        self.published = set()  # etags the writer saw served
        self.failures = []

    def fail(self, message):
        if len(self.failures) < 20:
            self.failures.append(message)
        else:
            self.failures.append(None)  # counted, not kept

    def verify(self, status, headers, body):
        if status != 200:
            self.fail(f"{self.name}: status {status}: {body[:200]!r}")
            return None
        etag = headers.get("etag")
        computed = etag_of(body)
        if etag != computed:
            self.fail(f"{self.name}: ETag {etag} but the body ({len(body)} bytes) hashes to {computed}")
            return None
        known = self.bodies.get(etag)
        if known is not None:
            if known != body:
                self.fail(f"{self.name}: two different bodies under ETag {etag}")
                return None
        else:
            try:
                doc = json.loads(body)
            except ValueError as e:
                self.fail(f"{self.name}: body under {etag} is not JSON: {e}")
                return None
            if not isinstance(doc, list) or not all(isinstance(p, dict) and "slug" in p for p in doc):
                self.fail(f"{self.name}: body under {etag} is not a list of profiles")
                return None
            if self.expected_count is None:
                self.expected_count = len(doc)
            if len(doc) != self.expected_count:
                self.fail(f"{self.name}: {len(doc)} profiles under {etag}, expected {self.expected_count}")
                return None
            self.bodies[etag] = body
        self.reads[etag] = self.reads.get(etag, 0) + 1
        return etag


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--toggle-file", required=True)
    ap.add_argument("--readers", type=int, default=1000)
    ap.add_argument("--republishes", type=int, default=100)
    ap.add_argument("--profiles", type=int, default=200)
    ap.add_argument("--full-query", default="", help="query string of the full list (e.g. user=a&group=staff)")
    ap.add_argument("--filter-query", required=True, help="query string of the filtered list")
    ap.add_argument("--min-reads", type=int, default=50)
    ap.add_argument("--settle", type=float, default=5.0)
    args = ap.parse_args()
    token = os.environ.get("LABFORGE_HUB_ADMIN_TOKEN", "")
    if not token:
        sys.exit("hub-consistency: set LABFORGE_HUB_ADMIN_TOKEN (the hub's admin token)")
    with open(args.toggle_file, encoding="utf-8") as f:
        toggle = json.load(f)["toggle"]
    if not toggle:
        sys.exit("hub-consistency: no toggle images in " + args.toggle_file)

    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    host_header = f"{host}:{port}"
    full_path = "/api/v1/profiles" + (f"?{args.full_query}" if args.full_query else "")
    filtered_path = f"/api/v1/profiles?{args.filter_query}"
    full = Check("full", args.profiles)
    filtered = Check("filtered", None)

    stop = asyncio.Event()
    publishing = asyncio.Event()
    connected = 0
    all_connected = asyncio.Event()
    per_reader = []
    errors = []
    new_reads = {"etag": None, "count": 0, "event": asyncio.Event()}
    connect_gate = asyncio.Semaphore(64)

    async def reader_task(i):
        nonlocal connected
        check, path = (filtered, filtered_path) if i % 10 == 9 else (full, full_path)
        message = request("GET", host_header, path)
        n = 0
        during = 0
        try:
            async with connect_gate:
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            connected += 1
            if connected == args.readers:
                all_connected.set()
            while not stop.is_set():
                writer.write(message)
                status, headers, body = await read_response(reader)
                if headers.get("connection", "").lower() == "close":
                    raise Failure("the server closed a keep-alive connection")
                etag = check.verify(status, headers, body)
                n += 1
                if publishing.is_set():
                    during += 1
                if check is full and etag is not None and etag == new_reads["etag"]:
                    new_reads["count"] += 1
                    if new_reads["count"] >= args.min_reads:
                        new_reads["event"].set()
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, Failure, ValueError) as e:
            errors.append(f"reader {i}: {type(e).__name__}: {e}")
            stop.set()
        per_reader.append((n, during))

    async def fetch(reader, writer, method, path, body=b"", auth=None):
        writer.write(request(method, host_header, path, body, auth))
        return await read_response(reader)

    writer_log = {"republishes": 0, "reload_ms": [], "settle_ms": [], "settle_timeouts": 0}

    async def writer_task():
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        # The documents before the first republish.
        for check, path in ((full, full_path), (filtered, filtered_path)):
            status, headers, body = await fetch(reader, writer, "GET", path)
            etag = check.verify(status, headers, body)
            if etag:
                check.published.add(etag)
        await asyncio.wait_for(all_connected.wait(), 120)
        # Every reader has a request in flight or done before publishing starts.
        await asyncio.sleep(1.0)
        publishing.set()
        for i in range(args.republishes):
            if stop.is_set():
                break
            entry = toggle[i % len(toggle)]
            image = entry["name"]
            back = (i // len(toggle)) % 2 == 1
            target, other = (entry["second"], entry["first"]) if back else (entry["first"], entry["second"])
            payload = json.dumps({"to": target, "reason": f"bench republish {i}"}).encode()
            started = time.perf_counter()
            status, _, body = await fetch(
                reader, writer, "POST", f"/api/v1/images/{quote(image)}/rollback", payload, token
            )
            writer_log["reload_ms"].append((time.perf_counter() - started) * 1000)
            answer = json.loads(body) if body else {}
            if status != 200 or answer.get("reload_error"):
                full.fail(f"republish {i} ({image} -> {target}): {status} {body[:300]!r}")
                stop.set()
                break
            writer_log["republishes"] += 1
            new = {}
            for check, path in ((full, full_path), (filtered, filtered_path)):
                status, headers, body = await fetch(reader, writer, "GET", path)
                etag = check.verify(status, headers, body)
                if etag:
                    check.published.add(etag)
                    new[check.name] = (etag, body)
            # The rolled-back profile names the digest it was sent to, and
            # the other digest only as an earlier version (pass 2) or not at all.
            if "full" in new:
                doc = json.loads(new["full"][1])
                entry = next((p for p in doc if p.get("slug") == image), None)
                text = json.dumps(entry) if entry else ""
                if target not in text or (not back and other in text):
                    full.fail(f"republish {i}: the profile of {image} does not show {target} alone")
                new_reads["etag"] = new["full"][0]
                new_reads["count"] = 0
                new_reads["event"] = asyncio.Event()
                settle_start = time.perf_counter()
                try:
                    await asyncio.wait_for(new_reads["event"].wait(), args.settle)
                except asyncio.TimeoutError:
                    writer_log["settle_timeouts"] += 1
                writer_log["settle_ms"].append((time.perf_counter() - settle_start) * 1000)
        publishing.clear()
        writer.close()
        stop.set()

    started = time.perf_counter()
    readers = [asyncio.create_task(reader_task(i)) for i in range(args.readers)]
    publish_started = None
    try:
        w = asyncio.create_task(writer_task())
        await asyncio.wait_for(all_connected.wait(), 120)
        publish_started = time.perf_counter()
        await w
    except (OSError, asyncio.TimeoutError, Failure, ValueError) as e:
        errors.append(f"writer: {type(e).__name__}: {e}")
        stop.set()
    publish_ended = time.perf_counter()
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started

    failures = full.failures + filtered.failures
    unpublished = [e for c in (full, filtered) for e in c.reads if e not in c.published]
    if unpublished:
        failures.append(f"ETags read but never seen published by the writer: {unpublished[:5]}")
    if writer_log["republishes"] != args.republishes:
        failures.append(f"only {writer_log['republishes']} of {args.republishes} republishes happened")
    if len(full.reads) < 2:
        failures.append("the readers saw a single document: nothing was republished while they read")
    # A new document per republish, plus the one before the first.
    if len(full.published) != min(args.republishes, 2 * len(toggle) - 1) + 1:
        failures.append(f"{len(full.published)} distinct published documents for {args.republishes} republishes")
    failures += errors
    requests = sum(n for n, _ in per_reader)
    during = sum(d for _, d in per_reader)
    reloads = sorted(writer_log["reload_ms"])
    result = {
        "readers": args.readers,
        "connected": connected,
        "republishes": writer_log["republishes"],
        "requests": requests,
        "requests_while_republishing": during,
        "bodies_verified": sum(full.reads.values()) + sum(filtered.reads.values()),
        "bytes_verified": sum(len(full.bodies[e]) * n for e, n in full.reads.items())
        + sum(len(filtered.bodies[e]) * n for e, n in filtered.reads.items()),
        "distinct_etags_full": len(full.reads),
        "distinct_etags_filtered": len(filtered.reads),
        "published_full": len(full.published),
        "published_filtered": len(filtered.published),
        "filtered_profiles": filtered.expected_count,
        "min_requests_per_reader_while_republishing": min((d for _, d in per_reader), default=0),
        "rollback_ms_median": reloads[len(reloads) // 2] if reloads else None,
        "rollback_ms_max": reloads[-1] if reloads else None,
        "settle_timeouts": writer_log["settle_timeouts"],
        "publish_seconds": round(publish_ended - (publish_started or publish_ended), 2),
        "seconds": round(elapsed, 2),
        "failures": len(failures),
    }
    print(
        f"{result['readers']} readers ({connected} connected), {result['republishes']} republishes in "
        f"{result['publish_seconds']} s: {requests} requests ({during} while republishing), "
        f"{result['bodies_verified']} bodies verified; distinct documents read: "
        f"{result['distinct_etags_full']} full, {result['distinct_etags_filtered']} filtered "
        f"(published: {result['published_full']} / {result['published_filtered']}); failures: {len(failures)}",
        file=sys.stderr,
    )
    for f in failures[:20]:
        if f:
            print(f"  FAIL {f}", file=sys.stderr)
    print("RESULT " + json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
