"""The front end's browser-facing files, read from the package data in `bazar/static/`: its two
HTML pages and the vendored files they load (Swagger UI for `/docs`), served under `/static/`.

Why files and not strings in code: the pages are hand-written HTML with inline CSS and JS
(no CDN, no build step, so they work offline); keeping them as `.html` files lets editors and
browser tests treat them as what they are. They ship as package data (`static/**`), so they are
found through `importlib.resources` wherever bazar is installed. Nothing is cached here: the
caller reads the files once at startup and serves the bytes.

Rules: only files whose suffix is in `ASSET_TYPES` are served (never the HTML pages' sources,
READMEs or licences), each with the content type of its suffix; vendored files are served with
a one-year, immutable cache lifetime, so a page must name them with a version in the URL
(`?v=`) that changes when they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Literal

from starlette.responses import Response

from bazar.errors import NotFound

PageName = Literal["index", "docs"]
PAGE_NAMES: tuple[PageName, ...] = ("index", "docs")

ASSET_TYPES: dict[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
ASSET_DEPTH_MAX = 4  # static/<library>/<file> is deep enough; a bound on the walk


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str


def static_root() -> Traversable:
    return resources.files("bazar") / "static"


def page(name: PageName) -> bytes:
    """The bytes of `static/<name>.html` (UTF-8).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    assert name in PAGE_NAMES, name
    return (static_root() / f"{name}.html").read_bytes()


def assets() -> dict[str, Asset]:
    """Every servable file under `static/`, keyed by its path below it (`swagger-ui/x.js`)."""
    found: dict[str, Asset] = {}
    pending: list[tuple[str, Traversable, int]] = [("", static_root(), 0)]
    while pending:
        prefix, directory, depth = pending.pop()
        assert depth <= ASSET_DEPTH_MAX, prefix
        for entry in directory.iterdir():
            if entry.is_dir() and depth < ASSET_DEPTH_MAX:
                pending.append((f"{prefix}{entry.name}/", entry, depth + 1))
                continue
            media_type = ASSET_TYPES.get(suffix(entry.name))
            if media_type is not None and entry.is_file():
                found[prefix + entry.name] = Asset(entry.read_bytes(), media_type)
    return found


def suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def asset_response(found: dict[str, Asset], path: str) -> Response:
    """The file at `path` below `/static/`, with its content type and a long cache lifetime.

    Raises:
        NotFound: no servable file has this path (`..` and the like included).
    """
    asset = found.get(path)
    if asset is None:
        raise NotFound(f"no file /static/{path}")
    headers = {"Cache-Control": ASSET_CACHE_CONTROL}
    return Response(asset.body, media_type=asset.media_type, headers=headers)
