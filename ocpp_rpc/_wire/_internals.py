"""Every private name of a dependency that `_wire` relies on, in one place:
fastjsonschema's code generator.

Its public API (`fastjsonschema.compile`) compiles a schema as it stands.
Strict mode needs two things more that only its code generator offers: a
``multipleOf`` that tolerates binary floating-point error (API.md: 9.1 is a
multiple of 0.1), and object keywords that allocate nothing when a payload is
valid (``required``, ``properties``, ``additionalProperties``, ``enum``: most
of an OCPP payload's checks). Both are subclasses of its draft generators,
which rely on:

- the classes ``CodeGeneratorDraft04``, ``CodeGeneratorDraft06`` and
  ``CodeGeneratorDraft07`` of the modules ``fastjsonschema.draft04/06/07``,
  built as ``(definition, resolver=..., use_default=...)``, with the
  properties ``func_code`` (the generated module) and ``global_state`` (the
  namespace it runs in), the class attribute ``FORMAT_REGEXS`` (format name
  -> regular expression), and a ``generate_<keyword>`` method per keyword;
- while a keyword is generated: ``_definition`` (the schema object at hand),
  ``_use_default``, ``_variable`` (the Python name of the value checked) and
  ``_variable_name`` (its name in messages), ``l(line, *args, **kwargs)``
  (emit a line, or open a block as a context manager, ``{variable}`` and
  ``{name}`` substituted), ``e(text)`` (escape for a string literal),
  ``exc(message, *args, rule=...)`` (emit the raise of a
  `fastjsonschema.JsonSchemaValueException`), ``create_variable_is_dict()``
  (defines ``{variable}_is_dict`` once per scope) and
  ``generate_func_code_block(definition, variable, variable_name,
  clear_variables=...)``;
- ``fastjsonschema.ref_resolver.RefResolver.from_schema(schema, handlers=...,
  store=...)`` and its ``get_scope_name()``, the generated function's name.

No public way keeps the multipleOf rule, so nothing falls back:
`tests/wire/test_schema_internals.py` fails loudly, naming fastjsonschema and its
version, as soon as one of these no longer holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import fastjsonschema
from fastjsonschema.draft04 import CodeGeneratorDraft04
from fastjsonschema.draft06 import CodeGeneratorDraft06
from fastjsonschema.draft07 import CodeGeneratorDraft07
from fastjsonschema.ref_resolver import RefResolver

__all__ = ("DRAFTS", "IsMultiple", "compile_schema", "format_patterns")

#: ``multipleOf``'s rule: `is_multiple(value, step)`, true for a non-number.
IsMultiple = Callable[[Any, Any], bool]
Compiled = Callable[[Any], Any]

#: A tag of ``$schema`` -> fastjsonschema's generator for that draft (else draft-07).
DRAFTS: Final[Mapping[str, type[Any]]] = {
    "draft-04": CodeGeneratorDraft04,
    "draft-06": CodeGeneratorDraft06,
    "draft-07": CodeGeneratorDraft07,
}
_IS_MULTIPLE: Final = "_is_multiple"  # its name in the generated code


def _draft(schema: Mapping[str, Any]) -> type[Any]:
    version = str(schema.get("$schema", ""))
    return next((cls for tag, cls in DRAFTS.items() if tag in version), CodeGeneratorDraft07)


def format_patterns(schema: Mapping[str, Any]) -> Mapping[str, str]:
    """Format name -> the regular expression fastjsonschema checks it with, in
    `schema`'s draft."""
    patterns: Mapping[str, str] = _draft(schema).FORMAT_REGEXS
    return patterns


def compile_schema(
    schema: dict[str, Any], is_multiple: IsMultiple, *, lean: bool = True
) -> Compiled:
    """`fastjsonschema.compile(schema, use_default=False)` (schema defaults are
    never written into the payload) with ``multipleOf`` decided by
    `is_multiple` and, when `lean`, the allocation-free object keywords.
    ``lean=False`` keeps fastjsonschema's own code for those: the reference the
    tests hold the lean code to. Raises `fastjsonschema.JsonSchemaDefinitionException`
    for an invalid schema."""
    resolver = RefResolver.from_schema(schema, handlers={}, store={})
    generator = _generator_class(_draft(schema), is_multiple, lean)(
        schema, resolver=resolver, use_default=False
    )
    namespace: dict[str, Any] = generator.global_state
    exec(generator.func_code, namespace)
    compiled: Compiled = namespace[resolver.get_scope_name()]
    return compiled


def _generate_multiple_of(generator: Any) -> None:
    step = generator._definition["multipleOf"]
    if not isinstance(step, (int, float, Decimal)) or isinstance(step, bool) or step <= 0:
        raise fastjsonschema.JsonSchemaDefinitionException("multipleOf must be a number > 0")
    with generator.l(f"if not {_IS_MULTIPLE}({{variable}}, {{step}}):", step=repr(step)):
        generator.exc("{name} must be multiple of {multipleOf}", rule="multipleOf")


_Generate = Callable[[Any], None]  # a fastjsonschema generate_<keyword> method

# fastjsonschema's object keywords build sets on every call (``set(required) -
# data.keys()``, ``set(data.keys())`` minus each known property); for the closed
# objects of the OCA schemas (no patternProperties, additionalProperties false or
# absent) these generate the same checks without allocating on success. Failures
# fall through to fastjsonschema's own code, so errors are unchanged.


