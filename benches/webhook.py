#!/usr/bin/env python3
"""Webhook intake latency: signed GitHub deliveries against `labforge serve`.

Usage: webhook.py HUB_URL SECRET FIXTURE_DIR DELIVERIES CONCURRENCY

Sends DELIVERIES signed `issues.opened` deliveries (the published example,
each with its own delivery id and issue number, so each is recorded and
queues one job) over CONCURRENCY keep-alive connections, then as many
`GET /healthz` requests the same way (the same server's cheapest answer:
the HTTP floor the webhook's work is compared with). Every delivery must be
answered 202. Prints one JSON line per run: count, rate, p50/p99/max in ms.
"""
import hashlib
import hmac
import http.client
import json
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def run(url, requests, concurrency):
    """requests: list of (method, path, headers, body); returns latencies (s) and wall time."""
    parsed = urllib.parse.urlparse(url)
    latencies = []
    errors = []
    lock = threading.Lock()

    def worker(chunk):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        mine = []
        for method, path, headers, body in chunk:
            start = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - start)
            expected = 202 if method == "POST" else 200
            if response.status != expected:
                with lock:
                    errors.append((response.status, payload[:200]))
        conn.close()
        with lock:
            latencies.extend(mine)

    chunks = [requests[i::concurrency] for i in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    if errors:
        sys.exit(f"{len(errors)} unexpected answers, e.g. {errors[0]}")
    return latencies, wall


def report(name, latencies, wall):
    ms = [x * 1000 for x in latencies]
    print(json.dumps({
        "run": name,
        "requests": len(ms),
        "per_second": round(len(ms) / wall, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }), flush=True)


def main():
    url, secret, fixtures, count, concurrency = sys.argv[1:6]
    count, concurrency = int(count), int(concurrency)
    with open(f"{fixtures}/issues.opened.json") as f:
        template = json.load(f)
    run_id = int(time.time())
    deliveries = []
    for i in range(count):
        payload = dict(template)
        issue = dict(template["issue"])
        issue["number"] = 100000 + i
        issue["labels"] = [{"name": "image-request"}]
        issue["updated_at"] = f"2026-11-26T00:00:00Z#{run_id}-{i}"
        payload["issue"] = issue
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": f"bench-{run_id}-{i}",
            "X-Hub-Signature-256": signature,
        }
        deliveries.append(("POST", "/webhooks/github", headers, body))
    latencies, wall = run(url, deliveries, concurrency)
    report("webhook", latencies, wall)
    health = [("GET", "/healthz", {}, None)] * count
    latencies, wall = run(url, health, concurrency)
    report("healthz", latencies, wall)


if __name__ == "__main__":
    main()
