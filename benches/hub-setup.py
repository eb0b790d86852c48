#!/usr/bin/env python3
"""Fill a labforge state store with published scan rows for the hub benchmark.

Usage:
    python3 benches/hub-setup.py STATE_DB IMAGES_JSON \\
        --registry HOST:PORT --from REPO:TAG --to REPO [--toggle K]

STATE_DB is a `state.db` whose schema `labforge status --state DIR` created
(this script only inserts rows, it never creates tables). IMAGES_JSON is the
output of `labforge validate --json` (the concrete images).

Digests. Every image gets a digest of its own, as after real builds: for
each image, a tiny image is pushed to HOST:PORT/REPO (--to), tagged
`<image>-a`, made of the layers of --from (mounted from its repository, not
copied) and a config of its own (--from's config with the label
`bench.image=<image>-a`). The first K images (--toggle, default 50) get a
second one, `<image>-b`. The same inputs give the same digests, so a second
run pushes nothing new. Plain HTTP (a loopback registry).

Rows, in the `scans` table (passing, published; summary and report `{}`,
so the hub shows no scan figures; an empty CycloneDX SBOM):
  * every image: its `-a` digest, created two hours ago;
  * the first K images: their `-b` digest, one hour ago, with a higher row
    id: that digest is their current one, `-a` the earlier version.
    `POST /api/v1/images/NAME/rollback` can then move them between the two.

Prints JSON: {"images": N, "repository": "...", "toggle": [{"name", "first",
"second"}, ...]} (first: the `-a` digest, second: the `-b` one).
Standard library only.
"""

import argparse
import hashlib
import json
import sqlite3
import sys
import time
import urllib.error
import urllib.request


# The smallest SBOM the hub reads without a warning (no packages).
SBOM = '{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}'
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"


def http(method, url, body=None, headers=None):
    """(status, headers, body); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Pusher:
    """Tiny images on the layers of one source image, one config each."""

    def __init__(self, registry, source, target):
        self.base = f"http://{registry}/v2"
        repo, _, tag = source.partition(":")
        self.source_repo = repo
        self.target = target
        status, _, body = http("GET", f"{self.base}/{repo}/manifests/{tag or 'latest'}", headers={"Accept": MANIFEST})
        if status != 200:
            sys.exit(f"hub-setup: cannot read {registry}/{source}: {status} {body[:200]!r}")
        self.manifest = json.loads(body)
        if self.manifest.get("mediaType") != MANIFEST:
            sys.exit(f"hub-setup: {source} is not a Docker v2 image manifest")
        status, _, body = http("GET", f"{self.base}/{repo}/blobs/{self.manifest['config']['digest']}")
        if status != 200:
            sys.exit(f"hub-setup: cannot read the config of {source}: {status}")
        self.config = json.loads(body)
        self.mounted = False

    def blob(self, digest, data=None):
        """Make the blob present in the target repository (mount, or upload `data`)."""
        status, _, _ = http("HEAD", f"{self.base}/{self.target}/blobs/{digest}")
        if status == 200:
            return
        if data is None:
            status, _, body = http("POST", f"{self.base}/{self.target}/blobs/uploads/?mount={digest}&from={self.source_repo}")
            if status != 201:
                sys.exit(f"hub-setup: mounting {digest} failed: {status} {body[:200]!r}")
            return
        status, headers, body = http("POST", f"{self.base}/{self.target}/blobs/uploads/")
        if status != 202:
            sys.exit(f"hub-setup: starting an upload failed: {status} {body[:200]!r}")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.base[: -len("/v2")] + location
        sep = "&" if "?" in location else "?"
        status, _, body = http(
            "PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            sys.exit(f"hub-setup: uploading {digest} failed: {status} {body[:200]!r}")

    def push(self, tag):
        """Push the image `tag`; returns its manifest digest."""
        if not self.mounted:
            for layer in self.manifest["layers"]:
                self.blob(layer["digest"])
            self.mounted = True
        config = json.loads(json.dumps(self.config))
        config.setdefault("config", {})
        labels = dict(config["config"].get("Labels") or {})
        labels["bench.image"] = tag
        config["config"]["Labels"] = labels
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        self.blob(config_digest, config_bytes)
        manifest = dict(self.manifest)
        manifest["config"] = {"mediaType": CONFIG, "size": len(config_bytes), "digest": config_digest}
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        status, _, answer = http(
            "PUT", f"{self.base}/{self.target}/manifests/{tag}", body, {"Content-Type": MANIFEST}
        )
        if status != 201:
            sys.exit(f"hub-setup: pushing {self.target}:{tag} failed: {status} {answer[:200]!r}")
        return digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("db", help="state.db made by `labforge status --state DIR`")
    ap.add_argument("images", help="`labforge validate --json` output")
    ap.add_argument("--registry", required=True, help="HOST:PORT of a plain-HTTP registry")
    ap.add_argument("--from", dest="source", required=True, help="REPO:TAG whose layers the images reuse")
    ap.add_argument("--to", dest="target", required=True, help="REPO to push the images to")
    ap.add_argument("--toggle", type=int, default=50, help="images with two published digests (default 50)")
    args = ap.parse_args()

    with open(args.images, encoding="utf-8") as f:
        names = [image["name"] for image in json.load(f)["images"]]
    if not names:
        sys.exit("hub-setup: the catalog has no images")
    db = sqlite3.connect(args.db)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "scans" not in tables:
        sys.exit(f"hub-setup: {args.db} has no scans table; run `labforge status --state DIR` first")
    if db.execute("SELECT COUNT(*) FROM scans").fetchone()[0]:
        sys.exit(f"hub-setup: {args.db} already has scan rows; start from an empty state folder")

    pusher = Pusher(args.registry, args.source, args.target)
    repository = f"{args.registry}/{args.target}"
    toggle = names[: max(0, min(args.toggle, len(names)))]
    first = {n: pusher.push(f"{n}-a") for n in names}
    second = {n: pusher.push(f"{n}-b") for n in toggle}

    now = int(time.time() * 1000)

    def row(name, digest, created_at):
        identity = hashlib.sha256(f"{name}\0{digest}".encode()).hexdigest()
        return (name, repository, digest, identity, "pass", 1, "{}", "{}", SBOM, created_at)

    rows = [row(n, first[n], now - 2 * 3600 * 1000) for n in names]
    rows += [row(n, second[n], now - 3600 * 1000) for n in toggle]
    with db:
        db.executemany(
            "INSERT INTO scans (image, repository, digest, hash, verdict, published, "
            "summary, report, sbom, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
    json.dump(
        {
            "images": len(names),
            "repository": repository,
            "toggle": [{"name": n, "first": first[n], "second": second[n]} for n in toggle],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
