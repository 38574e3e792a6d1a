"""Generate ``ocpp_rpc/v16.py``, ``v201.py`` and ``v21.py`` from the shipped OCA schemas.

    python tools/generate_types.py            # rewrite the three modules
    python tools/generate_types.py --check    # exit 1 if a committed module is out of date

Each module gets, for every action, a ``TypedDict`` for the request and one for
the response (``<Action>Request`` / ``<Action>Response``), a ``TypedDict`` per
nested object, a ``Literal`` alias per enumeration, and ``call`` / ``handler``
overloaded per action. The output depends only on the schemas and this file
(sorted input, no timestamps), so ``tests/typed`` can regenerate it in memory
and compare.

Naming. 2.0.1 and 2.1 (and the 1.6 security extension) name their types in
``definitions``; those names are kept. Plain 1.6 nests objects and enums
inline: such a type is named after its key (``idTagInfo`` -> ``IdTagInfo``)
when every inline type under that key in the version has the same shape, else
after its parent and key (``status`` in ``BootNotificationResponse`` ->
``BootNotificationResponseStatus``). One shape gets one name (the first met,
in file order).
"""

from __future__ import annotations

import argparse
import html
import json
import keyword
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "ocpp_rpc" / "schemas"
#: module name -> (schema folder, the version as people write it)
VERSIONS = {
    "v16": ("ocpp1.6", "OCPP 1.6"),
    "v201": ("ocpp2.0.1", "OCPP 2.0.1"),
    "v21": ("ocpp2.1", "OCPP 2.1"),
}
#: 2.1 messages sent with SEND (message type 6): typed, but never answered.
SEND_ONLY = {"NotifyPeriodicEventStream"}
LINE = 100
#: Keys that say nothing about the Python type of a value.
_DOC_KEYS = {"description", "javaType", "comment", "$id", "$schema", "title", "id"}
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


@dataclass
class Enum:
    name: str
    values: list[str]
    description: str | None


@dataclass
class Field:
    key: str
    annotation: str
    required: bool
    description: str | None


@dataclass
class Struct:
    name: str
    fields: list[Field]
    description: str | None
    depends: list[str] = field(default_factory=list)


@dataclass
class Action:
    name: str
    request: str
    response: str | None


