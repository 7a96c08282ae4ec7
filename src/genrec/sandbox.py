"""The sandbox prompt templates render in: Jinja's immutable sandbox, tightened.

Jinja's ``ImmutableSandboxedEnvironment`` already refuses attributes that start with ``_`` and
methods that mutate lists, dicts and sets. On top of that: an unsafe attribute fails at the access
(Jinja would return an undefined value that a filter can pass along silently), Python builtins
and modules named in a template are reported as such, and the one-liners that exhaust memory or
CPU are bounded.
"""

from __future__ import annotations

import builtins
import functools
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jinja2.exceptions import SecurityError as _SandboxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TemplateSandbox", "reaches_python"]


# a printf-style conversion: optional mapping key, flags, width, precision
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
# str methods whose numeric argument is the size of the string they build
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (no Python internals, no mutation of the data it is given), plus
    bounds on the one-liners that exhaust memory or CPU: huge powers, string and list repetition,
    padding widths in ``%``, ``format`` and ``center``-like calls. A breach is a sandbox error."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, max_chars: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_chars = max_chars
        self.globals.pop("lipsum", None)  # lorem ipsum of any size: no use in a prompt
        bounded_range = self.globals["range"]

        def checked_range(*args: int) -> range:
            try:
                return bounded_range(*args)
            except OverflowError as exc:  # the sandbox's own bound, reported as a sandbox breach
                raise _SandboxError(str(exc)) from None

        self.globals["range"] = checked_range
        for name in ("center", "indent", "slice"):
            self.filters[name] = self._bounded_filter(self.filters[name])
        plain_format = self.filters["format"]

        def format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
            self._check_percent(str(value), args or tuple(kwargs.values()))
            return plain_format(value, *args, **kwargs)

        self.filters["format"] = format_filter

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Jinja returns an undefined value that fails only when printed; a filter that merely
        # passes it along (map, sort) would hide the attempt. Fail at the access instead.
        raise _SandboxError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def _too_big(self, *numbers: Any) -> None:
        for n in numbers:
            if isinstance(n, int) and not isinstance(n, bool) and abs(n) > self.max_chars:
                raise _SandboxError(f"size {n} is above the template limit of {self.max_chars}")

    def _bounded_filter(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)  # keeps Jinja's pass_context markers, if any
        def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
            self._too_big(*args, *kwargs.values())
            return func(value, *args, **kwargs)

        return bounded

    def _check_percent(self, fmt: str, args: Any) -> None:
        for width, precision in _PERCENT_SPEC.findall(fmt):
            for part in (width, precision):
                if part.isdigit():
                    self._too_big(int(part))
                elif part == "*":
                    self._too_big(*(args if isinstance(args, tuple) else (args,)))

    def _check_format(self, fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        for _, _, spec, _ in string.Formatter().parse(fmt):
            if not spec:
                continue
            if "{" in spec:  # a width taken from the arguments
                self._too_big(*args, *kwargs.values())
            for number in re.findall(r"\d+", spec):
                self._too_big(int(number))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * abs(left).bit_length() > 100_000:  # bits of the result
                raise _SandboxError(f"{left} ** {right} is too large for a template")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    self._too_big(len(seq) * count)
        elif operator == "%" and isinstance(left, str):
            self._check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            self._check_format(fmt, () if is_map else args, mapping)
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if isinstance(getattr(__obj, "__self__", None), str) and getattr(__obj, "__name__", "") in _PADDING_METHODS:
            __self._too_big(*args, *kwargs.values())
        return super().call(__context, __obj, *args, **kwargs)


def reaches_python(undefined_message: str) -> bool:
    """Whether an undefined name is a Python builtin or module (``os``, ``open``, ``__import__``):
    a template reaching for Python, not a misspelt variable."""
    if re.search(r"has no attribute '_", undefined_message):  # a walk into internals
        return True
    found = re.match(r"'([^']+)' is undefined", undefined_message)
    if found is None:
        return False
    name = found.group(1)
    return name.startswith("__") or hasattr(builtins, name) or name in sys.stdlib_module_names