def _plain_object(generator: Any) -> bool:
    """Whether the current definition is an object whose keys `properties` alone
    decides: no patternProperties, additionalProperties absent, true, {} or false."""
    definition = generator._definition
    extra = definition.get("additionalProperties", True)
    return (
        not generator._use_default
        and "patternProperties" not in definition
        and (extra is True or extra is False or extra == {})
        and isinstance(definition.get("properties", {}), dict)
    )


def _never_object(definition: Mapping[str, Any]) -> bool:
    """Whether `type` rules out an object before object keywords are checked."""
    kind = definition.get("type")
    kinds = [kind] if isinstance(kind, str) else kind
    return isinstance(kinds, list) and bool(kinds) and "object" not in kinds


def _generate_required(generator: Any, base: _Generate) -> None:
    required = generator._definition["required"]
    if not (
        isinstance(required, (list, tuple))
        and required
        and all(isinstance(key, str) for key in required)
    ):
        base(generator)  # fastjsonschema's checks of the definition and its code
        return
    generator.create_variable_is_dict()
    present = " and ".join(f"{key!r} in {generator._variable}" for key in required)
    with generator.l("if {variable}_is_dict and not ({}):", present):
        base(generator)  # only reached when a key is missing: computes the error


def _generate_properties(generator: Any, base: _Generate) -> None:
    properties = generator._definition["properties"]
    if not _plain_object(generator) or not all(
        isinstance(key, str) and isinstance(definition, (dict, bool))
        for key, definition in properties.items()
    ):
        base(generator)  # fastjsonschema's code, or its definition error
        return
    if not properties:
        return  # nothing to check (an empty block would not compile)
    generator.create_variable_is_dict()
    with generator.l("if {variable}_is_dict:"):
        for key, definition in properties.items():
            key_name = re.sub(r"($[^a-zA-Z]|[^a-zA-Z0-9])", "", key)
            with generator.l("if {} in {variable}:", repr(key)):
                generator.l("{variable}__{} = {variable}[{}]", key_name, repr(key))
                generator.generate_func_code_block(
                    definition,
                    f"{generator._variable}__{key_name}",
                    "{}.{}".format(
                        generator._variable_name,
                        generator.e(key).replace("{", "{{").replace("}", "}}"),
                    ),
                    clear_variables=True,
                )


def _generate_additional_properties(generator: Any, base: _Generate) -> None:
    if not _plain_object(generator):
        base(generator)
        return
    if generator._definition["additionalProperties"] is not False:
        return  # any other key is allowed: nothing to check
    if _never_object(generator._definition):
        return  # e.g. the 1.6 schemas' string enums: the type check already ran
    known = frozenset(generator._definition.get("properties", {}))
    generator.create_variable_is_dict()
    with generator.l("if {variable}_is_dict:"):
        # `not in {...}` compiles to a frozenset constant: no set built per call
        # (and for the few keys of an OCPP object, a loop beats keys() <= set).
        variable = generator._variable
        extra = f"{variable}_key not in {set(known)!r}" if known else "True"
        with generator.l("for {variable}_key in {variable}:"):
            with generator.l("if {}:", extra):
                generator.l("{variable}_keys = set({variable}.keys()) - {}", repr(known))
                generator.exc(
                    '{name} must not contain "+str({variable}_keys)+" properties',
                    rule="additionalProperties",
                )


def _generate_enum(generator: Any, base: _Generate) -> None:
    enum = generator._definition["enum"]
    if not (isinstance(enum, (list, tuple)) and enum and all(type(v) is str for v in enum)):
        base(generator)
        return
    # One set lookup (a frozenset constant) instead of fastjsonschema's chain of
    # `isinstance(x, str) and x == ...` per value: OCPP enums have up to ~80.
    with generator.l("if not (isinstance({variable}, str) and {variable} in {}):", set(enum)):
        generator.exc("{name} must be one of {}", generator.e(enum), rule="enum")


def _override(name: str, generate: Callable[[Any, _Generate], None], base: type[Any]) -> _Generate:
    """A generate_<keyword> method: `generate` given the generator and `base`'s own."""
    inherited: _Generate = getattr(base, name)
    return lambda generator: generate(generator, inherited)


_CLASSES: dict[tuple[type[Any], IsMultiple, bool], type[Any]] = {}


def _generator_class(base: type[Any], is_multiple: IsMultiple, lean: bool) -> type[Any]:
    """`base` (a fastjsonschema code generator) with our multipleOf and, when
    `lean`, the allocation-free object keywords (one class per combination)."""
    key = (base, is_multiple, lean)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = _CLASSES.setdefault(key, _extend(base, is_multiple, lean))
    return cls


def _extend(base: type[Any], is_multiple: IsMultiple, lean: bool) -> type[Any]:
    state = base.global_state.fget
    methods: dict[str, Any] = {
        "generate_multiple_of": _generate_multiple_of,
        "global_state": property(lambda gen: {**state(gen), _IS_MULTIPLE: is_multiple}),
    }
    if lean:
        methods.update(
            generate_enum=_override("generate_enum", _generate_enum, base),
            generate_required=_override("generate_required", _generate_required, base),
            generate_properties=_override("generate_properties", _generate_properties, base),
            generate_additional_properties=_override(
                "generate_additional_properties", _generate_additional_properties, base
            ),
        )
    return type(f"_Tolerant{base.__name__}", (base,), methods)
