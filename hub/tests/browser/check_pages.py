#!/usr/bin/env python3
"""Browser checks of the hub's web catalog in headless Chromium.

Loads the running hub's pages at desktop and phone sizes, with and without
JavaScript, and checks what a user depends on: no horizontal scrolling,
landmarks, labelled form controls, keyboard focus, WCAG AA text contrast, the
filter form, the search, an image page's launch link and tables. Saves a
full-page PNG of every page checked.

    python3 hub/tests/browser/check_pages.py --base-url http://127.0.0.1:8080 \
        --out /tmp/web-shots [--image deeplearning-cuda]

Needs Python Playwright (pip) and Debian's `chromium` package; it never
downloads a browser. Exits 0 when every check passed, 1 when a check failed
(each failure is printed), 2 when the pages could not be checked at all.
It reads only what the pages show (their markup and data attributes), so it
runs the same against `labforge serve` and any other server of these pages.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - environment problem, not a check
    print("error: python playwright is missing: pip install playwright", file=sys.stderr)
    sys.exit(2)

SIZES = {"desktop": (1280, 800), "phone": (375, 812)}
MIN_CONTRAST = 4.5
LAUNCH_RE = re.compile(r"/hub/spawn\?profile=[a-z0-9][a-z0-9-]*$")

# Runs in the page: returns text elements whose contrast is below the minimum,
# and the ratios of body text and links.
CONTRAST_JS = r"""
(minRatio) => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const blend = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const canvas = () => {
    // The canvas follows the used color-scheme when nothing sets a background.
    const dark = matchMedia('(prefers-color-scheme: dark)').matches;
    return dark ? { r: 18, g: 18, b: 18, a: 1 } : { r: 255, g: 255, b: 255, a: 1 };
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let base = canvas();
    for (let i = layers.length - 1; i >= 0; i--) base = blend(layers[i], base);
    return base;
  };
  const ratio = (el) => {
    const st = getComputedStyle(el);
    let fg = parse(st.color);
    const bg = background(el);
    if (!fg) return null;
    if (fg.a < 1) fg = blend(fg, bg);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return { ratio: (l1 + 0.05) / (l2 + 0.05), fg: st.color, bg: `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})` };
  };
  const visible = (el) => {
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none') return false;
    const rects = el.getClientRects();
    if (!rects.length) return false;
    const r = el.getBoundingClientRect();
    return r.width > 1 && r.height > 1 && r.bottom > 0;
  };
  const ownText = (el) => Array.from(el.childNodes)
    .filter((n) => n.nodeType === Node.TEXT_NODE)
    .map((n) => n.textContent).join('').trim();
  const failures = [];
  let checked = 0;
  for (const el of document.body.querySelectorAll('*')) {
    if (['SCRIPT', 'STYLE', 'OPTION', 'SELECT', 'INPUT', 'TEXTAREA'].includes(el.tagName)) continue;
    const text = ownText(el);
    if (!text || !visible(el)) continue;
    const r = ratio(el);
    if (!r) continue;
    checked++;
    if (r.ratio < minRatio) {
      failures.push({ tag: el.tagName.toLowerCase(), cls: el.className || '', text: text.slice(0, 60), ratio: Math.round(r.ratio * 100) / 100, fg: r.fg, bg: r.bg });
    }
  }
  const sample = (sel) => { const el = document.querySelector(sel); const r = el && ratio(el); return r ? Math.round(r.ratio * 100) / 100 : null; };
  return { checked, failures, body: sample('main p'), link: sample('main a') };
}
"""

# Runs in the page: form controls without an accessible name.
UNLABELLED_JS = r"""
() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter((el) => !['hidden', 'submit', 'button', 'reset', 'image'].includes((el.type || '').toLowerCase()))
  .filter((el) => {
    if (el.getAttribute('aria-label') && el.getAttribute('aria-label').trim()) return false;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(/\s+/).some((id) => { const l = document.getElementById(id); return l && l.textContent.trim(); })) return false;
    if (Array.from(el.labels || []).some((l) => l.textContent.trim())) return false;
    return true;
  })
  .map((el) => `<${el.tagName.toLowerCase()} name=${el.name || '?'} id=${el.id || '?'}>`)
