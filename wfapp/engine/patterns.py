"""Regular expressions in conditions (`matches`): RE2, so matching takes linear time.

Authors' patterns are untrusted input: Python's backtracking `re` can spend hours on `(a+)+$`
against 34 characters, holding the GIL. RE2 has no backtracking, so no pattern and no value can
stall a worker; patterns it cannot run (backreferences, look-around) are refused when the
definition is saved, with its message. Values longer than MAX_VALUE_LENGTH never match, and the
compiled-pattern cache is bounded.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

MAX_PATTERN_LENGTH = 1000
MAX_VALUE_LENGTH = 10_000
# Memory RE2 may use for one compiled pattern; a pattern needing more is refused on save.
MAX_PROGRAM_BYTES = 4 << 20


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # an author's typo is a field error, not a line in the log
    options.max_mem = MAX_PROGRAM_BYTES
    return options


_OPTIONS = _options()


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message says why."""


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 pattern (cached, at most 512 kept); PatternError when it is invalid."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"a pattern may have at most {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        message = exc.args[0] if exc.args else str(exc)
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise PatternError(str(message)) from None


def check_pattern(pattern: str) -> str | None:
    """Why `pattern` cannot be used (RE2 syntax, no backreferences or look-around), or None."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def full_match(pattern: str, value: str) -> bool:
    """Whether the whole `value` matches; an invalid pattern or an over-long value never does."""
    if len(value) > MAX_VALUE_LENGTH:
        return False
    try:
        return compile_pattern(pattern).fullmatch(value) is not None
    except PatternError:
        return False
