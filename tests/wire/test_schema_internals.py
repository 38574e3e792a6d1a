"""What `ocpp_rpc/_wire/_internals.py` relies on in fastjsonschema beyond its
public API. Each failure names fastjsonschema and its version: a new release
changed its code generator, and `_internals` must follow it."""

from __future__ import annotations

import inspect
from typing import Any

import fastjsonschema
import pytest
from fastjsonschema.ref_resolver import RefResolver

from ocpp_rpc._wire import _internals

WHO = f"fastjsonschema {fastjsonschema.VERSION}"


def changed(what: str) -> str:
    return f"{WHO} changed: {what} (ocpp_rpc/_wire/_internals.py relies on it)"


DRAFTS = pytest.mark.parametrize(
    "generator", list(_internals.DRAFTS.values()), ids=list(_internals.DRAFTS)
)
KEYWORDS = (
    "generate_multiple_of",
    "generate_enum",
    "generate_required",
    "generate_properties",
    "generate_additional_properties",
)


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@DRAFTS
def test_the_draft_generators_have_what_we_extend(generator: type[Any]) -> None:
    for name in (*KEYWORDS, "l", "e", "exc", "create_variable_is_dict",
                 "generate_func_code_block"):
        assert callable(getattr(generator, name, None)), changed(f"{generator.__name__}.{name}")
    for name in ("func_code", "global_state"):
        assert isinstance(inspect.getattr_static(generator, name, None), property), changed(
            f"{generator.__name__}.{name} is no longer a property"
        )
    init = _parameters(generator.__init__)
    assert init[:2] == ["self", "definition"], changed(f"{generator.__name__}(definition, ...)")
    assert {"resolver", "use_default"} <= set(init), changed(
        f"{generator.__name__}(resolver=..., use_default=...)"
    )
    assert _parameters(generator.generate_func_code_block)[1:5] == [
        "definition", "variable", "variable_name", "clear_variables"
    ], changed("generate_func_code_block(definition, variable, variable_name, clear_variables)")
    assert "rule" in _parameters(generator.exc), changed("exc(..., rule=...)")
    patterns = generator.FORMAT_REGEXS
    assert isinstance(patterns, dict) and "date-time" in patterns, changed("FORMAT_REGEXS")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in patterns.items()), (
        changed("FORMAT_REGEXS maps format names to regular expressions")
    )


def test_ref_resolver() -> None:
    schema = {"type": "object"}
    resolver = RefResolver.from_schema(schema, handlers={}, store={})
    assert isinstance(resolver.get_scope_name(), str), changed("RefResolver.get_scope_name()")


@DRAFTS
def test_what_a_keyword_sees_while_it_is_generated(generator: type[Any]) -> None:
    seen: list[tuple[Any, ...]] = []

    class Probe(generator):  # type: ignore[misc, valid-type]
        def generate_required(self) -> None:
            seen.append((self._definition, self._use_default, self._variable,
                         self._variable_name))
            self.create_variable_is_dict()
            super().generate_required()

    inner = {"type": "object", "required": ["b"]}
    schema = {"type": "object", "required": ["a"], "properties": {"a": inner}}
    resolver = RefResolver.from_schema(schema, handlers={}, store={})
    probe = Probe(schema, resolver=resolver, use_default=False)
    code = probe.func_code
    namespace = probe.global_state
    exec(code, namespace)
    assert callable(namespace[resolver.get_scope_name()]), changed("the generated function's name")
    (top, use_default, variable, name), (nested, _, inner_variable, inner_name) = seen
    assert top == schema and nested == inner, changed("_definition: the schema object at hand")
    assert use_default is False, changed("_use_default")
    assert variable.isidentifier() and inner_variable.isidentifier(), changed("_variable")
    assert (name, inner_name) == ("data", "data.a"), changed("_variable_name")
    assert f"{variable}_is_dict = isinstance({variable}, dict)" in code, changed(
        "create_variable_is_dict() defines {variable}_is_dict"
    )


SCHEMAS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "object", "required": ["a", "b"], "additionalProperties": False,
      "properties": {"a": {"type": "integer"}, "b": {}}},
     [{"a": 1, "b": 2}, {"a": 1}, {"a": "1", "b": 2}, {"a": 1, "b": 2, "c": 3}, [], None]),
    ({"enum": ["A", "B"]}, ["A", "C", 1, None]),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
      "properties": {"t": {"type": "string", "format": "date-time"}}},
     [{"t": "2024-01-01T00:00:00Z"}, {"t": "yesterday"}]),
    ({"$schema": "http://json-schema.org/draft-06/schema#", "type": "array",
      "items": {"type": "object", "properties": {"x": {"const": 1}}}, "maxItems": 2},
     [[{"x": 1}], [{"x": 2}], [{}, {}, {}]]),
]


def _verdict(validate: Any, payload: Any) -> tuple[str, str, str] | None:
    try:
        validate(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        return (exc.rule or "", exc.name or "", exc.message)
    return None


def _tolerant(value: Any, step: Any) -> bool:
    return abs(round(value / step) - value / step) < 1e-6


@pytest.mark.parametrize(("schema", "payloads"), SCHEMAS)
def test_our_generators_judge_as_fastjsonschema_compile_does(
    schema: dict[str, Any], payloads: list[Any]
) -> None:
    public = fastjsonschema.compile(schema, use_default=False)
    for lean in (False, True):
        ours = _internals.compile_schema(dict(schema), _tolerant, lean=lean)
        for payload in payloads:
            assert _verdict(ours, payload) == _verdict(public, payload), changed(
                f"the generated code's verdict on {payload!r} against {schema}"
            )


def test_multiple_of_is_ours() -> None:
    validate = _internals.compile_schema({"multipleOf": 0.1}, _tolerant)
    validate(1.1 + 2.2)  # 3.3000000000000003, which fastjsonschema.compile refuses
    with pytest.raises(fastjsonschema.JsonSchemaValueException) as failure:
        validate(9.15)
    assert failure.value.rule == "multipleOf"
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fastjsonschema.compile({"multipleOf": 0.1})(1.1 + 2.2)
