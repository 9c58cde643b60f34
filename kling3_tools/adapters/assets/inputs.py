"""Local files where the API wants URLs: found, checked (all at once, with the rest of the request, before
anything is uploaded or spent), uploaded to the asset store, and replaced by the URLs the API fetches.

A URL field's value may be an http(s) URL (sent as it is), a local path (a `Path`, a plain path or a
`file://` URL) or a `data:` URI. Where paths are allowed, and inside which folders, is the front end's call
(`LocalFiles`): the CLI and the Python API take any path, an MCP client over stdio only paths inside the
roots it declares, one over HTTP none at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...domain.errors import RequestValidationError
from ...domain.models import GenerateRequest
from ...domain.url_fields import url_label, url_values, with_urls
from .checks import KIND_OF_FIELD, CheckedFile, check
from .store import AssetStore

MAX_DATA_URI_BYTES = 10 * 1024 * 1024
STORAGE_NEEDED = (
    "local files need somewhere the API can fetch them from: set [storage] url (see the README, "
    "'Your own files'), or try them with --sandbox"
)


@dataclass(frozen=True)
class LocalFiles:
    """Which local inputs a caller may give: paths at all (`paths`), and then only inside `roots` when any."""

    paths: bool = True
    roots: tuple[Path, ...] = ()
    refusal: str = "local paths are not accepted here; give an http(s) URL or a data: URI"

    def resolve(self, label: str, path: Path) -> Path | str:
        """The file `path` names (relative to the first root when there are roots), or why it cannot be used:
        refused, outside the roots (said before whether it exists), missing."""
        if not self.paths:
            return f"`{label}`: {self.refusal}"
        try:
            if self.roots and not path.expanduser().is_absolute():
                path = self.roots[0] / path
            path = path.expanduser().resolve()
            roots = [root.expanduser().resolve() for root in self.roots]
            if roots and not any(path.is_relative_to(root) for root in roots):
                return f"`{label}`: {path} is outside the folders this client shares (its MCP roots)"
            if not path.is_file():
                return f"`{label}`: no such file: {path}"
        except (OSError, ValueError):  # a name too long, a NUL byte, a loop of links
            return f"`{label}`: {str(path)[:80]!r} is not a usable path"
        return path


ANY_PATH = LocalFiles()  # the CLI and the Python API: the user's own machine


@dataclass
class LocalInput:
    field: str
    index: int | None  # its place in `images`
    source: Path | bytes | None  # None: it cannot be read (its problem is listed)

    @property
    def label(self) -> str:
        return url_label(self.field, self.index)


def _local(value: Any) -> Path | bytes | str | None:
    """A local path, the bytes of a data: URI, a problem (str starting with '!'), or None for a URL."""
    if isinstance(value, Path):
        return value
    if isinstance(value, bytes):
        return value  # a file's content, fetched by the front end (a Discord attachment)
    if not isinstance(value, str) or value.startswith(("http://", "https://")):
        return None
    if value.startswith("data:"):
        header, _, payload = value.partition(",")
        if not header.endswith(";base64"):
            return "!a data: URI must be base64 (data:<type>;base64,…)"
        if len(payload) * 3 // 4 > MAX_DATA_URI_BYTES:
            return f"!a data: URI may hold at most {MAX_DATA_URI_BYTES // (1024 * 1024)} MB; give a URL"
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return "!the data: URI is not valid base64"
    if value.startswith("file://"):
        return Path(unquote(urlsplit(value).path))
    if "://" in value:
        return None  # not ours: the request's own check names it
    return Path(value)


def find_local(fields: Mapping[str, Any], files: LocalFiles) -> tuple[list[LocalInput], list[str]]:
    """Every local input of the URL fields, and why those that cannot be read cannot."""
    found: list[LocalInput] = []
    problems: list[str] = []
    for field, index, item in url_values(fields):
        local = _local(item)
        if local is None:
            continue
        entry = LocalInput(field, index, None)
        found.append(entry)
        if isinstance(local, str):
            problems.append(f"`{entry.label}`: {local[1:]}")
            continue
        source = files.resolve(entry.label, local) if isinstance(local, Path) else local
        if isinstance(source, str):
            problems.append(source)
        else:
            entry.source = source
    return found, problems


def names_paths(fields: Mapping[str, Any]) -> bool:
    """Whether any URL field names a local path (found or not)."""
    return any(isinstance(_local(item), Path) for _, _, item in url_values(fields))


def placeholder(field: str) -> str:
    return f"https://local.invalid/{field}"


Checked = list[tuple[LocalInput, CheckedFile]]


@dataclass(frozen=True)
class CheckedRequest:
    """A front end's fields that passed every check, with their local files: `request` has stand-in URLs for
    those files, and its price and rules are those of the real one (`prepare` uploads the files)."""

    fields: Mapping[str, Any]
    request: GenerateRequest
    files: Checked


def checked_local(fields: Mapping[str, Any], files: LocalFiles) -> tuple[list[LocalInput], Checked, list[str]]:
    """Every local input of `fields`' URL fields; those that passed their checks (type, size, an image's
    dimensions); and every problem of the others."""
    local, problems = find_local(fields, files)
    checked: Checked = []
    for entry in local:
        if entry.source is None:
            continue  # its problem is listed already
        result = check(entry.label, KIND_OF_FIELD[entry.field], entry.source)
        if isinstance(result, list):
            problems += result
        else:
            checked.append((entry, result))
    return local, checked, problems


def examine(fields: Mapping[str, Any], files: LocalFiles) -> CheckedRequest:
    """The request and its local files, checked (no file is uploaded, nothing is sent);
    `RequestValidationError` lists every problem of the request and of its files at once."""
    local, checked, problems = checked_local(fields, files)
    stand_ins = {(entry.field, entry.index): placeholder(entry.label) for entry in local}
    try:
        request = GenerateRequest.build(**with_urls(fields, stand_ins))
    except RequestValidationError as exc:
        problems = exc.problems + problems
    if problems:
        raise RequestValidationError(problems)
    return CheckedRequest(fields, request, checked)


async def prepare(checked: CheckedRequest, assets: AssetStore | None, *, inline_images: bool) -> GenerateRequest:
    """The request to send: `checked`'s own when it has no local file, else one with its files uploaded, or
    with no asset store and a provider that takes images inline (`inline_images`), its images inline."""
    if not checked.files:
        return checked.request
    inline = (
        assets is None and inline_images and all(kind.content_type.startswith("image/") for _, kind in checked.files)
    )
    if assets is None and not inline:
        raise RequestValidationError([STORAGE_NEEDED])
    return GenerateRequest.build(**with_urls(checked.fields, await sent(checked.files, None if inline else assets)))


async def sent(files: Checked, assets: AssetStore | None) -> dict[tuple[str, int | None], str]:
    """Each checked file as the API will fetch it, by (field, index): uploaded to `assets`, or with none there,
    inline as a `data:` URI."""
    urls = {}
    for entry, kind in files:
        assert entry.source is not None
        if assets is None:
            data = entry.source if isinstance(entry.source, bytes) else await asyncio.to_thread(entry.source.read_bytes)
            urls[(entry.field, entry.index)] = f"data:{kind.content_type};base64,{base64.b64encode(data).decode()}"
        else:
            key = await assets.put(entry.source, content_type=kind.content_type, suffix=kind.suffix)
            urls[(entry.field, entry.index)] = await assets.url(key)
    return urls
