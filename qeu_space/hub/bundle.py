"""Bundle library modules into one self-contained file: the processor a model folder ships.

A Hub model with its own preprocessing ships it as a python file named in its configs'
``auto_map``; transformers imports that one file (``trust_remote_code=True``) in an environment
where ``qeu_space`` is not installed. The registration and framing code must therefore travel
inside the file, and must be the code the Space runs. Rather than keep a second copy by hand,
:func:`bundle_source` builds the file from the library's own modules:

1. each module's top-level statements are parsed (``ast``); the statements that define the
   requested names, and everything those use, are kept (a closure over top-level names), in
   source order, modules in dependency order;
2. ``from qeu_space... import`` lines are dropped (the names are defined earlier in the file);
   other imports keep only the names the kept code uses;
3. a name defined by two modules is an error, not a silent shadowing.

The result is deterministic, so a test can check that a shipped ``processing_qeu.py`` is exactly
what the current library makes (:func:`qeu_space.hub.processor.check_processor`).

Example:
    >>> source = bundle_source(PROCESSOR_MODULES, PROCESSOR_ROOTS)
    >>> "import qeu_space" in source or "from qeu_space" in source
    False
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The modules the shipped processor is made of, each after the modules it imports.
PROCESSOR_MODULES: tuple[str, ...] = (
    "qeu_space.vocabulary",
    "qeu_space.geometry",
    "qeu_space.views.no_connector",
    "qeu_space.views.sites",
    "qeu_space.views.lattice",
    "qeu_space.views.likeness",
    "qeu_space.views.align",
    "qeu_space.views.window",
    "qeu_space.views.homography",
    "qeu_space.views.registration",
    "qeu_space.views.framing",
    "qeu_space.modeling.answer_grammar",
    "qeu_space.views.processors",
)
#: What a model folder's ``processing_qeu.py`` must define (the rest is what these use).
PROCESSOR_ROOTS: tuple[str, ...] = (
    "QEUViTImageProcessor",
    "QEUIdefics3Processor",
    "QEUFlorence2Processor",
    "NoConnectorError",
    "frame",
    "FRAMINGS",
)
_PROJECT = "qeu_space"
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class _Statement:
    module: str
    node: ast.stmt
    source: str
    defines: frozenset[str]
    uses: frozenset[str]


def _module_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module}")
    return Path(spec.origin)


def _is_project_import(node: ast.stmt) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == _PROJECT
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == _PROJECT for alias in node.names)
    return False


def _bound_names(node: ast.stmt) -> set[str]:
    """Top-level names a statement binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    names = set()
    for target in targets:
        names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _used_names(node: ast.stmt) -> set[str]:
    """Every name a statement reads (its body, decorators, annotations and defaults included)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _segment(lines: list[str], node: ast.stmt) -> str:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    assert node.end_lineno is not None
    return "".join(lines[start - 1 : node.end_lineno]).rstrip()


def _statements(module: str) -> tuple[list[_Statement], list[ast.stmt]]:
    """A module's code statements and its (non-project) imports, docstring and ``__all__`` left
    out; a constant's docstring (a string right after it) stays with it."""
    path = _module_path(module)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text, filename=str(path))
    code: list[_Statement] = []
    imports: list[ast.stmt] = []
    for i, node in enumerate(tree.body):
        if i == 0 and _is_docstring(node):
            continue  # the module docstring
        if _is_docstring(node) and code and isinstance(code[-1].node, ast.Assign | ast.AnnAssign):
            last = code[-1]
            code[-1] = _Statement(
                module, last.node, last.source + "\n" + _segment(lines, node), last.defines,
                last.uses,
            )  # fmt: skip
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            if not _is_project_import(node):
                imports.append(node)
            continue
        if _bound_names(node) == {"__all__"}:
            continue
        code.append(
            _Statement(
                module,
                node,
                _segment(lines, node),
                frozenset(_bound_names(node)),
                frozenset(_used_names(node)),
            )
        )
    return code, imports


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _import_block(imports: Sequence[ast.stmt], used: set[str]) -> str:
    """The imports the kept code uses, merged per module and sorted as isort / ruff sort them:
    standard library, then third party; ``import x`` lines before ``from x import y`` lines."""
    plain: dict[str, set[str]] = {}  # module -> "import module [as alias]" lines
    names: dict[str, set[str]] = {}  # module -> "name [as alias]"
    for node in imports:
        for alias in node.names:
            if (alias.asname or alias.name).split(".")[0] not in used:
                continue
            text = alias.name + (f" as {alias.asname}" if alias.asname else "")
            if isinstance(node, ast.ImportFrom):
                names.setdefault(node.module or "", set()).add(text)
            else:
                plain.setdefault(alias.name, set()).add(f"import {text}")
    sections = []
    for stdlib in (True, False):

        def ours(module: str, stdlib: bool = stdlib) -> bool:
            return (module.split(".")[0] in sys.stdlib_module_names) == stdlib

        lines = [line for m in sorted(plain, key=str.lower) if ours(m) for line in sorted(plain[m])]
        lines += [
            _from_import(m, sorted(names[m], key=_name_key))
            for m in sorted(names, key=str.lower)
            if ours(m)
        ]
        if lines:
            sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _from_import(module: str, names: list[str], width: int = 100) -> str:
    """``from module import a, b``, one name a line in parentheses when longer than ``width``
    (as ruff formats it, so the shipped file passes the project's lint)."""
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= width:
        return line
    return f"from {module} import (\n" + "".join(f"    {n},\n" for n in names) + ")"


