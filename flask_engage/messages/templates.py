"""Message templates: Jinja rendered in a sandbox, within a budget.

Templates see ``customer`` (attributes plus ``id`` and ``email``) and
``unsubscribe_url``. HTML bodies are autoescaped; a plain-text part is derived
from the HTML. Unsafe attribute access raises at render time and is reported as
:class:`~flask_engage.errors.InvalidTemplate`.

A template is written by an admin but rendered by workers, once per recipient:
a render has a **budget** (:data:`MAX_OUTPUT`, :data:`MAX_WORK`, :data:`MAX_STEPS`,
:data:`MAX_COST`, :data:`MAX_SECONDS`, :data:`MAX_INT_BITS`), enforced while it
runs. Operations that can build a large value from a small expression (``*``,
``%``, ``str.format``, ``center``/``ljust``-style widths, ``replace``, ``join``,
``indent``, ``wordwrap``, ``lipsum``...) are checked *before* they run; every
value a template builds and every piece of output it writes is counted; every
loop iteration and call is a step. A template over its budget is refused at save
(:func:`check_template`) and fails that one message at send.
"""

from __future__ import annotations

import html
import inspect
import re
import string
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any
from urllib.parse import quote

from jinja2 import Template, TemplateError, Undefined, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import BlockReference, Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from ..errors import InvalidTemplate

_TAG = re.compile(r"<[a-zA-Z!/][^<>]*>")
_BREAKS = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li|/tr)\s*/?>", re.IGNORECASE)
# Each scan stops at the next tag: linear time on any input.
_LINK = re.compile(
    r"<a\s[^<>]*?href=\"([^\"<>]*)\"[^<>]*>((?:[^<]|<(?!/a\s*>|a\s))*)</a\s*>", re.IGNORECASE
)

#: Largest rendered subject or body, and largest single value (a string, or a list or
#: mapping as printed) a template may build, in characters.
MAX_OUTPUT = 1_000_000
#: Characters a render may build in all: every value an operation returns and every
#: piece of output, counted as they are made.
MAX_WORK = 10_000_000
#: Loop iterations, calls and filter applications in one render.
MAX_STEPS = 50_000
#: Character copies a filter whose cost grows faster than its input (``striptags``,
#: ``wordwrap`` of long words, ``sum`` of lists) may make.
MAX_COST = 200_000_000
#: Wall-clock seconds one render may take.
MAX_SECONDS = 0.5
#: Largest integer a template may compute, in bits.
MAX_INT_BITS = 4096


class RenderBudgetExceeded(Exception):
    """A render went over its budget; the message says which part of it."""


@dataclass
class _Budget:
    deadline: float
    work: int = 0
    steps: int = 0


_budget: ContextVar[_Budget | None] = ContextVar("engage_render_budget", default=None)


@contextmanager
def _budgeted() -> Iterator[None]:
    """A fresh budget for the render inside the block."""
    token = _budget.set(_Budget(time.monotonic() + MAX_SECONDS))
    try:
        yield
    finally:
        _budget.reset(token)


def _over(what: str) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(f"template over its render budget: {what}")


def _step() -> None:
    """One more loop iteration or call (outside a render, e.g. while compiling: free)."""
    budget = _budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise _over(f"more than {MAX_STEPS:,} loop iterations and calls")
    if time.monotonic() > budget.deadline:
        raise _over(f"rendering took longer than {MAX_SECONDS:g} s")


def _charge(characters: int) -> None:
    """Count characters built by the current render."""
    budget = _budget.get()
    if budget is None:
        return
    budget.work += characters
    if budget.work > MAX_WORK:
        raise _over(f"more than {MAX_WORK:,} characters built")


def _refuse_over(size: int, what: str) -> None:
    """Refuse a value (or an operation's result) larger than MAX_OUTPUT."""
    if size > MAX_OUTPUT:
        raise _over(f"{what} would be over {MAX_OUTPUT:,} characters")


def _size(value: Any) -> int:
    """About how many characters ``value`` prints as; stops counting past MAX_OUTPUT."""
    limit = MAX_OUTPUT
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, range):
            total += len(item) * (len(str(max(abs(item.start), abs(item.stop)))) + 2)
        elif isinstance(item, Namespace):
            pending.append(getattr(item, "_Namespace__attrs", {}))  # printed as this dict
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, Collection):
            total += 2 + 2 * len(item)
            if total <= limit:
                pending.extend(item)
        else:
            total += 16  # objects print as a short ``<... object>``
    return total


