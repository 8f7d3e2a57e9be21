"""Generate ``docs/api.md`` from the docstrings of the public ``Engage`` methods.

Run ``python docs/gen_api.py`` after changing a public method; the docs test runs
it before building, so the published page always matches the code.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HEADER = """# Python API

Generated from the docstrings by `docs/gen_api.py`. Methods of the `Engage` object
(`from flask_engage import Engage`); errors are in `flask_engage.errors`, models in
`flask_engage.models`, signals in `flask_engage.signals`.
"""


class _Annotation(str):
    """A string annotation shown without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _signature(function: object) -> str:
    """``(a: int, *, b: str = 'x') -> T`` without ``self`` and without quoted annotations."""
    signature = inspect.signature(function)
    params = [
        p.replace(annotation=_Annotation(p.annotation)) if isinstance(p.annotation, str) else p
        for name, p in signature.parameters.items() if name != "self"
    ]
    returns = signature.return_annotation
    if isinstance(returns, str):
        returns = _Annotation(returns)
    return str(signature.replace(parameters=params, return_annotation=returns))


def render() -> str:
    """The Markdown text of the API page."""
    from flask_engage import Engage, errors, signals

    parts = [HEADER, "## `Engage`\n", inspect.getdoc(Engage) or "", ""]
    for name, member in inspect.getmembers(Engage):
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        doc = inspect.getdoc(member)
        if not doc:
            continue
        if isinstance(member, property):
            parts += [f"### `{name}`\n", doc, ""]
            continue
        signature = _signature(member)
        parts += [f"### `{name}`\n", f"```python\n{name}{signature}\n```\n", doc, ""]
    parts += ["## Errors\n"]
    for name, klass in inspect.getmembers(errors, inspect.isclass):
        if issubclass(klass, errors.EngageError) and klass.__module__ == errors.__name__:
            parts.append(f"* `{name}`: {inspect.getdoc(klass)}")
    parts += ["", "## Signals\n", "Sender: the app. " + (signals.__doc__ or "").split("\n\n")[-1]]
    comment = ""
    for line in inspect.getsource(signals).splitlines():
        if line.startswith("#: "):
            comment = line[3:]
        elif " = _signals.signal(" in line:
            parts.append(f"* `{line.split(' = ')[0]}`: {comment}")
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("api.md")
    target.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
