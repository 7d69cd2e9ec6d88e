"""Custody exceptions and time out of storage: the site's thresholds (``[exceptions]``).

What is judged, and when, is described in agent/custody/exceptions.py and agent/custody/exposure.py;
here are only the numbers a site chooses.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ExceptionsConfig"]


class ExceptionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expiry_horizon_days: int = Field(default=30, ge=0, le=3650)
    """A lot scanned at receiving or put-away that expires (AI 17) within this many days raises
    a warning; one already expired raises an alarm. 0: only expired lots."""
    tos_warn_share: float = Field(default=0.8, gt=0, le=1)
    """Share of a product's time-out-of-storage allowance at which a lot raises a warning."""
    tos_alarm_share: float = Field(default=1.0, gt=0, le=10)
    """Share at which it raises an alarm (1.0: the allowance is used up)."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.tos_warn_share >= self.tos_alarm_share:
            raise ValueError(
                f"tos_warn_share ({self.tos_warn_share}) must be below tos_alarm_share "
                f"({self.tos_alarm_share})"
            )
        return self
