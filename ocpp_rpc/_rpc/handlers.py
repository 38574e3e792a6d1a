"""The handler registry shared by clients and servers, and the `Call` value."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import FrozenInstanceError, dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, overload

from .events import CloseResult, Observer, State


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


#: Return this from a handler to send no answer at all.
NOREPLY: Final[Any] = _NoReply()


class RPCEndpoint(Protocol):
    """What `Call.client` is: the endpoint the call arrived on, an `RPCClient`
    (on the server, the caller's `ServerClient`), with its public API."""

    @property
    def identity(self) -> str: ...
    @property
    def protocol(self) -> str | None: ...
    @property
    def state(self) -> State: ...

    async def call(
        self, method: str, params: Any = None, *, timeout: float | None = None,
        no_reply: bool = False,
    ) -> Any: ...
    async def send(self, method: str, params: Any = None) -> None: ...
    async def send_raw(self, text: str | bytes) -> None: ...
    async def close(
        self, *, code: int = 1000, reason: str = "", await_pending: bool = False,
        force: bool = False,
    ) -> CloseResult: ...
    async def wait_closed(self) -> CloseResult: ...
    def handle(self, method: str | Handler, handler: Handler | None = None, /) -> None: ...
    def handler(self, method: str | None = None) -> Callable[[H], H]: ...
    def remove_handler(self, method: str | None = None) -> None: ...
    def remove_all_handlers(self) -> None: ...
    def on(self, event: str, callback: Observer) -> None: ...
    def off(self, event: str, callback: Observer) -> None: ...
    def reconfigure(self, **options: Any) -> None: ...


if TYPE_CHECKING:
    # A bare `Call` means `Call[Any]` (PEP 696 default), so that annotations
    # written before `Call` was generic stay valid under `mypy --strict`.
    # typing.TypeVar takes `default` only from 3.13; nothing reads it at run time.
    from typing_extensions import TypeVar as _DefaultTypeVar

    P = _DefaultTypeVar("P", default=Any)
else:
    P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Call(Generic[P]):
    """One inbound call, as a handler receives it; `Call[P]`: its params are a
    `P` (`Call[v201.BootNotificationRequest]`), a bare `Call` takes any."""

    method: str
    params: P
    message_id: str
    protocol: str | None
    client: RPCEndpoint


if sys.version_info < (3, 13):
    # `Call[X](...)` sets `__orig_class__` and lets AttributeError pass; before
    # 3.13 a frozen slots dataclass answers with TypeError (its generated
    # `__setattr__` names the class that `slots=True` replaced), so it failed.
    def _frozen_setattr(self: Call[Any], name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    Call.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]


_SETTERS = tuple(
    getattr(Call, name).__set__ for name in ("method", "params", "message_id", "protocol", "client")
)


def make_call(
    method: str, params: Any, message_id: str, protocol: str | None, client: RPCEndpoint
) -> Call[Any]:
    """`Call(...)`, at half the cost: a frozen dataclass's __init__ sets each
    field through object.__setattr__; its slots' own setters are cheaper."""
    call: Call[Any] = object.__new__(Call)
    set_method, set_params, set_id, set_protocol, set_client = _SETTERS
    set_method(call, method)
    set_params(call, params)
    set_id(call, message_id)
    set_protocol(call, protocol)
    set_client(call, client)
    return call


Handler = Callable[[Call[Any]], Any | Awaitable[Any]]
H = TypeVar("H", bound=Handler)
#: How a connection finds the handler of a method (None: no handler).
HandlerLookup = Callable[[str], Handler | None]


class Handlers:
    """Handlers by method name plus an optional wildcard, and the registry
    asked when neither takes a method (a `ServerClient`'s: its server's)."""

    __slots__ = ("_by_method", "_fallback", "_wildcard")

    def __init__(self, fallback: Handlers | None = None) -> None:
        self._by_method: dict[str, Handler] = {}
        self._wildcard: Handler | None = None
        self._fallback = fallback

    @overload
    def handle(self, method: str, handler: Handler, /) -> None: ...
    @overload
    def handle(self, handler: Handler, /) -> None: ...

    def handle(self, method: str | Handler, handler: Handler | None = None, /) -> None:
        """`handle(method, handler)` for one method; `handle(handler)` for every
        method without its own handler (the wildcard)."""
        if handler is None:
            if isinstance(method, str) or not callable(method):
                raise TypeError("handle(method, handler) or handle(handler)")
            self._wildcard = method
        elif isinstance(method, str):
            self._by_method[method] = handler
        else:
            raise TypeError("method must be a str")

    def handler(self, method: str | None = None) -> Callable[[H], H]:
        """Decorator form: `@x.handler("Method")`, or `@x.handler()` for the wildcard."""

        def register(func: H) -> H:
            if method is None:
                self.handle(func)
            else:
                self.handle(method, func)
            return func

        return register

    def remove_handler(self, method: str | None = None) -> None:
        """Remove the handler of `method` (None: the wildcard)."""
        if method is None:
            self._wildcard = None
        else:
            self._by_method.pop(method, None)

    def remove_all_handlers(self) -> None:
        """Remove every handler, the wildcard included."""
        self._by_method.clear()
        self._wildcard = None

    def find(self, method: str) -> Handler | None:
        """The handler for `method`: its own, else the wildcard, else the
        fallback's, else None."""
        handler = self._by_method.get(method) or self._wildcard
        if handler is None and self._fallback is not None:
            return self._fallback.find(method)
        return handler

    #: A registry is itself a `HandlerLookup` (no bound method to keep per connection).
    __call__ = find

    def find_own(self, method: str) -> Handler | None:
        """The handler registered for exactly `method`, if any."""
        return self._by_method.get(method)

    @property
    def wildcard(self) -> Handler | None:
        return self._wildcard
