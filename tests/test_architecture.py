"""The house (DESIGN.md): dependencies point down only, checked on the source with `ast`.

- `annuaire/` and `crypto/` are leaves: they import nothing of `mss`, `smtp`, `imap`, `web`.
- Front ends (`smtp/`, `imap/`, `web/`) never import each other, nor the store, the database
  or SQLAlchemy: they see the core through its public face only (`PUBLIC_CORE`), and are
  typed against its Protocols, never `typing.Any`.
- The core never imports a front end, except in the composition root (`mss/serve.py`).

Every import counts, including those inside functions and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRONT_ENDS = ("smtp", "imap", "web")
LEAVES = ("annuaire", "crypto")
#: What front ends may import of the core: its services and the plain types they speak in.
PUBLIC_CORE = {
    "mss.services",
    "mss.refusals",
    "mss.records",
    "mss.principal",
    "mss.peers",
    "mss.admission",
    "mss.sasl",
    "mss.config",
    "mss.tls",
    "mss.tls_protocol",  # the lean TLS layer implicit-TLS listeners install (transport only, no core state)
    "mss.metrics",  # metric definitions, no I/O (front ends count their sessions)
}
COMPOSITION_ROOT = {"mss/serve.py"}
FORBIDDEN_IN_FRONT_ENDS = ("sqlalchemy", "mss.store", "mss.db", "mss.core", "mss.commit")


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []


def _module_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_of(path, root).split(".")
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(root))
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append(Import(rel, node.lineno, module))
            # `from mss import store` imports the module mss.store.
            out += [Import(rel, node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(packages: tuple[str, ...], rule) -> list[str]:
    found = []
    for package in packages:
        for path in _package_files(package):
            for imp in imports_of(path):
                why = rule(imp)
                if why:
                    found.append(f"{imp.file}:{imp.line} imports {imp.module}: {why}")
    return sorted(set(found))


def test_leaves_import_nothing_above_them():
    def rule(imp: Import) -> str | None:
        top = imp.module.split(".")[0]
        return "a leaf imports nothing of the core or a front end" if top in ("mss", *FRONT_ENDS) else None

    assert _violations(LEAVES, rule) == []


def test_front_ends_see_only_the_public_face_of_the_core():
    def rule(imp: Import) -> str | None:
        own = imp.file.split("/")[0]
        top = imp.module.split(".")[0]
        if top in FRONT_ENDS and top != own:
            return "front ends never import each other"
        if any(_is(imp.module, f) for f in FORBIDDEN_IN_FRONT_ENDS):
            return "front ends never reach the store, the database or the core object"
        if top == "mss" and imp.module != "mss" and not any(_is(imp.module, p) for p in PUBLIC_CORE):
            # `from mss.services import Failure` also records "mss.services.Failure": fine.
            return "not part of the core's public face (mss.services and the plain types)"
        return None

    assert _violations(FRONT_ENDS, rule) == []


def test_the_core_imports_front_ends_only_in_the_composition_root():
    def rule(imp: Import) -> str | None:
        if imp.file in COMPOSITION_ROOT:
            return None
        return "the core never imports a front end" if imp.module.split(".")[0] in FRONT_ENDS else None

    assert _violations(("mss",), rule) == []


def test_front_ends_are_typed_against_protocols_not_any():
    found = []
    for package in FRONT_ENDS:
        for path in _package_files(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
                if name == "Any":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


# -- the checker itself must be able to fail -------------------------------------------------


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from mss.store import Store\n", "imap/x.py", "mss.store"),
        ("from mss import db\n", "smtp/x.py", "mss.db"),
        ("def f():\n    import sqlalchemy.orm\n", "imap/x.py", "sqlalchemy.orm"),
        ("from .identity import x\n", "crypto/x.py", "crypto.identity"),
        ("from ..store import x\n", "mss/cli/x.py", "mss.store"),
    ],
)
def test_imports_are_read_with_their_full_module_name(tmp_path, source, where, expected):
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert expected in {i.module for i in imports_of(path, tmp_path)}
