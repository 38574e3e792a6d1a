"""`DurableQueue`: a client's durable calls, kept in a `DurableStore` and sent
one at a time, in order, by one sender task.

The retry rule is OCPP's for transaction messages (1.6 §3.7.1
TransactionMessageAttempts / TransactionMessageRetryInterval; 2.0.1 E13/E14
MessageAttemptsTransactionEvent / MessageAttemptIntervalTransactionEvent): a
call the CSMS answers with a CALLERROR is sent `attempts` times in all,
waiting ``interval * previous attempts`` before each resend, then dropped and
reported. A call whose connection drops, or that gets no answer in time, is
not an attempt: it stays first in the queue. After a timeout its send
still awaits the answer, however late, which settles the call; it goes out
again only on the next connection, as after a drop: a CSMS busy with the
first send could refuse a second (our server and ocpp-rpc's answer a CALL
they are still handling, or one past their limit, with a CALLERROR), and a
slow CSMS must not make a charger drop a transaction message. Nor is what
the client's strict mode refuses (the call's params, or the CSMS's result):
no resend could change it, so the call leaves the store at once with that
error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from ..durable import DurableStore, StoredCall, StoreError
from ..errors import ConnectionClosed, RPCError
from .events import DurableResultEvent
from .strict import StrictRefusal

logger = logging.getLogger("ocpp_rpc.durable")

#: Seconds the sender waits before using a store that failed (disk full, I/O error) again.
STORE_RETRY_DELAY: Final = 5.0

#: Waits until the client is OPEN and the time is `not_before` (the retry
#: interval), and returns its connection (as a token the queue only compares),
#: skipping `dropped`, the connection that just dropped a call; with `answer`
#: (the call's send went unanswered), on the connection it went on only once
#: that send is answered. Raises ConnectionClosed as soon as the client is
#: closing for good.
WaitOpen = Callable[[object | None, float, bool], Awaitable[object]]
#: Sends one attempt of a call through the client's normal call path and returns
#: the answer to it (or to its send that timed out on the same connection);
#: raises `StrictRefusal` for what strict mode refuses (not an attempt),
#: TimeoutError after `call_timeout` (the send still awaits its answer).
SendCall = Callable[[StoredCall], Awaitable[Any]]
#: Checks a new call (message id, method, params) before it is stored: raises
#: the `RPCError` of params strict mode refuses.
CheckCall = Callable[[str, str, Any], None]


class _Waiter:
    """The outcome of one durable call, for the task that made it."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


