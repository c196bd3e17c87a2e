"""Inbound endpoints: views that machines call on every delivery (webhooks), served without the
machinery that exists for people.

A view marked `inbound` is public (it authenticates each request itself, by signature), never
opens the cookie session, and skips the app-wide request hooks that protect pages: the login
check, Flask-Login's remember-cookie hook, CSRF (a machine's POST carries no token) and
Talisman's per-response header building. Its answers carry a fixed set of security headers
instead. What stays: the blueprint's own hooks, hooks marked `also_inbound` (the NUL check of
paths), error handlers and teardowns (the database session is still released).

Measured in bench/README.md (webhook ingest): the skipped hooks and the session cost about a
fifth of a webhook request's CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, request
from flask.globals import request_ctx
from flask.wrappers import Response

F = TypeVar("F", bound=Callable[..., Any])

# JSON answers to machines: nothing to frame, run or sniff (what Talisman would send, minus
# what only pages need).
HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "same-origin"),
)


def inbound(view: F) -> F:
    """Mark a view as an inbound endpoint (public, no session, no page hooks; see the module)."""
    from .extensions import csrf

    view._wfapp_public = True  # type: ignore[attr-defined]
    view._wfapp_inbound = True  # type: ignore[attr-defined]
    return csrf.exempt(view)


def also_inbound(hook: F) -> F:
    """Mark an app-wide before-request hook that inbound endpoints must run too."""
    hook._wfapp_also_inbound = True  # type: ignore[attr-defined]
    return hook


def _is_inbound(app: Flask) -> bool:
    endpoint = request.endpoint
    return endpoint is not None and getattr(app.view_functions.get(endpoint),
                                            "_wfapp_inbound", False)


def inbound_prefixes(app: Flask) -> tuple[str, ...]:
    """Path prefixes that only inbound views serve (the text of their rules before the first
    variable), so the session can be skipped before the URL is matched; a prefix that another
    view's rule shares is left out (that request opens the session as usual)."""
    cache = app.extensions["wfapp"]
    found = cache.get("inbound_prefixes")
    if found is None:
        rules = [(r.rule, r.rule.split("<", 1)[0],
                  getattr(app.view_functions.get(r.endpoint), "_wfapp_inbound", False))
                 for r in app.url_map.iter_rules()]
        candidates = {static for _, static, is_inbound in rules
                      if is_inbound and static.endswith("/") and len(static) > 1}

        def only_inbound(prefix: str) -> bool:
            # No other view's rule starts with the prefix, nor could one with a variable
            # (whose fixed part is shorter) match a path that does.
            return not any(
                not is_inbound and (rule.startswith(prefix)
                                    or (rule != static and prefix.startswith(static)))
                for rule, static, is_inbound in rules)

        found = tuple(sorted(p for p in candidates if only_inbound(p)))
        cache["inbound_prefixes"] = found
    return found


class WfappFlask(Flask):
    """Flask, with inbound endpoints served without the page hooks."""

    def preprocess_request(self) -> Any:
        """The usual hooks; for an inbound view only its blueprint's and `also_inbound` ones."""
        if not _is_inbound(self):
            return super().preprocess_request()
        for name in (None, *reversed(request.blueprints)):
            for func in self.url_value_preprocessors.get(name, ()):
                func(request.endpoint, request.view_args)
        for name in (None, *reversed(request.blueprints)):
            for before in self.before_request_funcs.get(name, ()):
                if name is None and not getattr(before, "_wfapp_also_inbound", False):
                    continue
                answer = self.ensure_sync(before)()
                if answer is not None:
                    return answer
        return None

    def process_response(self, response: Response) -> Response:
        """The usual hooks; for an inbound view its blueprint's, and the fixed headers."""
        if not _is_inbound(self):
            return super().process_response(response)
        for func in request_ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for name in reversed(request.blueprints):
            for after in reversed(self.after_request_funcs.get(name, ())):
                response = self.ensure_sync(after)(response)
        headers = response.headers
        for key, value in HEADERS:
            headers[key] = value
        return response
