"""Jinja2 templates with autoescaping always on, and the few filters the pages use to show times and numbers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from starlette.requests import Request


def when(ms: int | float | None) -> str:
    if ms is None:
        return '–'
    seconds = ms / 1000
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seconds)) + f'.{int(ms % 1000):03d}'


def ago(ms: int | float | None, now_ms: int | float) -> str:
    """'12 s ago', 'in 3 min'."""
    if ms is None:
        return ''
    delta = (now_ms - ms) / 1000
    text = duration(abs(delta) * 1000)
    return f'{text} ago' if delta >= 0 else f'in {text}'


def duration(ms: int | float | None) -> str:
    if ms is None:
        return '–'
    s = ms / 1000
    if s < 1:
        return f'{ms:.0f} ms'
    if s < 90:
        return f'{s:.1f} s'
    if s < 5400:
        return f'{s / 60:.0f} min'
    if s < 172_800:
        return f'{s / 3600:.1f} h'
    return f'{s / 86400:.0f} d'


def num(value: int | float | None) -> str:
    if value is None or isinstance(value, jinja2.Undefined):  # a field a record from another version lacks
        return 'n/a'
    if isinstance(value, float) and not value.is_integer():
        return f'{value:,.1f}'
    return f'{int(value):,}'


class Renderer:
    def __init__(self, directory: Path, *, allow_actions: bool) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            autoescape=True,  # every template, whatever its name: job args, ids and results are user data
            undefined=jinja2.ChainableUndefined,  # documents from other versions may lack a field,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, ago=ago, duration=duration, num=num)
        self.env.globals.update(allow_actions=allow_actions)

    def render(self, request: Request, template: str, context: dict[str, Any]) -> str:
        def url(name: str, **query: Any) -> str:
            path_params = {k: query.pop(k) for k in ('path', 'action') if k in query}
            base = str(request.url_for(name, **path_params).path)
            clean = {k: v for k, v in query.items() if v not in (None, '')}
            return base + ('?' + urlencode(clean) if clean else '')

        return self.env.get_template(template).render(
            request=request, url=url, svg=Markup, current=request.url.path, **context
        )