def _produced(value: Any) -> Any:
    """A value an operation returned: no larger than :data:`MAX_OUTPUT`, and counted."""
    size = _size(value)
    _refuse_over(size, "a value")
    _charge(size)
    return value


def _metered(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate, one step per item."""
    for item in iterable:
        _step()
        yield item


def _number(value: Any) -> int:
    """An integer argument's magnitude (0 for anything else: the operation rejects it)."""
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str:
    """A string argument (empty for anything else: the operation rejects it)."""
    return value if isinstance(value, str) else ""


# -- estimates: how large an operation's result will be, known before it runs ------------

_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def _width(digits: str) -> int:
    """A width or precision written in a format string."""
    return int(digits) if len(digits) < 20 else MAX_OUTPUT + 1


def _printf_size(template: str | bytes, values: Any) -> int:
    """The size of ``template % values`` (printf-style), from its widths and values."""
    if isinstance(template, bytes):
        template = template.decode("latin-1")
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else None
    total, index = len(template), 0
    for match in _PRINTF.finditer(template):
        key, width, precision, kind = match.groups()
        if kind == "%":
            continue
        sizes = []
        for part in (width, precision):
            if part == "*":
                sizes.append(_number(positional[index]) if index < len(positional) else 0)
                index += 1
            elif part:
                sizes.append(_width(part))
        if key is not None and mapping is not None:
            value = mapping.get(key)
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        sizes.append(_size(value) * (4 if kind in "ra" else 1))
        if kind in "fFeEgG":
            sizes.append(330)  # a float in fixed notation: up to 309 digits
        total += max(sizes)
        if total > MAX_OUTPUT:
            break
    return total


def _format_size(template: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The size of ``template.format(*args, **kwargs)``, from its fields and values."""
    values = [*args, *kwargs.values()]
    largest = max((_size(v) for v in values), default=0)
    widest = max((_number(v) for v in values), default=0)
    total, auto = 0, 0
    for literal, name, spec, conversion in string.Formatter().parse(template):
        total += len(literal)
        if name is None:
            continue
        if name == "" and auto < len(args):
            size = _size(args[auto])
            auto += 1
        elif name.isdigit() and int(name) < len(args):
            size = _size(args[int(name)])
        elif name in kwargs:
            size = _size(kwargs[name])
        else:  # an attribute or item of an argument: no larger than the largest one
            size = largest
        if conversion in ("r", "a"):
            size *= 4
        numbers = [_width(n) for n in re.findall(r"\d+", spec or "")]
        if spec and "{" in spec:  # a nested field: any integer argument may be the width
            numbers.append(widest)
        total += max([size, *numbers])
        if total > MAX_OUTPUT:
            break
    return total


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """The size of ``text.replace(old, new, count)``."""
    if isinstance(text, str) and isinstance(old, str):
        places = text.count(old) if old else len(text) + 1
    elif isinstance(text, bytes) and isinstance(old, bytes):
        places = text.count(old) if old else len(text) + 1
    else:
        return _size(text)
    if isinstance(count, int) and count >= 0:
        places = min(places, count)
    return len(text) + places * max(_size(new) - len(old), 0)


def _join_size(separator: Any, items: Collection[Any]) -> int:
    """The size of ``separator.join(items)`` (counting stops past MAX_OUTPUT)."""
    total = _size(separator) * max(len(items) - 1, 0)
    for item in items:
        total += _size(item)
        if total > MAX_OUTPUT:
            break
    return total


def _wordwrap_cost(text: str, width: int) -> int:
    """Character copies of ``textwrap`` splitting words longer than ``width``."""
    width = max(width, 1)
    return sum(len(word) * len(word) // width for word in text.split() if len(word) > width)


def _striptags_cost(text: str) -> int:
    """Character copies of ``Markup.striptags`` (it rebuilds the string for each tag)."""
    return (text.count("<") + text.count("<!--")) * len(text)


def _check_cost(cost: int, what: str) -> None:
    """Refuse an operation estimated to copy more than MAX_COST characters."""
    if cost > MAX_COST:
        raise _over(f"{what} would copy more than {MAX_COST:,} characters")


_METHOD_SIZES: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], int]] = {
    "center": lambda s, a, k: max(len(s), _number(a[0] if a else 0)),
    "ljust": lambda s, a, k: max(len(s), _number(a[0] if a else 0)),
    "rjust": lambda s, a, k: max(len(s), _number(a[0] if a else 0)),
    "zfill": lambda s, a, k: max(len(s), _number(a[0] if a else 0)),
    "expandtabs": lambda s, a, k: (
        len(s)
        + (s.count("\t") if isinstance(s, str) else s.count(b"\t"))
        * _number(a[0] if a else k.get("tabsize", 8))
    ),
    "replace": lambda s, a, k: _replace_size(s, *(list(a) + [None, None, -1])[:3]),
    "translate": lambda s, a, k: (
        len(s)
        * max([1, *(_size(v) for v in a[0].values())] if a and isinstance(a[0], Mapping) else [1])
    ),
}


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a call of a string or integer method whose result would be too large.

    Returns the arguments to call with (``join`` gets its items as a list, counted).
    """
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, str | bytes):
        if name == "join" and args:
            items = list(_metered(args[0]))
            _refuse_over(_join_size(owner, items), "join")
            return (items, *args[1:])
        if name == "striptags":
            _check_cost(_striptags_cost(str(owner)), "striptags")
        estimate = _METHOD_SIZES.get(name)
        if estimate is not None:
            _refuse_over(estimate(owner, args, kwargs), name)
    elif isinstance(owner, int) and name == "to_bytes":
        _refuse_over(_number(args[0] if args else kwargs.get("length", 1)), name)
    return args


# -- filters: the built-in ones, with their results checked ------------------------------


def _sum_cost(p: dict[str, Any]) -> int:
    """Copies made by ``sum`` of lists or strings (each addition copies the total so far)."""
    items = p["iterable"]
    if isinstance(p["start"], int | float) or not isinstance(items, Collection):
        return 0
    return len(items) * _size(items)


#: Result sizes of filters that can build more than their input, from their arguments.
_FILTER_SIZES: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda p: _size(p["value"]) + _number(p["width"]),
    "indent": lambda p: (
        _size(p["s"])
        + (_text(p["s"]).count("\n") + 1)
        * (len(p["width"]) if isinstance(p["width"], str) else _number(p["width"]))
    ),
    "wordwrap": lambda p: (
        _size(p["s"])
        + (len(_text(p["s"])) // max(_number(p["width"]), 1) + _text(p["s"]).count("\n") + 1)
        * _size(p["wrapstring"] or "\n")
    ),
    "replace": lambda p: _replace_size(p["s"], p["old"], p["new"], p["count"]),
    "format": lambda p: (
        _printf_size(str(p["value"]), p["kwargs"] or p["args"])
        if isinstance(p["value"], str)
        else 0
    ),
    "batch": lambda p: (
        0 if p["fill_with"] is None else _number(p["linecount"]) * (_size(p["fill_with"]) + 2)
    ),
    "tojson": lambda p: (
        _size(p["value"])
        * (1 + 10 * (len(p["indent"]) if isinstance(p["indent"], str) else _number(p["indent"])))
    ),
    "urlize": lambda p: (
        3 * _size(p["value"])
        + sum(_text(p["value"]).count(c) for c in ".@:")
        * (_size(p["target"] or "") + _size(p["rel"] or "") + 64)
    ),
}
#: Copy costs of filters whose time grows faster than their input.
_FILTER_COSTS: dict[str, Callable[[dict[str, Any]], int]] = {
    "striptags": lambda p: _striptags_cost(str(p["value"])) if isinstance(p["value"], str) else 0,
    "wordwrap": lambda p: _wordwrap_cost(_text(p["s"]), _number(p["width"])),
    "sum": _sum_cost,
}
#: Filters that read their whole input at once: given it as a list, counted.
_MATERIALIZE = {"join": "value", "sum": "iterable"}


def _metered_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its result (and, for some filters, its arguments) checked."""
    signature = inspect.signature(func)
    size, cost, whole = _FILTER_SIZES.get(name), _FILTER_COSTS.get(name), _MATERIALIZE.get(name)
    offset = 1 if getattr(func, "jinja_pass_arg", None) else 0  # context, environment...

    @wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _step()
        if len(args) > offset:  # the filtered value: never turned into a huge string
            _refuse_over(_size(args[offset]), f"the input of {name}")
        if size or cost or whole:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return func(*args, **kwargs)  # it raises the argument error
            bound.apply_defaults()
            params = bound.arguments
            if whole and not isinstance(params[whole], Collection | Mapping):
                params[whole] = list(_metered(params[whole]))
                args, kwargs = bound.args, bound.kwargs
            if whole == "value":
                _refuse_over(_join_size(params["d"], params["value"]), name)
            if size:
                _refuse_over(size(params), name)
            if cost:
                _check_cost(cost(params), name)
        result = func(*args, **kwargs)
        if isinstance(result, Iterator) and not isinstance(result, str):
            return _metered(result)
        return _produced(result)

    return checked


def _lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    """Jinja's ``lipsum`` global, refusing more text than the budget allows."""

    @wraps(lipsum)
    def checked(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        _refuse_over(_number(n) * _number(max) * 12, "lipsum")
        return lipsum(n, html, min, max)

    return checked


# -- the sandbox --------------------------------------------------------------------------


#: Internal filters the compiler wraps loop iterables and ``~`` operands in.
_METERED, _WEIGHED = "_engage_metered", "_engage_weighed"


class _Compiler(CodeGenerator):
    """Jinja's code generator, writing the budget's checks into the compiled template:
    loops iterate through :func:`_metered`, ``~`` operands are counted before they are
    joined, and buffers (macros, ``{% set %}`` blocks, filter blocks) count what is
    written to them."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in list(node.find_all(nodes.For)):
            loop.iter = _internal_filter(_METERED, loop.iter)
        for concat in list(node.find_all(nodes.Concat)):
            concat.nodes = [_internal_filter(_WEIGHED, n) for n in concat.nodes]
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.produced(")
        super().visit_Concat(node, frame)
        self.write(")")

    def buffer(self, frame: Frame) -> None:
        super().buffer(frame)
        self.writeline(f"{frame.buffer} = environment.output_buffer()")


def _internal_filter(name: str, node: nodes.Node) -> nodes.Filter:
    """``node|name``, added by the compiler (not written in the template)."""
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def _weighed(value: Any) -> Any:
    """An operand of ``~``: no larger than MAX_OUTPUT, counted before the join."""
    size = _size(value)
    _refuse_over(size, "a joined value")
    _charge(size)
    return value


class _OutputBuffer(list[str]):
    """Where a macro or captured block writes: counted, and no larger than MAX_OUTPUT."""

    size = 0

    def append(self, piece: str) -> None:
        self.size += len(piece)
        _refuse_over(self.size, "the output of a block or macro")
        _charge(len(piece))
        super().append(piece)

    def extend(self, pieces: Iterable[str]) -> None:
        for piece in pieces:
            self.append(piece)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every ``{{ ... }}`` output: refused before it is turned into a huge string."""
    _refuse_over(_size(value), "an output")
    return value


def _encoding(encode: Callable[[Any], str]) -> Callable[..., Any]:
    """A finalize that checks the budget, then encodes every output (URLs)."""

    @pass_context
    def finalize(context: Context, value: Any) -> Any:
        return encode(_finalize(context, value))

    return finalize


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, stricter: unsafe attributes raise instead of rendering
    empty, and every render runs within the budget described in this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _Compiler

    def __init__(self, encode: Callable[[Any], str] | None = None, **options: Any) -> None:
        # No constant folding: every expression is evaluated at render time, in a budget.
        finalize = _finalize if encode is None else _encoding(encode)
        super().__init__(optimized=False, finalize=finalize, **options)
        self.filters = {name: _metered_filter(name, f) for name, f in self.filters.items()}
        self.filters.update({_METERED: _metered, _WEIGHED: _weighed})
        self.globals["lipsum"] = _lipsum(self.globals["lipsum"])  # type: ignore[arg-type]

    produced = staticmethod(_produced)
    output_buffer = _OutputBuffer

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float):
            if abs(right) > 64:
                raise SecurityError("exponent too large")
            if isinstance(left, int) and left.bit_length() * right > MAX_INT_BITS:
                raise _over(f"a number over {MAX_INT_BITS} bits")
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise _over(f"a number over {MAX_INT_BITS} bits")
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    _refuse_over(_size(seq) * times, "a repetition")
        if operator == "%" and isinstance(left, str | bytes):
            _refuse_over(_printf_size(left, right), "string formatting")
        if operator == "+" and isinstance(left, str | bytes | list | tuple):
            _refuse_over(_size(left) + _size(right), "a concatenation")
        return _produced(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        template, is_map = value.__self__, value.__name__ == "format_map"

        @wraps(formatter)
        def checked(*args: Any, **kwargs: Any) -> str:
            _step()
            if is_map:
                mapping = args[0] if len(args) == 1 and isinstance(args[0], Mapping) else {}
                _refuse_over(_format_size(template, (), mapping), "str.format_map")
            else:
                _refuse_over(_format_size(template, args, kwargs), "str.format")
            return _produced(formatter(*args, **kwargs))

        return checked

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        if isinstance(obj, BlockReference):
            raise SecurityError("blocks cannot be called in message templates")
        args = _check_method(obj, args, kwargs)
        return _produced(super().call(context, obj, *args, **kwargs))


_html_env = Sandbox(autoescape=True, undefined=Undefined)
_text_env = Sandbox(autoescape=False, undefined=Undefined)
#: Every output percent-encoded (``/``, ``?`` and ``&`` too): customer data in a URL.
_url_env = Sandbox(autoescape=False, undefined=Undefined, encode=lambda v: quote(str(v), safe=""))


def _check_names(env: Sandbox, source: str) -> None:
    """Reject private attribute names anywhere in the template, even in branches not taken."""
    tree = env.parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name: Any
        if isinstance(node, nodes.Getattr):
            name = node.attr
        else:
            name = getattr(getattr(node, "arg", None), "value", None)
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"access to attribute {name!r} is unsafe")


SAMPLE_CONTEXT = {
    "customer": {"id": "1", "email": "someone@example.com"},
    "unsubscribe_url": "https://example.com/unsubscribe",
}


def is_html(body: str) -> bool:
    """True when a body contains HTML tags (it is then sent as HTML)."""
    return bool(_TAG.search(body))


def check_template(source: str, field: str) -> str:
    """Compile a template and render it for a sample customer; raise on failure.

    Errors that depend on a customer's data (a ``TypeError`` on a missing value...)
    cannot be judged from the sample: they fail that customer's message at send time.
    Unsafe templates, syntax errors and templates over their render budget (also
    those that run out of memory or recursion on the sample) are refused.
    """
    if not isinstance(source, str):
        raise InvalidTemplate(f"{field}: expected a template string", field=field)
    env = _html_env if is_html(source) else _text_env
    try:
        _check_names(env, source)
        _generate(_compile(env, source), SAMPLE_CONTEXT)
    except _TEMPLATE_FAULTS as exc:
        raise _invalid(exc, field) from None
    except Exception:  # data-dependent; see the docstring
        pass
    return source


#: Failures of the template itself, whatever the data it is rendered with.
_TEMPLATE_FAULTS = (SecurityError, RenderBudgetExceeded, MemoryError, RecursionError, TemplateError)


def _invalid(exc: BaseException, field: str) -> InvalidTemplate:
    """The InvalidTemplate naming ``field`` for a render failure."""
    if isinstance(exc, SecurityError):
        message = f"unsafe template: {exc}"
    elif isinstance(exc, MemoryError):
        message = "template over its render budget: out of memory"
    elif isinstance(exc, RecursionError):
        message = "template nests too deeply (recursion)"
    elif isinstance(exc, RenderBudgetExceeded):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    return InvalidTemplate(f"{field}: {message}", field=field)


@lru_cache(maxsize=256)
def _compile(env: Sandbox, source: str) -> Template:
    return env.from_string(source)


def _generate(template: Template, context: Mapping[str, Any]) -> str:
    """Render within a fresh budget, stopping as soon as the output is too large."""
    pieces: list[str] = []
    size = 0
    with _budgeted():
        for piece in template.generate(context):
            size += len(piece)
            if size > MAX_OUTPUT:
                _refuse_over(size, "the output")
            pieces.append(piece)
    return "".join(pieces)


def _render(env: Sandbox, source: str, context: Mapping[str, Any], field: str) -> str:
    try:
        return _generate(_compile(env, source), context)
    except Exception as exc:  # MemoryError and RecursionError are Exceptions too
        raise _invalid(exc, field) from None


def render_text(source: str, context: Mapping[str, Any], field: str) -> str:
    """One plain-text template (a header value), within the render budget."""
    return _render(_text_env, source, context, field)


def render_url(source: str, context: Mapping[str, Any], field: str) -> str:
    """A URL template whose outputs are percent-encoded, within the render budget."""
    return _render(_url_env, source, context, field)


@dataclass
class Rendered:
    """A message ready for its channel."""

    subject: str | None
    text: str
    html: str | None


def html_to_text(markup: str) -> str:
    """A readable plain-text version of an HTML body (links kept as ``text (url)``)."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", markup)
    text = _BREAKS.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


def render(
    subject: str | None, body: str, context: dict[str, Any], *, html: bool = True
) -> Rendered:
    """Render subject and body; raises InvalidTemplate (naming which) on failure.

    A body with HTML tags is rendered as HTML (autoescaped, plus a text part)
    unless ``html`` is False: then every body is plain text, rendered as written.
    """
    rendered_subject = None
    if subject is not None:
        rendered_subject = " ".join(_render(_text_env, subject, context, "subject").split())
    if html and is_html(body):
        markup = _render(_html_env, body, context, "body")
        return Rendered(rendered_subject, html_to_text(markup), markup)
    return Rendered(rendered_subject, _render(_text_env, body, context, "body"), None)