def shape(node: Any) -> str:
    """A schema node's shape: the node without its documentation, as text."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _DOC_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(node), sort_keys=True)


def pascal(key: str) -> str:
    return key[:1].upper() + key[1:]


def clean(description: str | None) -> str | None:
    """A schema description as plain text (the OCA files use CRLF and padding)."""
    if not description:
        return None
    # Typographic quotes as ASCII: ruff (RUF001-003) takes them for look-alikes.
    description = html.unescape(description).translate(_QUOTES)
    lines = [line.rstrip() for line in description.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text) or None


class Version:
    """The types of one OCPP version, built from its schema files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.enums: dict[str, Enum] = {}
        self.structs: dict[str, Struct] = {}
        self.actions: list[Action] = []
        self._by_shape: dict[str, str] = {}  # shape -> type name
        self._defined: dict[str, str] = {}  # definition name -> shape (2.x, 1.6 extension)
        self._definition_docs: dict[str, set[str | None]] = {}
        self._inline_shapes: dict[str, set[str]] = {}  # candidate name -> shapes seen
        files = sorted(folder.glob("*.json"))
        self._schemas = {path.stem: json.loads(path.read_text("utf-8")) for path in files}
        for schema in self._schemas.values():
            self._collect_inline(schema, None)
            for name, node in schema.get("definitions", {}).items():
                self._definition_docs.setdefault(name, set()).add(clean(node.get("description")))
        self._build()

    # -- naming -----------------------------------------------------------------

    def _collect_inline(self, node: dict[str, Any], key: str | None) -> None:
        """Record the shape of every inline object/enum under each candidate name."""
        if key is not None and ("enum" in node or "properties" in node):
            self._inline_shapes.setdefault(pascal(key), set()).add(shape(node))
        for child_key, child in node.get("properties", {}).items():
            self._collect_inline(child, child_key)
        if isinstance(node.get("items"), dict):
            self._collect_inline(node["items"], key)
        for definition in node.get("definitions", {}).values():
            self._collect_inline(definition, None)

    def _inline_name(self, node: dict[str, Any], parent: str, key: str) -> tuple[str, bool]:
        """The name of an inline type, and whether it is new."""
        node_shape = shape(node)
        if node_shape in self._by_shape:
            return self._by_shape[node_shape], False
        name = pascal(key)
        if len(self._inline_shapes[name]) > 1 or name in self.structs or name in self.enums:
            name = parent + pascal(key)
        taken = set(self.structs) | set(self.enums) | set(self._defined)
        base, n = name, 2
        while name in taken:
            name, n = f"{base}{n}", n + 1
        self._by_shape[node_shape] = name
        return name, True

    # -- building ---------------------------------------------------------------

    def _build(self) -> None:
        names = sorted(self._schemas)
        pairs: list[tuple[str, str, str | None]]
        if self.folder.name == "ocpp1.6":
            requests = [n for n in names if not n.endswith("Response")]
            pairs = [(n, n, f"{n}Response") for n in requests]
        else:
            pairs = [(n[: -len("Request")], n, f"{n[: -len('Request')]}Response")
                     for n in names if n.endswith("Request")]
            pairs += [(n, n, None) for n in names if n in SEND_ONLY]
        for action, request_file, response_file in sorted(pairs):
            request = self._message(request_file, f"{action}Request")
            response = None
            if response_file is not None:
                response = self._message(response_file, f"{action}Response")
            self.actions.append(Action(action, request, response))
        unused = set(names) - {a.name for a in self.actions} - {
            f"{a.name}Request" for a in self.actions} - {f"{a.name}Response" for a in self.actions}
        if unused:
            raise SystemExit(f"{self.folder.name}: files not understood: {sorted(unused)}")

    def _message(self, stem: str, name: str) -> str:
        schema = self._schemas[stem]
        self._struct(schema, name, schema, description=None)
        return name

    def _struct(
        self, node: dict[str, Any], name: str, schema: dict[str, Any], description: str | None
    ) -> None:
        required = set(node.get("required", ()))
        struct = Struct(name, [], description)
        self.structs[name] = struct  # before the fields: a nested type may be named after it
        for key, child in node.get("properties", {}).items():
            if not key.isidentifier() or keyword.iskeyword(key):
                raise SystemExit(f"{name}.{key}: not usable as a TypedDict class field")
            annotation = self._annotation(child, name, key, schema, struct.depends)
            doc = clean(child.get("description"))
            if doc is None and "$ref" in child:
                target = self._definition(schema, child["$ref"])
                if "enum" in target:  # 2.x puts a field's meaning on its enum type
                    doc = clean(target.get("description"))
            struct.fields.append(Field(key, annotation, key in required, doc))

    def _definition(self, schema: dict[str, Any], ref: str) -> dict[str, Any]:
        prefix = "#/definitions/"
        if not ref.startswith(prefix):
            raise SystemExit(f"unsupported $ref {ref!r}")
        definition: dict[str, Any] = schema["definitions"][ref[len(prefix):]]
        return definition

    def _annotation(
        self, node: dict[str, Any], parent: str, key: str, schema: dict[str, Any],
        depends: list[str],
    ) -> str:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            target = self._definition(schema, node["$ref"])
            target_shape = shape(target)
            if name in self._defined:
                if self._defined[name] != target_shape:
                    raise SystemExit(f"{self.folder.name}: two different types named {name}")
            else:
                self._defined[name] = target_shape
                docs = self._definition_docs[name]
                # One definition, several files, several descriptions: each
                # describes its own use; the field comments carry them.
                doc = next(iter(docs)) if len(docs) == 1 else None
                self._declare(target, name, schema, doc)
            if name in self.structs:
                depends.append(name)
            return name
        if "enum" in node or "properties" in node:
            name, new = self._inline_name(node, parent, key)
            if new:
                self._declare(node, name, schema, clean(node.get("description")))
            if name in self.structs:
                depends.append(name)
            return name
        kind = node.get("type")
        if kind == "array":
            return f"list[{self._annotation(node['items'], parent, key, schema, depends)}]"
        if kind == "object":
            return "dict[str, Any]"
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind is None:
            return "Any"  # 2.x DataTransfer.data: any JSON value
        raise SystemExit(f"{parent}.{key}: unsupported type {kind!r}")

    def _declare(
        self, node: dict[str, Any], name: str, schema: dict[str, Any], description: str | None
    ) -> None:
        if "enum" in node:
            if node.get("type") != "string":
                raise SystemExit(f"{name}: an enumeration that is not of strings")
            self.enums[name] = Enum(name, list(node["enum"]), description)
        elif node.get("type") == "object":
            self._struct(node, name, schema, description)
        else:
            raise SystemExit(f"{name}: unsupported definition {node.get('type')!r}")


