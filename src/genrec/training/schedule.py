"""Learning-rate schedules: the factor ``LambdaLR`` multiplies the peak rate by at each optimizer step.

``linear``: one warm-up, then a linear decay to zero at the last step (transformers' linear
schedule with warm-up). ``restarts``: every epoch its own warm-up and linear decay to zero, the
peak multiplied by ``restart_decay`` at each new epoch. The second is the schedule of the best
CPU recipe on MovieLens (eval/notes/2026-12-03-movielens-epochs-and-the-hour.md): an epoch at 3e-4, then one at 1.5e-4 and one at
7.5e-5, each trained as a run of its own; a run with ``restarts`` keeps its optimizer's moments
across epochs, which the chain of runs did not. As one run, two epochs over each user's three
most recent windows are the MovieLens recipe that fits about an hour.
"""

from __future__ import annotations

from ..errors import DataError

__all__ = ["SCHEDULES", "check_schedule", "lr_factor"]

SCHEDULES = ("linear", "restarts")


def check_schedule(schedule: str, restart_decay: float) -> None:
    if schedule not in SCHEDULES:
        raise DataError(f"unknown learning-rate schedule {schedule!r} (have: {', '.join(SCHEDULES)})")
    if not 0 < restart_decay <= 1:  # `not` also refuses NaN
        raise DataError(f"restart_decay must be in (0, 1], got {restart_decay}")


def lr_factor(
    step: int,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_ratio: float,
    schedule: str = "linear",
    restart_decay: float = 0.5,
) -> float:
    """The share of the peak learning rate at optimizer step ``step`` (0-based)."""
    if schedule == "linear":
        start, length, peak = 0, total_steps, 1.0
    else:
        cycle = step // steps_per_epoch
        start = cycle * steps_per_epoch
        # a fractional last epoch is a shorter cycle that still decays to zero at the last step
        length = max(0, min(steps_per_epoch, total_steps - start))
        peak = restart_decay**cycle
    warmup = int(warmup_ratio * length)
    s = step - start
    if s < warmup:
        return peak * (s + 1) / warmup
    return peak * max(0.0, (length - s) / max(1, length - warmup))
