"""Browser helpers: a tab that records console errors, signs in, and checks a page.

Selectors go by accessible role and label (``get_by_role``, ``get_by_label``): if a test
cannot find a control that way, neither can a screen reader user.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Page, expect

from meshclaw.demo import DEMO_PASSWORD as PASSWORD

TIMEOUT_MS = 20_000
"""Generous: CI machines are shared and a run's first mail call starts an MCP server."""
expect.set_options(timeout=TIMEOUT_MS)
# What every page must offer, checked in the page itself (axe-core is not installed: a
# CDN or npm download is not an option here): labels, names, alt texts, one h1, text
# contrast, no sideways scrolling. Returns a list of problems, empty if fine.
_A11Y_CHECK = r"""() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label")
    || el.getAttribute("aria-labelledby") || el.getAttribute("title");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    const type = (el.getAttribute("type") || "").toLowerCase();
    if (["hidden", "submit", "button", "reset", "image"].includes(type)) continue;
    if (!named(el)) problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name || el.id}`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (!visible(el)) continue;
    const text = (el.innerText || "").trim() || el.getAttribute("aria-label")
      || el.getAttribute("title");
    if (!text) problems.push(`unnamed ${el.tagName.toLowerCase()}: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`img without alt: ${img.src}`);
  }
  const h1 = document.querySelectorAll("h1").length;
  if (h1 !== 1) problems.push(`${h1} h1 elements (want exactly one)`);
  if (!document.documentElement.lang) problems.push("html without lang");
  if (!document.title.trim()) problems.push("empty title");
  for (const el of document.querySelectorAll("[aria-labelledby], [aria-describedby], label[for]")) {
    const refs = [el.getAttribute("aria-labelledby"), el.getAttribute("aria-describedby"),
      el.getAttribute("for")].filter(Boolean).join(" ").split(/\s+/).filter(Boolean);
    for (const ref of refs) {
      if (!document.getElementById(ref)) problems.push(`reference to missing id ${ref}`);
    }
  }
  const ids = {};
  for (const el of document.querySelectorAll("[id]")) ids[el.id] = (ids[el.id] || 0) + 1;
  for (const [id, n] of Object.entries(ids)) if (n > 1) problems.push(`id ${id} used ${n} times`);

  // Text contrast (WCAG 2 AA): 4.5:1, or 3:1 for large text, against the colour behind the
  // text (translucent layers blended; text over an image cannot be judged here, skipped).
  const rgba = (c) => {
    const m = /^rgba?\(([^)]+)\)$/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => {
    const mix = (k) => top[k] * top.a + under[k] * (1 - top.a);
    return { r: mix("r"), g: mix("g"), b: mix("b"), a: 1 };
  };
  const luminance = ({ r, g, b }) => {
    const lin = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.backgroundImage !== "none") return null;
      const c = rgba(style.backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    const white = { r: 255, g: 255, b: 255, a: 1 };
    return layers.reverse().reduce((under, top) => over(top, under), white);
  };
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent)
      .join("").trim();
    if (!own || !visible(el) || el.closest(".visually-hidden, .skip, :disabled, script, style")) {
      continue;
    }
    const style = getComputedStyle(el);
    const back = behind(el), front = rgba(style.color);
    if (!back || !front || style.visibility === "hidden") continue;
    const [hi, lo] = [luminance(over(front, back)), luminance(back)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need - 0.005) {
      problems.push(`contrast ${ratio.toFixed(2)}:1 < ${need}:1 for "${own.slice(0, 40)}"`);
    }
  }

  // Nothing wider than the window (a wide table or code block scrolls inside its own box).
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width + 1) {
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > width + 1
        && (!el.parentElement.closest(".table-wrap, pre, .chart")
          || ["absolute", "fixed"].includes(getComputedStyle(el).position)))
      .slice(0, 4)
      .map((el) => `${el.outerHTML.slice(0, 70)} (${el.getBoundingClientRect().right}px)`);
    const page = document.documentElement.scrollWidth;
    problems.push(`page ${page}px wide in a ${width}px window: ${wide}`);
  }
  return problems;
}"""


@dataclass
class Tab:
    """One signed-in person's browser context and page."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    """Console errors and uncaught exceptions, with the URL they happened on."""
    checked: dict[str, list[str]] = field(default_factory=dict)
    """Accessibility problems per page path checked."""
    _documents: set[str] = field(default_factory=set)
    """URLs loaded as pages (their status is the test's business, not a console error)."""

    @classmethod
    def open(cls, context: BrowserContext) -> Tab:
        page = context.new_page()
        tab = cls(context=context, page=page)
        page.on("console", tab._console)
        page.on(
            "request",
            lambda r: tab._documents.add(r.url) if r.resource_type == "document" else None,
        )
        page.on("pageerror", lambda exc: tab.errors.append(f"{page.url}: {exc}"))
        return tab

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url") or self.page.url
        if message.text.startswith("Failed to load resource") and where in self._documents:
            return  # a page answered 4xx on purpose (a refused sign-in, a form with errors)
        self.errors.append(f"{self.page.url}: {message.text} ({where})")

    def goto(self, path: str) -> Page:
        response = self.page.goto(path)
        assert response is not None and response.ok, f"{path}: HTTP {response and response.status}"
        return self.page

    def sign_in(self, handle: str, password: str = PASSWORD) -> None:
        page = self.page
        page.goto("/ui/login")
        page.get_by_label("User", exact=True).fill(handle)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        expect(self.page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()

    def check_page(self) -> list[str]:
        """Accessibility basics of the page now shown; remembered by path."""
        problems: list[str] = self.page.evaluate(_A11Y_CHECK)
        path = re.sub(r"^https?://[^/]+", "", self.page.url)
        self.checked[path] = problems
        return problems

    def figure(self, figure_id: str) -> dict[str, Any]:
        """A chart's Plotly figure as the server embedded it (``<script id=...>``)."""
        text = self.page.locator(f"script#{figure_id}").text_content()
        assert text, f"no figure {figure_id}"
        figure: dict[str, Any] = json.loads(text)
        return figure

    def close(self) -> None:
        with contextlib.suppress(Error):  # already closed with its browser
            self.context.close()
