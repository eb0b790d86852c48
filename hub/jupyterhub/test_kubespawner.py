#!/usr/bin/env python3
"""Check labforge's profile list against the real KubeSpawner 7.1.0.

Runs labforge_profiles.py (the JupyterHub snippet beside this file) inside a
real ``kubespawner.KubeSpawner`` configured like zero-to-jupyterhub's default
single-user settings, renders the spawn form, spawns every profile with every
choice of every option and checks the pod manifests. It also checks the
snippet's fallback behaviour against a fake hub it starts itself, and that the
copies in values.yaml and jupyterhub_config.py load the same snippet.

Usage::

    python3 hub/jupyterhub/test_kubespawner.py --hub-url http://127.0.0.1:8080 \
        [--token T] [--expect-images slug-to-image.json] [--user U] [--group G ...]
    python3 hub/jupyterhub/test_kubespawner.py \
        --profiles-file hub/jupyterhub/testdata/profiles.json

Needs only ``pip install jupyterhub-kubespawner==7.1.0`` (and what it pulls in).
No Kubernetes API server is contacted: the spawner's API client is replaced by
an object that fails the test on first use, and no reflector is started.
Exits non-zero when any check fails; the last line is "N passed, N failed".
"""

import argparse
import copy
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import unittest
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen
from urllib.error import HTTPError

HERE = os.path.dirname(os.path.abspath(__file__))
SNIPPET_PATH = os.path.join(HERE, "labforge_profiles.py")
VALUES_PATH = os.path.join(HERE, "values.yaml")
CONFIG_PATH = os.path.join(HERE, "jupyterhub_config.py")
VALUES_SNIPPET_KEY = "zz-labforge-profiles"

GPU = "nvidia.com/gpu"
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")

# Set by main() from the command line.
ARGS = None


def load_snippet():
    spec = importlib.util.spec_from_file_location("labforge_profiles", SNIPPET_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lp = load_snippet()


# --- no Kubernetes API ------------------------------------------------------

import kubespawner.spawner as ks_spawner  # noqa: E402
from kubespawner import KubeSpawner  # noqa: E402
from traitlets.config import Config  # noqa: E402


class _NoKubernetesAPI:
    """Stands in for kubernetes_asyncio's CoreV1Api: any use fails the test."""

    def __init__(self, kind):
        self._kind = kind

    def __getattr__(self, name):
        raise AssertionError(
            f"the test tried to call the Kubernetes {self._kind} API ({name}); "
            "nothing here may contact a cluster"
        )


# KubeSpawner.__init__ loads a kubeconfig / in-cluster config and creates a
# shared CoreV1Api client. Neither exists here, and no request may be made.
ks_spawner.load_config = lambda *args, **kwargs: None
ks_spawner.shared_client = lambda kind, *args, **kwargs: _NoKubernetesAPI(kind)


# --- zero-to-jupyterhub's default single-user settings -------------------------

Z2JH_TOLERATIONS = [
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]
Z2JH_NODE_SELECTOR = {"hub.jupyter.org/node-purpose": "user"}
Z2JH_HOME = "volume-{user_server}"

# What z2jh's jupyterhub_config.py sets on c.KubeSpawner with the chart's
# default values (singleuser.storage.type=dynamic, memory.guarantee=1G, ...),
# plus a node selector so that the merge with profile selectors is checked.
Z2JH_BASE = {
    "image": "quay.io/jupyterhub/k8s-singleuser-sample:4.2.0",
    "cmd": ["jupyterhub-singleuser"],
    "uid": 1000,
    "fs_gid": 100,
    "allow_privilege_escalation": False,
    "mem_guarantee": "1G",
    "tolerations": Z2JH_TOLERATIONS,
    "node_selector": Z2JH_NODE_SELECTOR,
    "extra_labels": {"hub.jupyter.org/network-access-hub": "true"},
    "pvc_name_template": "claim-{user_server}",
    "storage_pvc_ensure": True,
    "volumes": {
        Z2JH_HOME: {"name": Z2JH_HOME, "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
    },
    "volume_mounts": {
        Z2JH_HOME: {"mountPath": "/home/jovyan", "name": Z2JH_HOME},
    },
}


class MockGroup:
    def __init__(self, name):
        self.name = name


class MockUser:
    """What KubeSpawner and Spawner.get_env read from JupyterHub's User."""

    def __init__(self, name, groups):
        self.name = name
        self.id = 7
        self.url = f"/user/{name}/"
        self.groups = [MockGroup(g) for g in groups]


class MockHub:
    public_host = "hub.example.edu"
    url = "http://hub:8081/hub/"
    base_url = "/hub/"
    api_url = "http://hub:8081/hub/api"


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelname, record.getMessage()))