# -- writing ------------------------------------------------------------------------


def comment(text: str, indent: str, marker: str = "#: ") -> list[str]:
    width = LINE - len(indent) - len(marker)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        wrapped = textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False)
        lines += [f"{indent}{marker}{line}".rstrip() for line in wrapped or [""]]
    return lines


def docstring(text: str, indent: str) -> list[str]:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    width = LINE - len(indent)
    body: list[str] = []
    for paragraph in text.split("\n"):
        wrapped = textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False)
        body += [f"{indent}{line}".rstrip() for line in wrapped or [""]]
    if len(body) == 1 and len(body[0]) + 6 <= LINE:
        return [f'{indent}"""{body[0].strip()}"""']
    return [f'{indent}"""', *body, f'{indent}"""']


def ordered(structs: dict[str, Struct], roots: list[str]) -> list[Struct]:
    """Structs with every dependency before its users (annotations are evaluated)."""
    done: dict[str, None] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise SystemExit(f"recursive type {' -> '.join((*path, name))}")
        for dependency in structs[name].depends:
            visit(dependency, (*path, name))
        done[name] = None

    for name in roots:
        visit(name, ())
    return [structs[name] for name in done]


def render(module: str) -> str:
    folder, title = VERSIONS[module]
    version = Version(SCHEMAS / folder)
    messages = {a.request for a in version.actions} | {
        a.response for a in version.actions if a.response}
    nested = sorted(set(version.structs) - messages)
    answered = [a for a in version.actions if a.response is not None]
    out: list[str] = []
    add = out.append
    add(f'"""{title} payloads as TypedDicts, and `call` / `handler` typed per action.')
    add("")
    add("Generated by ``tools/generate_types.py`` from the OCA JSON schemas in")
    add(f"``ocpp_rpc/schemas/{folder}``: do not edit, regenerate. Types only: payloads")
    add("stay plain dicts at run time; strict mode checks what types cannot say")
    add("(lengths, ranges, formats, extra ``customData`` keys). See docs/typed.md.")
    add("")
    add("The descriptions are the schemas' own, (c) Open Charge Alliance, under the")
    add("CC BY-ND 4.0 license (``ocpp_rpc/schemas/NOTICE.md``).")
    add('"""')
    add("")
    add("import sys")
    add("from collections.abc import Awaitable, Callable")
    add("from typing import Any, Literal, TypeAlias, TypeVar, overload")
    add("")
    add("from ._rpc.client import RPCClient")
    add("from ._rpc.handlers import Call, RPCEndpoint")
    add("from ._rpc.server import RPCServer")
    add("")
    add("if sys.version_info >= (3, 11):")
    add("    from typing import NotRequired, TypedDict")
    add("else:  # typing's TypedDict of 3.10 does not know NotRequired")
    add("    from typing_extensions import NotRequired, TypedDict")
    add("")
    names = sorted(version.enums) + nested + sorted(messages)
    add("__all__ = (")
    out.extend(f'    "{name}",' for name in sorted(names))
    add('    "call",')
    add('    "handler",')
    add(")")
    add("")
    add("# -- enumerations ".ljust(LINE, "-"))
    for name in sorted(version.enums):
        enum = version.enums[name]
        add("")
        if enum.description:
            out.extend(comment(enum.description, ""))
        one_line = f"{name}: TypeAlias = Literal[{', '.join(map(json.dumps, enum.values))}]"
        if len(one_line) <= LINE:
            add(one_line)
        else:
            add(f"{name}: TypeAlias = Literal[")
            out.extend(f"    {json.dumps(value)}," for value in enum.values)
            add("]")
    add("")
    add("")
    add("# -- objects ".ljust(LINE, "-"))
    roots = nested + [n for a in version.actions for n in (a.request, a.response) if n]
    for struct in ordered(version.structs, roots):
        if struct.name in messages:
            continue
        out.extend(_class(struct))
    add("")
    add("")
    add("# -- messages ".ljust(LINE, "-"))
    for action in version.actions:
        for name in (action.request, action.response):
            if name is not None:
                out.extend(_class(version.structs[name]))
    add("")
    add("")
    add("# -- call and handler ".ljust(LINE, "-"))
    add("")
    add('_P = TypeVar("_P")')
    add('_R = TypeVar("_R")')
    add("#: What `handler` registers: receives the call, returns the response (or an awaitable")
    add("#: of it, or NOREPLY).")
    add("_Handler: TypeAlias = Callable[[Call[_P]], _R | Awaitable[_R]]")
    add("_Register: TypeAlias = Callable[[_Handler[_P, _R]], _Handler[_P, _R]]")
    add("")
    add("# One overload per action. Their annotations are strings: evaluated at import,")
    add("# they would add ~45 % to the import of the module (benchmarks/README.md).")
    for action in answered:
        add("")
        add("")
        add("@overload")
        add("async def call(")
        # RPCEndpoint: a handler's `call.client` (an RPCClient or ServerClient at run time)
        add('    client: "RPCClient | RPCEndpoint",')
        add(f"    action: 'Literal[\"{action.name}\"]',")
        add(f'    params: "{action.request}",')
        add("    *,")
        add('    timeout: "float | None" = None,')
        add(f') -> "{action.response}": ...')
    add("")
    add("")
    add("async def call(")
    add("    client: RPCClient | RPCEndpoint,")
    add("    action: str,")
    add("    params: Any,")
    add("    *,")
    add("    timeout: float | None = None,")
    add(") -> Any:")
    add('    """`await client.call(action, params, timeout=timeout)`, typed per action:')
    add("    `params` is the action's request, the result its response.")
    add("    `client` is an `RPCClient`, a `ServerClient` or a handler's `call.client`.")
    add('    """')
    add("    return await client.call(action, params, timeout=timeout)")
    # Every action, SENDs too: an inbound SEND runs its handler, whose result
    # is never sent (None).
    for action in version.actions:
        add("")
        add("")
        add("@overload")
        add("def handler(")
        add(f'    target: "RPCClient | RPCServer", action: \'Literal["{action.name}"]\'')
        register = f"_Register[{action.request}, {action.response or 'None'}]"
        result = f') -> "{register}": ...'
        if len(result) <= LINE:
            add(result)
        else:
            add(") -> (")
            add(f'    "{register}"')
            add("): ...")
    add("")
    add("")
    add("def handler(target: RPCClient | RPCServer, action: str) -> _Register[Any, Any]:")
    add('    """Decorator: register the function as `target`\'s handler of `action`')
    add("    (`target.handle(action, function)`), typed per action: the handler receives")
    add("    a `Call` of the action's request and returns its response (or an awaitable")
    sends = [a.name for a in version.actions if a.response is None]
    if sends:
        add("    of it, or `NOREPLY`); the handler of a SEND, which is never answered")
        add(f'    ({", ".join(sends)}), returns None."""')
    else:
        add('    of it, or `NOREPLY`)."""')
    add("")
    add("    def register(function: _Handler[Any, Any]) -> _Handler[Any, Any]:")
    add("        target.handle(action, function)")
    add("        return function")
    add("")
    add("    return register")
    return "\n".join(out) + "\n"


def _class(struct: Struct) -> list[str]:
    lines = ["", ""]
    lines.append(f"class {struct.name}(TypedDict):")
    if struct.description:
        lines.extend(docstring(struct.description, "    "))
        if struct.fields:
            lines.append("")
    elif not struct.fields:
        lines.append("    pass")
    for index, item in enumerate(struct.fields):
        if item.description:
            if index:
                lines.append("")
            lines.extend(comment(item.description, "    "))
        annotation = item.annotation if item.required else f"NotRequired[{item.annotation}]"
        lines.append(f"    {item.key}: {annotation}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    args = parser.parse_args(argv)
    stale = []
    for module in VERSIONS:
        path = ROOT / "ocpp_rpc" / f"{module}.py"
        text = render(module)
        current = path.read_text("utf-8") if path.exists() else None
        if current != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(text, "utf-8", newline="\n")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
