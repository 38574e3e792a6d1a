"""The handler registry shared by clients and servers, and the `Call` value."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

if TYPE_CHECKING:
    from .client import RPCClient


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


#: Return this from a handler to send no answer at all.
NOREPLY: Final[Any] = _NoReply()


@dataclass(frozen=True, slots=True)
class Call:
    """One inbound call, as a handler receives it."""

    method: str
    params: Any
    message_id: str
    protocol: str | None
    client: RPCClient


Handler = Callable[[Call], Any | Awaitable[Any]]
H = TypeVar("H", bound=Handler)


class Handlers:
    """Handlers by method name plus an optional wildcard."""

    __slots__ = ("_by_method", "_wildcard")

    def __init__(self) -> None:
        self._by_method: dict[str, Handler] = {}
        self._wildcard: Handler | None = None

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
        """The handler for `method`: its own, else the wildcard, else None."""
        return self._by_method.get(method) or self._wildcard

    def find_own(self, method: str) -> Handler | None:
        """The handler registered for exactly `method`, if any."""
        return self._by_method.get(method)

    @property
    def wildcard(self) -> Handler | None:
        return self._wildcard