def _name_key(name: str) -> tuple[int, str]:
    """isort's order of imported names: CONSTANTS, then Classes, then functions."""
    bare = name.split(" ")[0]
    kind = 0 if bare.isupper() else 1 if bare[:1].isupper() else 2
    return kind, bare


def bundle_source(modules: Sequence[str], roots: Iterable[str], *, header: str = "") -> str:
    """One python file defining ``roots`` and all they use from ``modules``, without imports of
    the project.

    Args:
        modules: dotted module names, each after the modules whose names it imports.
        roots: the names the file must define.
        header: the file's docstring (without quotes).

    Raises:
        ValueError: a root is defined nowhere, or two modules define a name the file needs.
    """
    statements: list[_Statement] = []
    imports: list[ast.stmt] = []
    for module in modules:
        code, module_imports = _statements(module)
        statements += code
        imports += module_imports
    by_name: dict[str, list[_Statement]] = {}
    for statement in statements:
        for name in statement.defines:
            by_name.setdefault(name, []).append(statement)
    imported = {name for node in imports for name in _bound_names(node)}

    kept: set[int] = set()
    wanted: list[str] = list(roots)
    seen: set[str] = set()
    for name in wanted:
        if name not in by_name and name not in imported:
            raise ValueError(f"{name!r} is defined in none of {', '.join(modules)}")
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        definitions = by_name.get(name, [])
        if len({s.module for s in definitions}) > 1:
            where = ", ".join(sorted({s.module for s in definitions}))
            raise ValueError(f"{name!r} is defined in more than one bundled module ({where})")
        for statement in definitions:
            if id(statement) not in kept:
                kept.add(id(statement))
                wanted += sorted(statement.uses - seen)

    used = set().union(*(s.uses for s in statements if id(s) in kept))
    defined = set().union(*(s.defines for s in statements if id(s) in kept))
    clash = defined & {name for node in imports for name in _bound_names(node) if name in used}
    if clash:
        raise ValueError(f"bundled code defines names that an import also binds: {sorted(clash)}")
    chunks = []
    for module in modules:
        body = [s for s in statements if s.module == module and id(s) in kept]
        if body:
            banner = f"# {'-' * 16} {module} (generated: edit the library, not this file)"
            chunks.append((body[0].node, "\n\n\n".join([banner, *(s.source for s in body)])))
    head = f'"""{header}"""\n\n' if header else ""
    text = f"{head}from __future__ import annotations\n\n{_import_block(imports, used)}\n"
    # isort's blank lines after imports: two before a def or class, else one
    text += "\n\n" if chunks and isinstance(chunks[0][0], _DEFS) else "\n"
    return text + "\n\n\n".join(chunk for _, chunk in chunks) + "\n"
