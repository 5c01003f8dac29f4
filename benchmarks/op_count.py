"""Operations a call dispatches: a ``TorchDispatchMode`` that counts them.

At small shapes on the CPU the cost of a call is mostly the fixed cost of each
operation it dispatches (a few microseconds for an elementwise op on 100
floats), so the count, not the arithmetic, predicts the time. Every ATen
operation that reaches the dispatcher below autograd counts once, views
included; composite operations count as the operations they decompose into.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while it is active, by name."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(fn: Callable[[], object]) -> OpCounter:
    """Run ``fn`` once and return the operations it dispatched."""
    counter = OpCounter()
    with counter:
        fn()
    return counter
