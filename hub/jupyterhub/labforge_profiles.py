"""KubeSpawner ``profile_list`` served by the labforge hub.

A drop-in for JupyterHub's configuration: paste this file into
zero-to-jupyterhub's ``hub.extraConfig`` (see values.yaml beside it), or load it
from a plain ``jupyterhub_config.py`` (see jupyterhub_config.py beside it). It
only defines functions and an empty cache when it is imported; the last line
sets ``c.KubeSpawner.profile_list`` only when it runs inside a JupyterHub
configuration file, where ``c`` exists.

What it does
------------
``labforge_profile_list(spawner)`` is an async callable for
``c.KubeSpawner.profile_list``. KubeSpawner calls it when it renders the spawn
form and again when the server starts (``load_user_options``). Each call asks
the labforge hub for the profiles this user may use::

    GET $LABFORGE_HUB_URL/api/v1/profiles?user=<name>&group=<g1>&group=<g2>
    Authorization: Bearer $LABFORGE_HUB_TOKEN      (only when the token is set)
    If-None-Match: <ETag of the last good answer>  (only when there is one)

Configuration (environment variables, read on every call so that a changed
Secret needs no config reload, only a hub restart to refresh the environment):

* ``LABFORGE_HUB_URL`` (required): the labforge hub's base address, e.g.
  ``http://labforge-hub:8080``.
* ``LABFORGE_HUB_TOKEN`` (optional): bearer token when the operator protects
  reads of the hub.
* ``LABFORGE_HUB_TIMEOUT`` (optional, seconds, default 5): limit for connecting
  and for the whole request.

What it returns, and why
------------------------
* Always a **list** of profile dicts. KubeSpawner 7.1.0 does not sort the
  result of a callable into a list, so a dict return breaks the form and every
  spawn (``TypeError: string indices must be integers``). An answer wrapped as
  ``{"profile_list": [...]}`` is unwrapped.
* The answer is checked: a non-empty list of dicts, each with a string
  ``display_name`` and, when present, a string ``slug`` and dict
  ``kubespawner_override`` / ``profile_options``. Anything else counts as a
  failed fetch.
* The last good list is kept in memory per set of user groups (the hub filters
  by group), together with its ``ETag``. A ``304 Not Modified`` answer reuses
  it without downloading the list again.
* On any failure (timeout, connection error, a status other than 200/304, bad
  JSON, a list that fails the checks above) the last good list for the same
  groups is returned and a warning with the reason goes to ``spawner.log``.
* With no earlier list to fall back on it raises ``RuntimeError("labforge hub
  <url> unreachable: <reason>; no earlier profile list to fall back on")``:
  the spawn form shows the error and the spawn fails. It never returns ``[]``:
  an empty list makes KubeSpawner start the hub's default image instead of a
  catalog image. For the same reason an empty list from the hub is refused.

The cache lives in the JupyterHub process and is empty after a restart.

HTTP client: tornado's ``AsyncHTTPClient``, which JupyterHub already ships and
uses itself. It runs on the hub's event loop without blocking it, and its
``request_timeout`` bounds the whole request and closes the connection.
``urllib`` in a worker thread would need no event loop, but its timeout applies
to each socket operation rather than the whole request, and a thread stuck on a
slow server cannot be cancelled.
"""

import copy
import json
import os
import time
from urllib.parse import urlencode

_LABFORGE_PROFILES_PATH = "/api/v1/profiles"
_LABFORGE_DEFAULT_TIMEOUT = 5.0

# (sorted group names) -> {"profiles": list, "etag": str | None, "fetched_at": float}
_labforge_profile_cache = {}


def labforge_profile_cache_clear():
    """Forget every remembered profile list (used by tests)."""
    _labforge_profile_cache.clear()


def _labforge_settings():
    """Read LABFORGE_HUB_URL, LABFORGE_HUB_TOKEN and LABFORGE_HUB_TIMEOUT."""
    base_url = os.environ.get("LABFORGE_HUB_URL", "").strip().rstrip("/")
    if not base_url:
        raise RuntimeError(
            "LABFORGE_HUB_URL is not set: set it to the labforge hub's address, "
            "e.g. http://labforge-hub:8080"
        )
    token = os.environ.get("LABFORGE_HUB_TOKEN", "").strip() or None
    raw_timeout = os.environ.get("LABFORGE_HUB_TIMEOUT", "").strip()
    if raw_timeout:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise RuntimeError(
                f"LABFORGE_HUB_TIMEOUT must be a positive number of seconds, "
                f"not {raw_timeout!r}"
            )
    else:
        timeout = _LABFORGE_DEFAULT_TIMEOUT
    return base_url, token, timeout


