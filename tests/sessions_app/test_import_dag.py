"""The modules of ``sessions_app`` import one another in one direction: no first-party import hides
inside a function to dodge a circle (``lint-imports`` checks the layers between apps; this checks
within the app). The few that remain are named here with the reason they must stay."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "sessions_app"
FIRST_PARTY = ("sessions_app", "agents", "inference", "pipeline", "chatsite")

# (file, what it imports) -> why it is imported inside a function.
ALLOWED = {
    ("apps.py", "sessions_app.schema"): "ready(): registers the token scheme with drf-spectacular once the apps are",
    ("tools.py", "inference.tools.mcp.call"): "the MCP SDK takes ~1.3 s to import: only a server tool's call pays it",
}


def _function_level_imports(app: Path = APP) -> set[tuple[str, str]]:
    """(file relative to ``app``, what it imports) for each first-party import not at a module's top
    level: ``from a.b import c`` imports ``a.b.c``."""
    found: set[tuple[str, str]] = set()
    for path in sorted(app.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for node in ast.walk(scope):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [f"{node.module}.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                else:
                    continue
                for module in modules:
                    if module.split(".")[0] in FIRST_PARTY:
                        found.add((path.relative_to(app).as_posix(), module))
    return found


def test_no_first_party_import_hides_in_a_function_unless_named_with_its_reason() -> None:
    unexplained = _function_level_imports() - ALLOWED.keys()
    assert not unexplained, f"move these imports to the top of their module (or name why they cannot be): {unexplained}"


def test_every_named_exception_is_still_needed() -> None:
    gone = ALLOWED.keys() - _function_level_imports()
    assert not gone, f"these imports are at the top now: take them off ALLOWED: {gone}"


def test_the_check_sees_imports_in_functions_and_methods_only(tmp_path: Path) -> None:
    (tmp_path / "openai").mkdir()
    (tmp_path / "top.py").write_text("import logging\nfrom sessions_app import turns\n")
    (tmp_path / "openai" / "door.py").write_text(
        "import logging\n\n"
        "def f():\n    from sessions_app.turns import turn_next\n    import redis\n    return turn_next\n\n"
        "class C:\n    async def g(self):\n        import inference.cache\n"
    )
    assert _function_level_imports(tmp_path) == {
        ("openai/door.py", "sessions_app.turns.turn_next"),
        ("openai/door.py", "inference.cache"),
    }
