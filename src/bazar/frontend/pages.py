"""The front end's two HTML pages, read from the package data in `bazar/static/`.

Why files and not strings in code: the pages are hand-written HTML with inline CSS and JS
(no CDN, no build step, so they work offline); keeping them as `.html` files lets editors and
browser tests treat them as what they are. They ship as package data (`static/*`), so they are
found through `importlib.resources` wherever bazar is installed. Nothing is cached here: the
caller reads each page once at startup and serves the bytes.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

PageName = Literal["index", "docs"]
PAGE_NAMES: tuple[PageName, ...] = ("index", "docs")


def page(name: PageName) -> bytes:
    """The bytes of `static/<name>.html` (UTF-8).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    assert name in PAGE_NAMES, name
    return (resources.files("bazar") / "static" / f"{name}.html").read_bytes()