def _labforge_user_groups(spawner):
    """The sorted, de-duplicated names of the spawner's user's groups."""
    names = set()
    for group in getattr(spawner.user, "groups", None) or []:
        name = getattr(group, "name", group)
        if isinstance(name, str) and name:
            names.add(name)
    return sorted(names)


def labforge_profiles_url(base_url, user_name, groups):
    """The profiles URL with ``user=`` and one ``group=`` per group, url-encoded."""
    query = urlencode([("user", user_name)] + [("group", g) for g in groups])
    return f"{base_url}{_LABFORGE_PROFILES_PATH}?{query}"


def labforge_parse_profiles(body):
    """Parse and check a profiles answer; return the list or raise ValueError.

    Accepts a JSON array of profiles or ``{"profile_list": [...]}``.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"answer is not JSON ({e})") from None
    if isinstance(data, dict) and "profile_list" in data:
        data = data["profile_list"]
    if not isinstance(data, list):
        raise ValueError(
            f"answer is a JSON {type(data).__name__}, not a list of profiles"
        )
    for index, profile in enumerate(data):
        where = f"profile #{index}"
        if not isinstance(profile, dict):
            raise ValueError(f"{where} is a JSON {type(profile).__name__}, not an object")
        if "slug" in profile:
            if not isinstance(profile["slug"], str) or not profile["slug"]:
                raise ValueError(f"{where} has a slug that is not a non-empty string")
            where = f"profile {profile['slug']!r}"
        if not isinstance(profile.get("display_name"), str):
            raise ValueError(f"{where} has no string display_name")
        for key in ("kubespawner_override", "profile_options"):
            if key in profile and not isinstance(profile[key], dict):
                raise ValueError(f"{where}: {key} is not an object")
    return data


async def _labforge_fetch(url, token, timeout, etag):
    """GET the profiles; return (status, body bytes, ETag header or None)."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if etag:
        headers["If-None-Match"] = etag
    request = HTTPRequest(
        url,
        method="GET",
        headers=headers,
        connect_timeout=timeout,
        request_timeout=timeout,
        follow_redirects=False,
    )
    # raise_error=False returns non-2xx answers (304 included); timeouts and
    # connection errors still raise.
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, response.body or b"", response.headers.get("ETag")


def _labforge_nonempty(profiles, spawner, groups):
    """A copy of ``profiles``; an empty list is refused with a clear error.

    KubeSpawner given ``[]`` starts the hub's default image instead of
    saying that nothing is available, so the spawn fails here with a reason.
    """
    if not profiles:
        raise RuntimeError(
            f"the labforge hub offers no environment to {spawner.user.name} "
            f"(groups: {', '.join(groups) or 'none'}); ask the hub's "
            "maintainers which environments your course may use"
        )
    return copy.deepcopy(profiles)


async def labforge_profile_list(spawner):
    """KubeSpawner ``profile_list`` callable: the user's profiles from labforge."""
    base_url, token, timeout = _labforge_settings()
    groups = _labforge_user_groups(spawner)
    key = tuple(groups)
    url = labforge_profiles_url(base_url, spawner.user.name, groups)
    cached = _labforge_profile_cache.get(key)

    reason = None
    try:
        status, body, etag = await _labforge_fetch(
            url, token, timeout, cached["etag"] if cached else None
        )
    except Exception as e:  # timeout, refused, DNS, TLS ...
        reason = f"{type(e).__name__}: {e}"
    else:
        if status == 304 and cached is not None:
            return _labforge_nonempty(cached["profiles"], spawner, groups)
        if status == 200:
            try:
                profiles = labforge_parse_profiles(body)
            except ValueError as e:
                reason = f"bad answer from {url}: {e}"
            else:
                # An empty list is an answer, not a failure: nothing is
                # available to these groups (e.g. every image they had was
                # withdrawn by a failing rescan). It replaces the cached list,
                # so a withdrawn image is never offered again from the cache.
                _labforge_profile_cache[key] = {
                    "profiles": profiles,
                    "etag": etag,
                    "fetched_at": time.time(),
                }
                return _labforge_nonempty(profiles, spawner, groups)
        else:
            snippet = body[:200].decode("utf-8", "replace").strip()
            reason = f"HTTP {status} from {url}" + (f": {snippet}" if snippet else "")

    if cached is None:
        raise RuntimeError(
            f"labforge hub {base_url} unreachable: {reason}; "
            "no earlier profile list to fall back on"
        )
    if not cached["profiles"]:
        return _labforge_nonempty(cached["profiles"], spawner, groups)
    age = int(time.time() - cached["fetched_at"])
    spawner.log.warning(
        "labforge hub %s unreachable: %s; using the last good profile list "
        "for groups %s, fetched %ss ago",
        base_url,
        reason,
        list(key),
        age,
    )
    return copy.deepcopy(cached["profiles"])


if "c" in globals():
    c.KubeSpawner.profile_list = labforge_profile_list  # noqa: F821
