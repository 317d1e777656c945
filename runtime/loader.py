"""Which functions a process runs: ``--functions`` and ``DRIFTLINE_FUNCTIONS``.

A selection is a comma-separated list of items::

    all                      the built-in functions (driftline.functions.FUNCTIONS)
    score                    one built-in function, by name
    ./shop.py                every @function a Python file defines
    ./shop.py:tag            one of them, by its attribute or function name
    my_pkg.handlers[:tag]    the same for an importable module

A file or module that has a ``FUNCTIONS`` list names its functions with it; otherwise every
``@function`` it defines (not those it imports) is taken, in order. A file is imported once,
under its stem as module name when that is free, with its folder appended to ``sys.path``
so it can import its neighbours, as ``python shop.py`` could.

Everything wrong is a :class:`ConfigError` naming the item, the file or module, the
function and what to do: a missing file, one that fails to import, a name not in it, an
object that is no ``@function``, two functions of one name, a user event type that cannot
be one, or one type declared twice with different fields.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from driftline.events.codec import Codec
from driftline.events.errors import SchemaError
from driftline.events.user import is_builtin, user_schema
from driftline.runtime.errors import ConfigError
from driftline.runtime.function import FunctionSpec, Handler, spec_of

ALL = "all"
FORMS = "all, a built-in name, ./file.py[:name] or package.module[:name]"


@dataclass(frozen=True)
class Selected:
    """One chosen function, where it came from, and how another process chooses it."""

    handler: Handler
    origin: str
    """The file or module it was found in ('built-in' for the platform's own)."""
    ref: str
    """The selection item that names exactly this function (for child processes)."""

    @property
    def spec(self) -> FunctionSpec:
        return spec_of(self.handler)


def load_functions(text: str, builtins: Sequence[Handler] | None = None) -> list[Selected]:
    """The functions a selection names, checked; ``builtins`` default to the platform's."""
    chosen: dict[str, Selected] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        for selected in _item(item, builtins):
            _add(chosen, selected)
    _check_types(list(chosen.values()))
    return list(chosen.values())


def _add(chosen: dict[str, Selected], selected: Selected) -> None:
    name = selected.spec.name
    other = chosen.get(name)
    if other is None:
        chosen[name] = selected
    elif other.handler is not selected.handler:
        raise ConfigError(
            f"two functions are named {name!r}: {other.ref} and {selected.ref}; rename "
            f"one (@function(name=...)) or choose only one"
        )


def _item(item: str, builtins: Sequence[Handler] | None) -> list[Selected]:
    target, colon, attr = item.rpartition(":")  # C:\shop.py has no ':name'
    if not colon or not re.fullmatch(r"[\w-]+", attr):
        target, attr = item, ""
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = _resolve_file(target)
        module, origin, base = _import_file(path, target), target, str(path)
    elif item == ALL or (not attr and "." not in item):
        return _builtin(item, builtins)
    else:
        module, origin, base = _import_module(target), target, target
    if attr:
        return [Selected(_named(module, origin, attr), origin, f"{base}:{attr}")]
    return [
        Selected(h, origin, f"{base}:{_attr_name(module, h)}") for h in _defined(module, origin)
    ]


def _builtin(item: str, builtins: Sequence[Handler] | None) -> list[Selected]:
    if builtins is None:
        from driftline.functions import FUNCTIONS

        builtins = FUNCTIONS
    by_name = {spec_of(h).name: h for h in builtins}
    if item == ALL:
        return [Selected(h, "built-in", n) for n, h in by_name.items()]
    if item in by_name:
        return [Selected(by_name[item], "built-in", item)]
    raise ConfigError(
        f"unknown function(s) [{item!r}]; known: {sorted(by_name)}; or name your own: {FORMS}"
    )


def _resolve_file(target: str) -> Path:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        where = "" if str(path) == target else f" ({path})"
        raise ConfigError(
            f"{target}: no such file{where}; give the path of a Python file that defines "
            f"@function handlers"
        )
    return path


def _import_file(path: Path, shown: str) -> ModuleType:
    name = _module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{shown}: not a Python file Python can import")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module  # pydantic and typing resolve the file's names through it
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise _import_failed(shown, exc, path) from exc
    return module


def _module_name(path: Path) -> str:
    """The file's stem when no other module has that name, else a name of its own."""
    stem = path.stem
    if stem.isidentifier():
        loaded = sys.modules.get(stem)
        if loaded is not None and _same_file(getattr(loaded, "__file__", None), path):
            return stem
        if loaded is None and _free(stem, path):
            return stem
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    safe = re.sub(r"\W", "_", stem)
    return f"driftline_user_{safe}_{digest}"


def _free(name: str, path: Path) -> bool:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return found is None or _same_file(found.origin, path)


def _same_file(origin: str | None, path: Path) -> bool:
    return origin is not None and Path(origin).resolve() == path


def _import_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise ConfigError(
                f"{target}: no module of that name; install its package or put its folder "
                f"on PYTHONPATH (or give a file: ./path/to/file.py)"
            ) from exc
        raise _import_failed(target, exc, None) from exc
    except Exception as exc:
        raise _import_failed(target, exc, None) from exc


def _import_failed(shown: str, exc: BaseException, path: Path | None) -> ConfigError:
    if isinstance(exc, ConfigError | SchemaError):  # @function's own check: it names the function
        return ConfigError(f"{shown}: {exc}")
    line = _line_in(exc.__traceback__, path) if path is not None else None
    where = f" (line {line})" if line else ""
    return ConfigError(
        f"{shown}: importing it failed{where}: {type(exc).__name__}: {exc}; fix the file "
        f"(python {shown} shows the whole traceback)"
        if path is not None
        else f"{shown}: importing it failed: {type(exc).__name__}: {exc}"
    )


def _line_in(tb: TracebackType | None, path: Path) -> int | None:
    """The last line of ``path`` the traceback passed through."""
    line = None
    while tb is not None:
        if _same_file(tb.tb_frame.f_code.co_filename, path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _is_function(value: Any) -> bool:
    return isinstance(getattr(value, "spec", None), FunctionSpec)


def _named(module: ModuleType, origin: str, attr: str) -> Handler:
    value = getattr(module, attr, None)
    if value is None:
        by_spec = {spec_of(h).name: h for h in _defined(module, origin, strict=False)}
        if attr in by_spec:
            return by_spec[attr]
        known = sorted(_attr_name(module, h) for h in by_spec.values())
        raise ConfigError(f"{origin}: no {attr!r} in it; its @functions: {known}")
    if not _is_function(value):
        kind = "class" if isinstance(value, type) else type(value).__name__
        raise ConfigError(
            f"{origin}:{attr} is a {kind}, not a @function; decorate a "
            f"handler: @function(subscribes=...) def {attr}(event: SomeEvent, ctx: Context)"
        )
    handler: Handler = value
    return handler


def _defined(module: ModuleType, origin: str, *, strict: bool = True) -> list[Handler]:
    """The module's ``FUNCTIONS`` list, else the @functions it defines itself, in order."""
    listed = getattr(module, "FUNCTIONS", None)
    if listed is not None:
        bad = [repr(f) for f in listed if not _is_function(f)]
        if bad:
            raise ConfigError(f"{origin}: FUNCTIONS holds what is not a @function: {bad}")
        return list(listed)
    found = [
        v for v in vars(module).values() if _is_function(v) and v.__module__ == module.__name__
    ]
    if not found and strict:
        raise ConfigError(
            f"{origin}: defines no @function; declare one with @function(subscribes=..., "
            f"emits=...) or list them in FUNCTIONS"
        )
    return found


def _attr_name(module: ModuleType, handler: Handler) -> str:
    for name, value in vars(module).items():
        if value is handler:
            return name
    return spec_of(handler).name


def _check_types(chosen: list[Selected]) -> None:
    """Every user event type can travel, and one type has one schema across the selection."""
    types = []
    for s in chosen:
        for model in s.spec.event_types:
            if is_builtin(model):
                continue
            try:
                user_schema(model)
            except SchemaError as exc:
                raise ConfigError(f"{s.origin}: function {s.spec.name}: {exc}") from exc
            types.append(model)
    try:
        Codec(types)
    except SchemaError as exc:
        raise ConfigError(f"--functions: {exc}") from exc