"""

CARDS_JS = r"""
() => Array.from(document.querySelectorAll('[data-name][data-gpu]'))
  .filter((el) => el.closest('main') && !el.matches('article.image-page'))
  .map((el) => ({
    name: el.dataset.name,
    gpu: el.dataset.gpu,
    frameworks: (el.dataset.frameworks || '').split(' ').filter(Boolean),
    href: (el.querySelector('a[href*="/images/"]') || {}).href || null,
  }))
"""


def text_of(locator) -> str:
    """The element's text as a screen reader reads it (hidden helper text included)."""
    return locator.evaluate("el => (el.getAttribute('aria-label') || el.textContent).replace(/\\s+/g, ' ').trim()")


class Checker:
    def __init__(self, base_url: str, out: Path, image: str | None) -> None:
        self.base = base_url.rstrip("/")
        self.out = out
        self.image = image
        self.failures: list[str] = []
        self.passed = 0
        self.shots: list[Path] = []

    # -- bookkeeping -------------------------------------------------------
    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok   {what}")
        else:
            msg = f"{what}: {detail}" if detail else what
            self.failures.append(msg)
            print(f"  FAIL {msg}")
        return ok

    def url(self, path: str) -> str:
        return self.base + path

    def shot(self, page, name: str) -> None:
        path = self.out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    # -- checks shared by every page ---------------------------------------
    def common(self, page, label: str, size: str) -> None:
        width = page.evaluate("window.innerWidth")
        scroll = page.evaluate("document.scrollingElement.scrollWidth")
        self.check(scroll <= width, f"{label} [{size}] no horizontal overflow",
                   f"scrollWidth {scroll} > innerWidth {width}")
        for landmark in ("header", "nav", "main", "footer"):
            self.check(page.locator(landmark).count() > 0, f"{label} [{size}] has <{landmark}>")
        self.check(page.evaluate("document.documentElement.lang") == "en", f"{label} [{size}] lang=en")
        self.check(page.locator("h1").count() == 1, f"{label} [{size}] exactly one h1",
                   f"found {page.locator('h1').count()}")
        unlabelled = page.evaluate(UNLABELLED_JS)
        self.check(not unlabelled, f"{label} [{size}] every form control has a label", ", ".join(unlabelled))
        contrast = page.evaluate(CONTRAST_JS, MIN_CONTRAST)
        bad = "; ".join(
            f"<{f['tag']} class='{f['cls']}'> '{f['text']}' {f['ratio']}:1 ({f['fg']} on {f['bg']})"
            for f in contrast["failures"][:8]
        )
        self.check(contrast["checked"] > 0 and not contrast["failures"],
                   f"{label} [{size}] text contrast >= {MIN_CONTRAST}:1 "
                   f"({contrast['checked']} elements; body {contrast['body']}:1, link {contrast['link']}:1)",
                   bad or "no text found")

    def keyboard(self, page, label: str) -> None:
        page.keyboard.press("Tab")
        first = page.evaluate(
            "(() => { const a = document.activeElement; return a ? "
            "{ href: a.getAttribute('href'), outline: getComputedStyle(a).outlineStyle, "
            "width: parseFloat(getComputedStyle(a).outlineWidth) } : null })()"
        )
        ok = bool(first) and (first.get("href") or "").startswith("#")
        self.check(ok, f"{label} first Tab reaches the skip link", str(first))
        if ok:
            target = first["href"][1:]
            self.check(page.locator(f"main#{target}, #{target} main, main #{target}").count() > 0
                       or page.evaluate(f"!!document.getElementById({target!r})"),
                       f"{label} skip link target #{target} exists")
            self.check(first["outline"] != "none" and first["width"] >= 2,
                       f"{label} focused link shows a visible outline", str(first))

    # -- the pages ---------------------------------------------------------
    def goto(self, page, path: str, expect_status: int = 200):
        resp = page.goto(self.url(path), wait_until="load")
        status = resp.status if resp else None
        self.check(status == expect_status, f"GET {path} answers {expect_status}", f"got {status}")
        return resp

    def cards(self, page) -> list[dict]:
        return page.evaluate(CARDS_JS)

    def submit_filters(self, page, **values: str) -> None:
        form = page.locator("main form").first
        for name, value in values.items():
            field = form.locator(f"[name={name}]")
            if field.evaluate("el => el.tagName") == "SELECT":
                field.select_option(value)
            else:
                field.fill(value)
        with page.expect_navigation(wait_until="load"):
            form.locator("button[type=submit], input[type=submit]").first.click()

    def index_pages(self, browser) -> list[dict]:
        all_cards: list[dict] = []
        for size, (w, h) in SIZES.items():
            print(f"index [{size}]")
            ctx = browser.new_context(viewport={"width": w, "height": h})
            page = ctx.new_page()
            self.goto(page, "/")
            cards = self.cards(page)
            self.check(len(cards) > 0, f"index [{size}] lists environments (cards with data-name, data-gpu)")
            self.check(all(c["href"] for c in cards), f"index [{size}] every card links to its page")
            launch = page.locator("main a[href*='/hub/spawn?profile=']")
            self.check(launch.count() == len(cards), f"index [{size}] one launch link per card",
                       f"{launch.count()} links for {len(cards)} cards")
            names = [text_of(launch.nth(i)) for i in range(launch.count())]
            self.check(all(n.startswith("Launch ") and len(n) > len("Launch ") for n in names),
                       f"index [{size}] launch links name their environment", str(names[:3]))
            self.common(page, "index", size)
            self.shot(page, f"index-{size}")
            if size == "desktop":
                all_cards = cards
                self.keyboard(page, "index")
            ctx.close()
        # Dark scheme: contrast again.
        print("index [desktop, dark]")
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
        page = ctx.new_page()
        self.goto(page, "/")
        self.common(page, "index dark", "desktop")
        self.shot(page, "index-dark-desktop")
        ctx.close()
        return all_cards

    def filter_and_search(self, browser, all_cards: list[dict]) -> None:
        print("filters and search [desktop]")
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        self.goto(page, "/")
        for gpu, flag in (("cpu", "false"), ("gpu", "true")):
            self.goto(page, "/")
            self.submit_filters(page, gpu=gpu)
            query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
            self.check(query.get("gpu") == [gpu], f"filter form submits gpu={gpu} by GET", page.url)
            got = self.cards(page)
            want = [c["name"] for c in all_cards if c["gpu"] == flag]
            self.check(all(c["gpu"] == flag for c in got), f"gpu={gpu}: only data-gpu={flag} results",
                       str([c["name"] for c in got if c["gpu"] != flag]))
            self.check([c["name"] for c in got] == want, f"gpu={gpu}: every matching environment listed",
                       f"got {[c['name'] for c in got]}, want {want}")
            selected = page.locator("main form select[name=gpu]").input_value()
            self.check(selected == gpu, f"gpu={gpu}: the select keeps the chosen value", selected)
            self.common(page, f"index gpu={gpu}", "desktop")
            self.shot(page, f"index-{gpu}-desktop")

        # Search: a term taken from the page itself (a framework, else a name).
        term, expect = None, None
        for c in all_cards:
            if c["frameworks"]:
                term, expect = c["frameworks"][0], c["name"]
                break
        if term is None and all_cards:
            term, expect = all_cards[0]["name"], all_cards[0]["name"]
        if term:
            self.goto(page, "/")
            self.submit_filters(page, q=term.upper())
            got = [c["name"] for c in self.cards(page)]
            self.check(expect in got, f"search '{term.upper()}' finds {expect} (case-insensitive)", str(got))
            self.check(set(got) <= {c["name"] for c in all_cards}, "search results come from the list")
            self.check(page.locator("main form [name=q]").input_value() == term.upper(),
                       "search box keeps the term")
            self.shot(page, "search-desktop")
        nothing = "zz-no-such-environment-zz"
        self.goto(page, "/")
        self.submit_filters(page, q=nothing)
        self.check(not self.cards(page), "a search without match lists nothing")
        self.check(page.locator("main a[href='/']").count() > 0 or page.locator("main a[href$='/']").count() > 0,
                   "an empty result offers to clear the filters")
        self.shot(page, "search-empty-desktop")
        ctx.close()

    def image_pages(self, browser, all_cards: list[dict]) -> None:
        if not all_cards:
            self.check(False, "image page", "no environment listed to open")
            return
        chosen = all_cards[0]
        if self.image:
            match = [c for c in all_cards if c["name"] == self.image]
            if not self.check(bool(match), f"--image {self.image} is listed on the index"):
                return
            chosen = match[0]
        name = chosen["name"]
        for size, (w, h) in SIZES.items():
            print(f"image {name} [{size}]")
            ctx = browser.new_context(viewport={"width": w, "height": h})
            page = ctx.new_page()
            self.goto(page, "/")
            link = page.locator(f"main [data-name='{name}'] a[href*='/images/']").first
            with page.expect_navigation(wait_until="load"):
                link.click()
            path = urllib.parse.urlparse(page.url).path
            self.check(path.rstrip("/").endswith(f"/images/{name}"), f"image [{size}] card link opens /images/{name}",
                       page.url)
            launch = page.locator("main a[href*='/hub/spawn']").first
            href = launch.get_attribute("href") if launch.count() else None
            self.check(bool(href) and bool(LAUNCH_RE.search(href)),
                       f"image [{size}] launch link ends with /hub/spawn?profile=<slug>", str(href))
            if href:
                text = text_of(launch)
                self.check(text.startswith("Launch") and len(text) > len("Launch"),
                           f"image [{size}] launch link text names the environment", text)
                moodle = page.locator("main input[readonly]")
                value = moodle.first.input_value() if moodle.count() else None
                self.check(value == href, f"image [{size}] Moodle field holds the launch URL", str(value))
            self.check(page.locator("main table.packages").count() > 0, f"image [{size}] packages table exists")
            self.check(page.locator("main table.versions-table, main table#versions").count() == 1,
                       f"image [{size}] versions table exists")
            self.check(page.locator("main table th[scope]").count() > 0
                       and page.locator("main table th:not([scope])").count() == 0,
                       f"image [{size}] table headers have scope")
            self.check(page.locator("nav[aria-label] a[href='/']").count() > 0,
                       f"image [{size}] breadcrumb back to the list")
            self.common(page, f"image {name}", size)
            self.shot(page, f"image-{name}-{size}")
            # Opening every package group must not make the page scroll sideways.
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            width = page.evaluate("window.innerWidth")
            scroll = page.evaluate("document.scrollingElement.scrollWidth")
            self.check(scroll <= width, f"image [{size}] no horizontal overflow with all details open",
                       f"scrollWidth {scroll} > innerWidth {width}")
            self.shot(page, f"image-{name}-{size}-open")
            ctx.close()

    def without_javascript(self, browser, all_cards: list[dict]) -> None:
        print("index without JavaScript [desktop]")
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=False)
        page = ctx.new_page()
        self.goto(page, "/")
        names = [c["name"] for c in self.cards(page)]
        self.check(names == [c["name"] for c in all_cards], "no JS: the same list renders",
                   f"{names} != {[c['name'] for c in all_cards]}")
        self.submit_filters(page, gpu="cpu")
        got = self.cards(page)
        want = [c["name"] for c in all_cards if c["gpu"] == "false"]
        self.check("gpu=cpu" in page.url and [c["name"] for c in got] == want,
                   "no JS: the filter form submits and filters", f"{page.url}: {[c['name'] for c in got]}")
        self.shot(page, "index-cpu-nojs-desktop")
        ctx.close()

    def not_found(self, browser) -> None:
        print("not found [phone]")
        ctx = browser.new_context(viewport={"width": 375, "height": 812})
        page = ctx.new_page()
        self.goto(page, "/images/zz-no-such-environment-zz", expect_status=404)
        self.check(page.locator("main a[href='/']").count() > 0, "404 page links home")
        self.common(page, "404", "phone")
        self.shot(page, "not-found-phone")
        ctx.close()


def chromium_path(arg: str | None) -> str:
    for candidate in (arg, os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    print("error: no chromium found: apt-get install -y chromium, or pass --chromium PATH", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="the hub, e.g. http://127.0.0.1:8080")
    ap.add_argument("--out", required=True, type=Path, help="folder for the screenshots (PNG)")
    ap.add_argument("--image", help="image page to check (default: the first listed)")
    ap.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM_PATH, then chromium on PATH)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checker = Checker(args.base_url, args.out, args.image)
    exe = chromium_path(args.chromium)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            try:
                cards = checker.index_pages(browser)
                checker.filter_and_search(browser, cards)
                checker.image_pages(browser, cards)
                checker.without_javascript(browser, cards)
                checker.not_found(browser)
            finally:
                browser.close()
    except PlaywrightError as e:
        print(f"error: the pages could not be checked at {args.base_url}: {e}", file=sys.stderr)
        print(f"{checker.passed} passed, {len(checker.failures) + 1} failed")
        return 2
    print(f"screenshots: {len(checker.shots)} in {args.out}")
    for f in checker.failures:
        print(f"FAILED: {f}", file=sys.stderr)
    print(f"{checker.passed} passed, {len(checker.failures)} failed")
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main())