def make_spawner(user_name, groups, profile_list=None):
    config = Config()
    for key, value in copy.deepcopy(Z2JH_BASE).items():
        setattr(config.KubeSpawner, key, value)
    config.KubeSpawner.profile_list = profile_list or lp.labforge_profile_list
    spawner = KubeSpawner(
        _mock=True, config=config, user=MockUser(user_name, groups), hub=MockHub()
    )
    logger = logging.getLogger(f"test.spawner.{id(spawner)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    spawner.log = logger
    spawner.log_messages = handler.messages
    return spawner


# --- helpers -----------------------------------------------------------------

def k8s_to_dict(obj):
    """A kubernetes_asyncio model as the camelCase JSON the API would get."""
    if isinstance(obj, list):
        return [k8s_to_dict(o) for o in obj]
    if isinstance(obj, dict):
        return {k: k8s_to_dict(v) for k, v in obj.items()}
    if hasattr(obj, "openapi_types") and hasattr(obj, "attribute_map"):
        return {
            obj.attribute_map[attr]: k8s_to_dict(getattr(obj, attr))
            for attr in obj.openapi_types
            if getattr(obj, attr) is not None
        }
    return obj


_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def to_bytes(value):
    """KubeSpawner's ByteSpecification: int bytes or '<num>K/M/G/T', 1024-based."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text[-1:] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def merge_override(target, override):
    """How KubeSpawner applies one kubespawner_override onto the config."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            recursive_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def recursive_merge(target, source):
    for key, value in source.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            recursive_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def default_choice(option):
    choices = option.get("choices") or {}
    for key, choice in choices.items():
        if choice.get("default"):
            return key
    return next(iter(choices), None)


def default_profile(profiles):
    for profile in profiles:
        if profile.get("default"):
            return profile
    return profiles[0]


def effective_settings(profile, selection):
    """The spawner settings a selection should end up with."""
    settings = copy.deepcopy(Z2JH_BASE)
    merge_override(settings, profile.get("kubespawner_override") or {})
    for option_key, option in (profile.get("profile_options") or {}).items():
        choice_key = selection.get(option_key) or default_choice(option)
        choice = option["choices"][choice_key]
        merge_override(settings, choice.get("kubespawner_override") or {})
    return settings


def toleration_key(t):
    return tuple(sorted((k, str(v)) for k, v in t.items() if v is not None))


class FormParser(HTMLParser):
    """Collects the inputs a browser would submit from KubeSpawner's form."""

    def __init__(self):
        super().__init__()
        self.radios = []  # (value, checked)
        self.selects = {}  # name -> [(value, selected)]
        self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "radio" and a.get("name") == "profile":
            self.radios.append((a.get("value"), "checked" in a))
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
            self.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            self.selects[self._select].append((a.get("value"), "selected" in a))

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None

    def formdata(self, slug, changed=None):
        """What the browser posts with profile `slug` ticked and one select changed."""
        data = {"profile": [slug]}
        for name, options in self.selects.items():
            chosen = next((v for v, sel in options if sel), options[0][0] if options else None)
            if changed and name == changed[0]:
                chosen = changed[1]
            if chosen is not None:
                data[name] = [chosen]
        return data


def fetch_profiles_directly(hub_url, token, user, groups):
    url = lp.labforge_profiles_url(hub_url.rstrip("/"), user, sorted(set(groups)))
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with urlopen(Request(url, headers=headers), timeout=10) as response:
        return response.status, dict(response.headers), response.read()


# --- a fake labforge hub ---------------------------------------------------------

class FakeHub:
    """A labforge hub stand-in: serves a profile list, can fail on demand.

    mode: "ok" (200 + ETag, 304 on a matching If-None-Match), "500", "hang"
    (answers only after `hang_seconds`), "raw" (200 with `raw_body`).
    """

    def __init__(self, profiles, token=None):
        self.profiles = profiles
        self.token = token
        self.mode = "ok"
        self.raw_body = b""
        self.hang_seconds = 3.0
        self.requests = []
        self.statuses = []
        self._release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                hub.requests.append(
                    {"path": parts.path, "query": parse_qs(parts.query), "headers": dict(self.headers)}
                )
                if parts.path != "/api/v1/profiles":
                    return self._send(404, b"not found")
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(401, b'{"error":"missing or wrong bearer token"}')
                if hub.mode == "500":
                    return self._send(500, b"internal error")
                if hub.mode == "hang":
                    hub._release.wait(hub.hang_seconds)
                if hub.mode == "raw":
                    return self._send(200, hub.raw_body)
                body = json.dumps(hub.profiles).encode()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if self.headers.get("If-None-Match") == etag:
                    return self._send(304, b"", etag)
                return self._send(200, body, etag)

            def _send(self, status, body, etag=None):
                hub.statuses.append(status)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if etag:
                        self.send_header("ETag", etag)
                    self.end_headers()
                    if body:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


class HubEnv:
    """Sets LABFORGE_HUB_* for the duration of a block."""

    def __init__(self, url, token=None, timeout=None):
        self.values = {"LABFORGE_HUB_URL": url, "LABFORGE_HUB_TOKEN": token, "LABFORGE_HUB_TIMEOUT": timeout}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        for k, v in self.values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sample_profiles():
    path = os.path.join(HERE, "testdata", "profiles.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- checks against the hub under test (real labforge serve, or --profiles-file) ---

class ProfilesAgainstHub(unittest.IsolatedAsyncioTestCase):
    """a-d, f: the hub's profile list spawned through the real KubeSpawner."""

    async def asyncSetUp(self):
        self.env = HubEnv(ARGS.hub_url, ARGS.token, ARGS.timeout)
        self.env.__enter__()
        lp.labforge_profile_cache_clear()
        self.profiles = await lp.labforge_profile_list(make_spawner(ARGS.user, ARGS.group))

    async def asyncTearDown(self):
        self.env.__exit__()
        self.assertEqual(KubeSpawner.reflectors, {}, "a Kubernetes reflector was started")

    def test_hub_answer_is_a_nonempty_list_with_unique_slugs(self):
        self.assertIsInstance(self.profiles, list)
        self.assertTrue(self.profiles, "the hub returned no profiles")
        slugs = [p.get("slug") for p in self.profiles]
        for slug in slugs:
            self.assertRegex(slug or "", r"^[a-z0-9][a-z0-9-]*$", f"slug {slug!r} missing or not [a-z0-9-]")
        self.assertEqual(len(slugs), len(set(slugs)), f"duplicate slugs: {slugs}")
        defaults = [p["slug"] for p in self.profiles if p.get("default") is True]
        self.assertEqual(len(defaults), 1, f"exactly one profile must have default: true, got {defaults}")
        for p in self.profiles:
            for key, option in (p.get("profile_options") or {}).items():
                self.assertIsInstance(option.get("choices"), dict, f"{p['slug']}: option {key} has no choices object")

    def test_override_keys_are_kubespawner_traits(self):
        # KubeSpawner silently ignores an unknown scalar key ("imagee")
        traits = KubeSpawner.class_trait_names(config=True)
        for p in self.profiles:
            overrides = [("", p.get("kubespawner_override") or {})]
            for key, option in (p.get("profile_options") or {}).items():
                for choice_key, choice in (option.get("choices") or {}).items():
                    overrides.append((f" {key}={choice_key}", choice.get("kubespawner_override") or {}))
            for where, override in overrides:
                for name in override:
                    self.assertTrue(name in traits, f"{p['slug']}{where}: kubespawner_override key {name!r} is not a KubeSpawner setting")

    def test_hub_sends_etag_and_answers_304(self):
        status, headers, _ = fetch_profiles_directly(ARGS.hub_url, ARGS.token, ARGS.user, ARGS.group)
        self.assertEqual(status, 200)
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        self.assertTrue(etag, "the hub's answer has no ETag header")
        url = lp.labforge_profiles_url(ARGS.hub_url.rstrip("/"), ARGS.user, sorted(set(ARGS.group)))
        req_headers = {"If-None-Match": etag}
        if ARGS.token:
            req_headers["Authorization"] = f"Bearer {ARGS.token}"
        try:
            with urlopen(Request(url, headers=req_headers), timeout=10) as response:
                code = response.status
        except HTTPError as e:
            code = e.code
        self.assertEqual(code, 304, "If-None-Match with the hub's own ETag must give 304")

    async def test_form_renders_every_profile_and_choice(self):
        spawner = make_spawner(ARGS.user, ARGS.group)
        form = await spawner.get_options_form()
        self.assertIsInstance(form, str)
        parser = FormParser()
        parser.feed(form)
        radios = dict(parser.radios)
        for profile in self.profiles:
            slug = profile["slug"]
            self.assertIn(slug, form)
            self.assertIn(slug, radios, f"no radio button for profile {slug}")
            for key, option in (profile.get("profile_options") or {}).items():
                name = f"profile-option-{slug}--{key}"
                self.assertIn(name, parser.selects, f"no select {name}")
                offered = [v for v, _ in parser.selects[name]]
                self.assertEqual(offered, list(option["choices"]), f"choices of {name}")
                selected = [v for v, sel in parser.selects[name] if sel]
                self.assertEqual(selected, [default_choice(option)], f"pre-selected choice of {name}")
        checked = [v for v, c in parser.radios if c]
        self.assertEqual(checked, [default_profile(self.profiles)["slug"]], "pre-checked profile")

    async def _spawn(self, user_options):
        spawner = make_spawner(ARGS.user, ARGS.group)
        spawner.user_options = user_options
        await spawner.load_user_options()
        pod = k8s_to_dict(await spawner.get_pod_manifest())
        return spawner, pod

    def _check_pod(self, what, pod, profile, settings, spawner):
        spec = pod["spec"]
        container = next(c for c in spec["containers"] if c["name"] == "notebook")
        image = container["image"]
        self.assertEqual(image, settings.get("image"), f"{what}: image")
        self.assertRegex(image, DIGEST_RE, f"{what}: image {image} is not pinned by a sha256 digest")
        self.assertNotEqual(image, Z2JH_BASE["image"], f"{what}: spawned the hub's default image")

        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        gpus = (settings.get("extra_resource_limits") or {}).get(GPU)
        if gpus is not None:
            self.assertRegex(str(gpus), r"^[1-9][0-9]*$", f"{what}: GPU count {gpus!r} is not a whole number")
            self.assertEqual(str(limits.get(GPU)), str(gpus), f"{what}: limits[{GPU}]")
        else:
            self.assertNotIn(GPU, limits, f"{what}: CPU profile got a GPU limit")
        if GPU in requests:
            self.assertEqual(str(requests[GPU]), str(limits.get(GPU)), f"{what}: GPU request differs from its limit")

        for field, setting, bucket in (("cpu", "cpu_limit", limits), ("cpu", "cpu_guarantee", requests)):
            want = settings.get(setting)
            if want is None:
                self.assertNotIn(field, bucket, f"{what}: {setting} unset but pod has {field}")
            else:
                self.assertAlmostEqual(float(bucket.get(field, -1)), float(want), msg=f"{what}: {setting}")
        for setting, bucket in (("mem_limit", limits), ("mem_guarantee", requests)):
            want = settings.get(setting)
            if want is None:
                self.assertNotIn("memory", bucket, f"{what}: {setting} unset but pod has memory")
            else:
                self.assertEqual(to_bytes(bucket.get("memory", -1)), to_bytes(want), f"{what}: {setting}")

        selector = spec.get("nodeSelector") or {}
        for k, v in Z2JH_NODE_SELECTOR.items():
            self.assertEqual(selector.get(k), v, f"{what}: base nodeSelector {k} lost")
        for k, v in (settings.get("node_selector") or {}).items():
            self.assertEqual(selector.get(k), v, f"{what}: nodeSelector {k}")

        have = {toleration_key(t) for t in spec.get("tolerations") or []}
        for t in Z2JH_TOLERATIONS:
            self.assertIn(toleration_key(t), have, f"{what}: base toleration {t['key']} lost (a tolerations override replaces the list)")
        tolerations = settings.get("tolerations") or []
        if isinstance(tolerations, dict):
            tolerations = list(tolerations.values())
        for t in tolerations:
            self.assertIn(toleration_key(t), have, f"{what}: toleration {t}")

        user_server = spawner._expand_user_properties("{user_server}")
        home = f"volume-{user_server}"
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        self.assertIn(home, volumes, f"{what}: home volume {home} lost")
        self.assertEqual(volumes[home].get("persistentVolumeClaim", {}).get("claimName"), f"claim-{user_server}")
        mounts = {m["name"]: m for m in container.get("volumeMounts") or []}
        self.assertEqual(mounts.get(home, {}).get("mountPath"), "/home/jovyan", f"{what}: home mount lost")
        # Volumes the profile adds (dicts keyed by name) are there beside it
        # (the hub's own, keyed by a template like the home volume, are
        # checked above).
        for name, volume in (settings.get("volumes") or {}).items():
            if "{" in name:
                continue
            self.assertIn(name, volumes, f"{what}: volume {name} missing from the pod")
            for key, value in volume.items():
                self.assertEqual(volumes[name].get(key), value, f"{what}: volume {name}.{key}")
        for name, mount in (settings.get("volume_mounts") or {}).items():
            if "{" in name:
                continue
            self.assertIn(name, mounts, f"{what}: volume mount {name} missing from the pod")
            self.assertEqual(mounts[name].get("mountPath"), mount.get("mountPath"), f"{what}: mount {name}")

        labels = pod["metadata"].get("labels") or {}
        for k, v in (settings.get("extra_labels") or {}).items():
            self.assertEqual(labels.get(k), v, f"{what}: label {k}")

    async def test_every_profile_and_choice_spawns_as_expected(self):
        form_spawner = make_spawner(ARGS.user, ARGS.group)
        parser = FormParser()
        parser.feed(await form_spawner.get_options_form())
        count = 0
        for profile in self.profiles:
            slug = profile["slug"]
            variants = [(None, None)]
            for key, option in (profile.get("profile_options") or {}).items():
                variants += [(key, choice) for choice in option["choices"]]
            for option_key, choice_key in variants:
                what = f"{slug}" + (f" {option_key}={choice_key}" if option_key else " (defaults)")
                with self.subTest(what):
                    changed = (f"profile-option-{slug}--{option_key}", choice_key) if option_key else None
                    formdata = parser.formdata(slug, changed)
                    spawner = make_spawner(ARGS.user, ARGS.group)
                    user_options = spawner.run_options_from_form(formdata)
                    self.assertEqual(user_options.get("profile"), slug)
                    if option_key:
                        self.assertEqual(user_options.get(option_key), choice_key)
                    spawner.user_options = user_options
                    await spawner.load_user_options()
                    pod = k8s_to_dict(await spawner.get_pod_manifest())
                    selection = {option_key: choice_key} if option_key else {}
                    settings = effective_settings(profile, selection)
                    if option_key:
                        chosen = profile["profile_options"][option_key]["choices"][choice_key]
                        override = chosen.get("kubespawner_override") or {}
                        if "image" in override:
                            self.assertEqual(settings["image"], override["image"])
                        if GPU in (override.get("extra_resource_limits") or {}):
                            self.assertEqual(settings["extra_resource_limits"][GPU], override["extra_resource_limits"][GPU])
                    self._check_pod(what, pod, profile, settings, spawner)
                    count += 1
        self.assertGreater(count, 0)
        print(f"\n    spawned {count} profile/choice combinations", file=sys.stderr)

    async def test_spawn_without_user_options_gets_default_profile(self):
        spawner, pod = await self._spawn({})
        profile = default_profile(self.profiles)
        self._check_pod("no user_options", pod, profile, effective_settings(profile, {}), spawner)

    async def test_expected_images(self):
        if not ARGS.expect_images:
            self.skipTest("no --expect-images")
        with open(ARGS.expect_images, encoding="utf-8") as f:
            expected = json.load(f)
        self.assertIsInstance(expected, dict, "--expect-images must be a JSON object slug -> image")
        slugs = {p["slug"] for p in self.profiles}
        for slug, image in expected.items():
            with self.subTest(slug):
                self.assertIn(slug, slugs, f"expected profile {slug} is not in the hub's list {sorted(slugs)}")
                _, pod = await self._spawn({"profile": slug})
                container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
                self.assertEqual(container["image"], image, f"{slug}: spawned image")


# --- e: fallback, against a fake hub this script starts -----------------------------

class Fallback(unittest.IsolatedAsyncioTestCase):
    TOKEN = "s3cret-token"
    GROUPS = ["ml & ai", "gpu-users", "ml & ai"]
    USER = "ana maria+test@uni.example"

    async def asyncSetUp(self):
        self.profiles = sample_profiles()
        self.hub = FakeHub(self.profiles, token=self.TOKEN)
        self.env = HubEnv(self.hub.url, self.TOKEN, "0.5")
        self.env.__enter__()
        lp.labforge_profile_cache_clear()

    async def asyncTearDown(self):
        self.env.__exit__()
        self.hub.close()

    def spawner(self, groups=None):
        return make_spawner(self.USER, self.GROUPS if groups is None else groups)

    async def test_query_and_token_are_sent(self):
        got = await lp.labforge_profile_list(self.spawner())
        self.assertEqual(got, self.profiles)
        request = self.hub.requests[-1]
        self.assertEqual(request["path"], "/api/v1/profiles")
        self.assertEqual(request["query"].get("user"), [self.USER])
        self.assertEqual(request["query"].get("group"), ["gpu-users", "ml & ai"])
        self.assertEqual(request["headers"].get("Authorization"), f"Bearer {self.TOKEN}")
        self.assertNotIn("If-None-Match", request["headers"])

    async def test_etag_avoids_download(self):
        first = await lp.labforge_profile_list(self.spawner())
        second = await lp.labforge_profile_list(self.spawner())
        self.assertEqual(self.hub.statuses, [200, 304])
        self.assertIn("If-None-Match", self.hub.requests[-1]["headers"])
        self.assertEqual(first, second)
        second[0]["slug"] = "changed-by-caller"
        third = await lp.labforge_profile_list(self.spawner())
        self.assertEqual(third, self.profiles, "callers must not be able to change the cached list")

    async def test_500_uses_last_good_list(self):
        await lp.labforge_profile_list(self.spawner())
        self.hub.mode = "500"
        spawner = self.spawner()
        got = await lp.labforge_profile_list(spawner)
        self.assertEqual(got, self.profiles)
        warnings = [m for level, m in spawner.log_messages if level == "WARNING"]
        self.assertTrue(any("HTTP 500" in m and "last good profile list" in m for m in warnings), warnings)

    async def test_hang_past_timeout_uses_last_good_list(self):
        await lp.labforge_profile_list(self.spawner())
        self.hub.mode = "hang"
        spawner = self.spawner()
        started = time.monotonic()
        got = await lp.labforge_profile_list(spawner)
        elapsed = time.monotonic() - started
        self.assertEqual(got, self.profiles)
        self.assertLess(elapsed, 2.5, "LABFORGE_HUB_TIMEOUT=0.5 was not honoured")
        warnings = [m for level, m in spawner.log_messages if level == "WARNING"]
        self.assertTrue(any("imeout" in m for m in warnings), warnings)

    async def test_bad_answers_use_last_good_list(self):
        await lp.labforge_profile_list(self.spawner())
        self.hub.mode = "raw"
        for body, reason in (
            (b"<html>oops</html>", "not JSON"),
            (b'{"profiles": []}', "not a list"),
            (b'["x"]', "not an object"),
            (b'[{"slug": "a"}]', "display_name"),
        ):
            with self.subTest(body=body):
                self.hub.raw_body = body
                spawner = self.spawner()
                got = await lp.labforge_profile_list(spawner)
                self.assertEqual(got, self.profiles)
                warnings = [m for level, m in spawner.log_messages if level == "WARNING"]
                self.assertTrue(any(reason in m for m in warnings), (reason, warnings))

    async def test_empty_list_is_an_answer_not_a_failure(self):
        await lp.labforge_profile_list(self.spawner())  # a good list cached
        self.hub.mode = "raw"
        self.hub.raw_body = b"[]"
        with self.assertRaisesRegex(RuntimeError, "offers no environment"):
            await lp.labforge_profile_list(self.spawner())
        # The empty answer replaced the cached list: an outage now does not
        # bring back images that were withdrawn.
        self.hub.mode = "500"
        with self.assertRaisesRegex(RuntimeError, "offers no environment"):
            await lp.labforge_profile_list(self.spawner())

    async def test_wrapped_answer_is_unwrapped(self):
        self.hub.mode = "raw"
        self.hub.raw_body = json.dumps({"profile_list": self.profiles}).encode()
        got = await lp.labforge_profile_list(self.spawner())
        self.assertEqual(got, self.profiles)

    async def test_no_earlier_list_raises(self):
        await lp.labforge_profile_list(self.spawner())  # cached for GROUPS only
        for mode in ("500", "hang"):
            with self.subTest(mode=mode):
                self.hub.mode = mode
                with self.assertRaises(RuntimeError) as caught:
                    await lp.labforge_profile_list(self.spawner(groups=["other-course"]))
                message = str(caught.exception)
                self.assertIn(f"labforge hub {self.hub.url} unreachable", message)
                self.assertIn("no earlier profile list to fall back on", message)

    async def test_connection_refused_without_list_raises(self):
        url = self.hub.url
        self.hub.close()
        with self.assertRaises(RuntimeError) as caught:
            await lp.labforge_profile_list(self.spawner())
        self.assertIn(f"labforge hub {url} unreachable", str(caught.exception))

    async def test_wrong_token_raises(self):
        with HubEnv(self.hub.url, "wrong", "0.5"):
            with self.assertRaises(RuntimeError) as caught:
                await lp.labforge_profile_list(self.spawner())
        self.assertIn("HTTP 401", str(caught.exception))

    async def test_missing_url_raises(self):
        with HubEnv(None):
            with self.assertRaises(RuntimeError) as caught:
                await lp.labforge_profile_list(self.spawner())
        self.assertIn("LABFORGE_HUB_URL", str(caught.exception))

    async def test_bad_timeout_raises(self):
        with HubEnv(self.hub.url, self.TOKEN, "soon"):
            with self.assertRaises(RuntimeError) as caught:
                await lp.labforge_profile_list(self.spawner())
        self.assertIn("LABFORGE_HUB_TIMEOUT", str(caught.exception))

    async def test_spawn_survives_outage_and_fails_without_list(self):
        spawner = self.spawner()
        spawner.user_options = {"profile": "notebook-minimal-cpu"}
        self.hub.mode = "500"
        with self.assertRaises(RuntimeError):
            await spawner.load_user_options()
        self.assertEqual(spawner.image, Z2JH_BASE["image"])  # nothing applied, no default-image spawn
        self.hub.mode = "ok"
        await lp.labforge_profile_list(self.spawner())
        self.hub.mode = "hang"
        spawner = self.spawner()
        spawner.user_options = {"profile": "notebook-minimal-cpu"}
        await spawner.load_user_options()
        want = next(p for p in self.profiles if p["slug"] == "notebook-minimal-cpu")
        self.assertEqual(spawner.image, effective_settings(want, {})["image"])


# --- the copies in values.yaml and jupyterhub_config.py -------------------------------

class Packaging(unittest.TestCase):
    def test_import_has_no_side_effects(self):
        self.assertNotIn("c", vars(lp))
        self.assertEqual(lp._labforge_profile_cache, {})

    def test_values_yaml_embeds_the_snippet_unchanged(self):
        import yaml

        with open(VALUES_PATH, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        with open(SNIPPET_PATH, encoding="utf-8") as f:
            snippet = f.read()
        embedded = values["hub"]["extraConfig"][VALUES_SNIPPET_KEY]
        self.assertEqual(
            embedded, snippet,
            "values.yaml hub.extraConfig.%s differs from labforge_profiles.py: paste the file again" % VALUES_SNIPPET_KEY,
        )
        self.assertEqual(values["singleuser"]["profileList"], [])
        env = values["hub"]["extraEnv"]
        self.assertIn("LABFORGE_HUB_URL", env)
        self.assertIn("secretKeyRef", env["LABFORGE_HUB_TOKEN"]["valueFrom"])
        # z2jh runs extraConfig like this, with `c` in the namespace
        namespace = {"c": Config()}
        exec(compile(embedded, "extraConfig", "exec"), namespace)
        self.assertEqual(namespace["c"].KubeSpawner.profile_list.__name__, "labforge_profile_list")

    def test_example_jupyterhub_config_loads_the_snippet(self):
        from traitlets.config.loader import PyFileConfigLoader

        config = PyFileConfigLoader(os.path.basename(CONFIG_PATH), HERE).load_config()
        profile_list = config.KubeSpawner.profile_list
        self.assertTrue(callable(profile_list))
        self.assertEqual(profile_list.__name__, "labforge_profile_list")


# --- runner ------------------------------------------------------------------------

def main(argv=None):
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub-url", help="the labforge hub to test, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="bearer token for the hub")
    parser.add_argument("--expect-images", help="JSON file: {slug: expected image reference}")
    parser.add_argument("--profiles-file", help="serve this profile list from a fake hub instead of --hub-url")
    parser.add_argument("--user", default="labforge-ci", help="user name to ask for (default %(default)s)")
    parser.add_argument("--group", action="append", help="a group of that user (repeatable; default labforge-ci)")
    parser.add_argument("--timeout", default="10", help="LABFORGE_HUB_TIMEOUT for the hub under test")
    parser.add_argument("-v", "--verbose", action="store_true")
    ARGS = parser.parse_args(argv)
    if ARGS.group is None:
        ARGS.group = ["labforge-ci"]
    if bool(ARGS.hub_url) == bool(ARGS.profiles_file):
        parser.error("give exactly one of --hub-url and --profiles-file")

    fake = None
    if ARGS.profiles_file:
        with open(ARGS.profiles_file, encoding="utf-8") as f:
            fake = FakeHub(json.load(f), token=ARGS.token)
        ARGS.hub_url = fake.url
        print(f"fake labforge hub serving {ARGS.profiles_file} at {fake.url}", file=sys.stderr)

    logging.basicConfig(level=logging.WARNING)
    # IsolatedAsyncioTestCase runs loops in debug mode, which logs every slow step
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in (Packaging, ProfilesAgainstHub, Fallback):
        suite.addTests(loader.loadTestsFromTestCase(case))
    started = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    if fake:
        fake.close()

    # a failing subTest is reported with its parent test in .test_case
    failed = len({getattr(t, "test_case", t).id() for t, _ in result.failures + result.errors})
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"finished in {time.monotonic() - started:.1f}s", file=sys.stderr)
    line = f"{passed} passed, {failed} failed"
    print(line + (f", {skipped} skipped" if skipped else ""))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