class DurableQueue:
    """Durable calls of one client: `call` stores and waits, `run` sends.

    `run` is a task in the client's task group; it ends when the client
    closes for good (`wait_open` raises ConnectionClosed) or is stopped.
    Calls stay in the store either way: the next ``async with`` sends them.
    """

    def __init__(
        self,
        store: DurableStore,
        *,
        wait_open: WaitOpen,
        send: SendCall,
        check: CheckCall,
        closed_error: Callable[[], ConnectionClosed],
        emit: Callable[[DurableResultEvent], None],
    ) -> None:
        self._store = store
        self._wait_open = wait_open
        self._send = send
        self._check = check
        self._closed_error = closed_error
        self._emit = emit
        self._waiters: dict[str, _Waiter] = {}
        self._wakeup = anyio.Event()
        self._scope = anyio.CancelScope()
        self._stopped = False
        self._failure: Exception | None = None  # why the sender stopped, if not a close
        # The message id of the first call while its send awaits an answer
        # past `call_timeout`.
        self._unanswered: str | None = None

    # -- callers -----------------------------------------------------------------

    async def call(self, method: str, params: Any, timeout: float | None) -> Any:
        """Store the call, then wait (up to `timeout`) for its outcome.

        The call is kept once stored, whatever happens to this task. Raises
        the `RPCError` of params strict mode refuses (nothing stored),
        `StoreFull`, the `RPCError` of the last attempt when dropped (or of
        strict mode, which refuses the call or its result: never resent),
        TimeoutError, or ConnectionClosed when the client closes first.
        """
        if self._stopped:
            raise self._stopped_error()
        message_id = str(uuid.uuid4())  # 36 characters, OCPP-J's limit
        self._check(message_id, method, params)
        waiter = self._waiters[message_id] = _Waiter()  # before the sender can see the call
        try:
            await self._store.append(message_id, method, params)
            self._wakeup.set()
            if self._stopped and not waiter.done.is_set():
                raise self._stopped_error()
            with anyio.fail_after(timeout):
                await waiter.done.wait()
        finally:
            del self._waiters[message_id]
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def stop(self) -> None:
        """End `run` (the client's block is ending)."""
        self._scope.cancel()

    # -- the sender ------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send the stored calls, oldest first, until the client closes."""
        with self._scope:
            task_status.started()
            try:
                await self._deliver()
            except ConnectionClosed:
                pass
            except Exception as exc:  # safety net: never raised into the user's `async with`
                logger.exception("durable calls: the sender failed; none is sent until restart")
                self._failure = RuntimeError(f"durable calls stopped: {exc!r}")
            finally:
                self._stopped = True
                if self._waiters:
                    error = self._stopped_error()
                    for waiter in self._waiters.values():
                        waiter.settle(error=error)

    def _stopped_error(self) -> Exception:
        return self._failure if self._failure is not None else self._closed_error()

    async def _deliver(self) -> None:
        dropped: object | None = None
        while True:
            try:
                dropped = await self._deliver_first(dropped)
            except StoreError:
                # The disk failed (full, I/O error): nothing is lost, the loop
                # starts over from what the store really holds. A call
                # delivered but not removed is sent again (a duplicate).
                logger.exception("durable calls: the store failed; trying again")
                await anyio.sleep(STORE_RETRY_DELAY)

    async def _deliver_first(self, dropped: object | None) -> object | None:
        """One attempt of the oldest call (waits for one if the store is
        empty); returns the connection that dropped it, if one did."""
        self._wakeup = anyio.Event()  # before looking: an append from now on sets it
        call = await self._store.first()
        if call is None:
            await self._wakeup.wait()
            return dropped
        # The retry interval is waited out in `wait_open`, which a close ends
        # at once: the callers still waiting learn of it then, not when it is over.
        not_before = anyio.current_time() + self._store.interval * call.attempts
        answer = self._unanswered == call.message_id
        self._unanswered = None
        connection = await self._wait_open(dropped, not_before, answer)
        try:
            result = await self._send(call)
        except RPCError as error:
            await self._failed_attempt(call, error)
        except StrictRefusal as refusal:  # not a CALLERROR: a resend would be refused alike
            logger.warning("durable call %s (%s) failed strict mode: it leaves the store: %r",
                           call.message_id, call.method, refusal.error)
            await self._finish(call, error=refusal.error)
        except TimeoutError:  # the answer may yet come: it settles the call
            self._unanswered = call.message_id
            logger.info("durable call %s (%s) got no answer in time: it waits for the answer,"
                        " or goes out again on the next connection", call.message_id,
                        call.method)
        except ConnectionClosed:
            logger.info("durable call %s (%s): the connection dropped; it stays queued",
                        call.message_id, call.method)
            return connection
        except Exception as error:  # safety net: a failed attempt, not a crash of the client
            logger.exception("durable call %s (%s) failed", call.message_id, call.method)
            await self._failed_attempt(call, error)
        else:
            await self._finish(call, result=result)
        return None

    async def _failed_attempt(self, call: StoredCall, error: BaseException) -> None:
        if call.attempts + 1 >= self._store.attempts:
            logger.warning("durable call %s (%s) dropped after %d attempt(s): %r",
                           call.message_id, call.method, call.attempts + 1, error)
            await self._finish(call, error=error)
        else:
            await self._store.record_attempt(call.key)

    async def _finish(
        self, call: StoredCall, result: Any = None, error: BaseException | None = None
    ) -> None:
        """The call leaves the store; its caller (if still waiting) and the
        `durable_result` observers learn the outcome."""
        await self._store.remove(call.key)
        waiter = self._waiters.get(call.message_id)
        if waiter is not None:
            waiter.settle(result, error)
        self._emit(DurableResultEvent(call.message_id, call.method, call.params, result, error))
