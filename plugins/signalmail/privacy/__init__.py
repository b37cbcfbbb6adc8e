"""Privacy: erase a person everywhere (`signalmail forget`) and keep raw events only so long.

Public names: `forget` and `ForgetReport` (one person), `apply_retention` and
`RetentionReport` (old raw events).
"""

from signalmail.privacy.forget import ForgetReport, forget
from signalmail.privacy.retention import RetentionReport, apply_retention

__all__ = ["ForgetReport", "RetentionReport", "apply_retention", "forget"]
