"""Guards of a training run: a loss that diverges without becoming NaN, and a run stopped by Ctrl-C.

:class:`DivergenceGuard` watches the logged mean losses: a loss more than ``factor`` times the
running median of the earlier ones (the median floored at ``floor``, so a loss that has fallen close
to zero may still wobble), for ``patience`` log intervals in a row, stops the run with
:class:`DivergenceError`. While the loss is out of range no checkpoint is written, so the checkpoint
on disk is the last one written while training was healthy.
"""

from __future__ import annotations

import statistics
from collections import deque

__all__ = ["DivergenceError", "DivergenceGuard", "TrainingInterrupted"]


class DivergenceError(FloatingPointError):
    """The loss stayed far above its running median; the message names the step and the checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says at which step and how to resume."""


class DivergenceGuard:
    """Flags logged losses above ``factor * max(median, floor)`` of the last ``window`` healthy ones;
    ``patience`` flags in a row mean divergence. Judges only after ``min_history`` healthy losses."""

    def __init__(
        self, factor: float = 100.0, patience: int = 3, window: int = 100, min_history: int = 3, floor: float = 0.01
    ):
        self.factor, self.patience, self.min_history, self.floor = factor, patience, min_history, floor
        self.history: deque[float] = deque(maxlen=window)
        self.strikes = 0
        self.median = float("nan")

    @property
    def suspect(self) -> bool:
        """True while the latest logged loss is out of range (checkpoints wait)."""
        return self.strikes > 0

    def update(self, step: int, loss: float) -> str | None:
        """Record the mean loss logged at ``step``; returns a description once the run has diverged."""
        if len(self.history) >= self.min_history:
            self.median = statistics.median(self.history)
            if loss > self.factor * max(self.median, self.floor):
                self.strikes += 1
                if self.strikes >= self.patience:
                    return (
                        f"the loss diverged: {loss:.3g} at step {step}, more than {self.factor:g} times its "
                        f"running median {self.median:.3g} for {self.patience} log intervals in a row"
                    )
                return None
        self.strikes = 0
        self.history.append(loss)
        return None
