"""A request's URL fields: which they are, how a problem names one of their values, and each value in turn
(local files, stills and uploads replace them by field and index)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import AnyUrl

URL_FIELDS = ("image", "end_image", "video", "images", "audio")  # the request fields that take URLs; `images` a list


def url_label(field: str, index: int | None) -> str:
    """How a problem names one URL value: `image`, or `images[2]`."""
    return field if index is None else f"{field}[{index}]"


def url_values(fields: Mapping[str, Any]) -> Iterator[tuple[str, int | None, Any]]:
    """Each value of the URL fields: (field, index in a list or None, value)."""
    for field in URL_FIELDS:
        value = fields.get(field)
        yield from (
            ((field, i, item) for i, item in enumerate(value))
            if isinstance(value, list | tuple)
            else [(field, None, value)]
        )


def with_urls(fields: Mapping[str, Any], urls: Mapping[tuple[str, int | None], str]) -> dict[str, Any]:
    """`fields` with the URL values at (field, index) replaced; the lists are copies."""
    result = dict(fields)
    for (field, index), url in urls.items():
        if index is None:
            result[field] = url
        else:
            result[field] = [*result[field]]
            result[field][index] = url
    return result


INLINE_IMAGE = re.compile(r"data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+")


def check_url(value: str) -> str:
    if INLINE_IMAGE.fullmatch(value):
        return value  # an image sent inline, for a provider that takes them (see `Provider.refuse`)
    url = AnyUrl(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s) URL")
    return value
