"""The base class of every exception vbw defines, and the one rule for `retriable`.

Every project exception derives from `VbwError`, and also from the builtin its callers already
catch (`class SecretError(VbwError, ValueError)`), so no `except ValueError` changes meaning.

`retriable` answers one question for whoever handles the error (a start-up loop, a supervisor,
an exit code): may the same operation succeed if it is simply tried again later, with the same
config, inputs and files?

- True: the cause is outside vbw and may pass by itself, or the caller has a documented way
  to carry on: a broker or connection problem, a partition reset that the caller recovers from
  (OffsetRegression), a training run stopped on request that resumes from its saved state.
- False (the default): a person must change something first: the config, a secret, the model
  directory, the installed packages, the hardware. Retrying only repeats the failure, so fail
  fast with the message.

A class sets the flag for what it usually means; `raise X(msg, retriable=True)` overrides it
for one instance where the cause decides (a start-up error caused by an unreachable broker).
`is_retriable` reads the flag of any exception, using the same attribute kafka-python's
`KafkaError` has, so a wrapped Kafka error passes its answer on.
"""

from __future__ import annotations


class VbwError(Exception):
    """Base of every exception vbw defines. The message says what failed, with its context."""

    retriable: bool = False  # per class; an instance may override it

    def __init__(self, *args: object, retriable: bool | None = None):
        super().__init__(*args)
        if retriable is not None:
            self.retriable = retriable


def is_retriable(exc: BaseException) -> bool:
    """`exc.retriable` where it has one (VbwError, kafka-python's KafkaError); otherwise True
    only for connection errors and timeouts, which pass by themselves."""
    flag = getattr(exc, "retriable", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(exc, ConnectionError | TimeoutError)
