"""Choosing functions: built-ins, a user's file or module, and the messages for what is wrong."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from driftline.functions import FUNCTIONS
from driftline.runtime.errors import ConfigError
from driftline.runtime.loader import load_functions

SHOP = '''
from typing import ClassVar
from driftline.events import Event, ScoreCompleted
from driftline.runtime import Context, function

class Scored(Event):
    """A score, tagged by the shop."""

    TYPE: ClassVar[str] = "shop.scored"
    request_id: str
    prediction: float

@function(subscribes="score.completed", emits="shop.scored")
def tag(event: ScoreCompleted, ctx: Context) -> Scored:
    return Scored(model=event.model, request_id=event.request_id, prediction=event.predictions[0])

@function(subscribes="shop.scored", name="count-scored")
def count(event: Scored, ctx: Context) -> None:
    pass
'''


def write(folder: Path, source: str, stem: str = "") -> Path:
    """A user file with a name no other test uses (each file is imported once per process)."""
    path = folder / f"{stem or 'user'}_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source)
    return path


def names(text: str) -> list[str]:
    return [s.spec.name for s in load_functions(text)]


def test_all_is_the_builtin_tuple_and_a_file_adds_its_functions(tmp_path: Path) -> None:
    shop = write(tmp_path, SHOP)
    builtins = [f.spec.name for f in FUNCTIONS]  # type: ignore[attr-defined]
    assert names(f"all,{shop}") == [*builtins, "tag", "count-scored"]
    assert names(f"score,{shop}:tag") == ["score", "tag"]
    assert names(f"{shop}:count-scored") == ["count-scored"]  # by function name too


def test_a_file_is_imported_once_and_named_again_is_no_clash(tmp_path: Path) -> None:
    shop = write(tmp_path, SHOP)
    chosen = load_functions(f"{shop},{shop}:tag")
    assert [s.spec.name for s in chosen] == ["tag", "count-scored"]
    assert chosen[0].ref == f"{shop.resolve()}:tag" and chosen[0].origin == str(shop)


def test_a_module_is_chosen_by_dotted_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / f"shop_pkg_{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text(SHOP)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert names(f"{package.name}.handlers") == ["tag", "count-scored"]
    assert names(f"{package.name}.handlers:tag") == ["tag"]


def test_a_functions_list_names_what_a_file_offers(tmp_path: Path) -> None:
    shop = write(tmp_path, SHOP + "\nFUNCTIONS = (count,)\n")
    assert names(str(shop)) == ["count-scored"]


def test_a_file_may_import_its_neighbour(tmp_path: Path) -> None:
    events = write(tmp_path, SHOP, "events")
    user = write(
        tmp_path,
        f"from {events.stem} import Scored\n"
        "from driftline.runtime import Context, function\n"
        "@function(subscribes='shop.scored')\n"
        "def alert(event: Scored, ctx: Context) -> None: ...\n",
    )
    assert names(str(user)) == ["alert"]
    sys.modules.pop(events.stem, None)


BROKEN = [
    ("missing", None, "{path}: no such file; give the path of a Python file"),
    ("syntax", "def tag(:\n", "{path}: importing it failed.*SyntaxError"),
    (
        "import",
        "x = 1\nimport no_such_module_here\n",
        r"{path}: importing it failed \(line 2\): ModuleNotFoundError: No module named "
        "'no_such_module_here'",
    ),
    ("empty", "x = 1\n", "{path}: defines no @function; declare one"),
    (
        "untyped",
        "from driftline.runtime import function\n"
        "@function(subscribes='score.completed')\ndef tag(event, ctx): ...\n",
        "{path}: tag: its first parameter has no type; annotate it",
    ),
    (
        "unknown type",
        "from driftline.events import ScoreCompleted\nfrom driftline.runtime import function\n"
        "@function(subscribes='score.completed', emits='shop.nope')\n"
        "def tag(event: ScoreCompleted, ctx: object) -> None: ...\n",
        r"{path}: tag: emits 'shop\.nope', an unknown event type",
    ),
    (
        "builtin type name",
        SHOP.replace(
            'TYPE: ClassVar[str] = "shop.scored"', 'TYPE: ClassVar[str] = "score.requested"'
        )
        .replace('emits="shop.scored"', "emits=Scored")
        .replace('subscribes="shop.scored"', "subscribes=Scored"),
        r"{path}: function tag: .*Scored: TYPE 'score.requested' is a built-in event type",
    ),
]


@pytest.mark.parametrize(("case", "source", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_is_refused_naming_file_function_and_fault(
    tmp_path: Path, case: str, source: str | None, message: str
) -> None:
    path = tmp_path / "absent.py" if source is None else write(tmp_path, source)
    with pytest.raises(ConfigError, match=message.format(path=path)):
        load_functions(f"all,{path}:tag" if case != "empty" else str(path))


def test_a_name_not_in_the_file_lists_what_is(tmp_path: Path) -> None:
    shop = write(tmp_path, SHOP)
    with pytest.raises(
        ConfigError, match=rf"{shop}: no 'tagg' in it; its @functions: \['count', 'tag'\]"
    ):
        load_functions(f"{shop}:tagg")


def test_an_object_that_is_no_function_is_refused(tmp_path: Path) -> None:
    shop = write(tmp_path, SHOP)
    with pytest.raises(ConfigError, match=rf"{shop}:Scored is a class, not a @function"):
        load_functions(f"{shop}:Scored")


def test_an_unknown_builtin_or_module_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown function\(s\) \['scoring'\]; known: \["):
        load_functions("all,scoring")
    with pytest.raises(ConfigError, match="no_pkg_here.handlers: no module of that name"):
        load_functions("no_pkg_here.handlers")


def test_two_functions_of_one_name_are_refused(tmp_path: Path) -> None:
    one, two = write(tmp_path, SHOP), write(tmp_path, SHOP)
    with pytest.raises(ConfigError, match=r"two functions are named 'tag': .*:tag and .*:tag"):
        load_functions(f"{one}:tag,{two}:tag")


def test_one_type_declared_with_different_fields_is_refused(tmp_path: Path) -> None:
    one = write(tmp_path, SHOP)
    two = write(tmp_path, SHOP.replace("    prediction: float\n", "    prediction: str\n"))
    with pytest.raises(ConfigError, match="'shop.scored' is declared twice with different"):
        load_functions(f"{one}:tag,{two}:count-scored")
