"""`signalmail watch`: the real-time loop (capture, signals, activate) in one process."""

from signalmail.watch.dbt import DbtFailed, WarmDbt
from signalmail.watch.settings import WatchSettings, from_environment

__all__ = ["DbtFailed", "WarmDbt", "WatchSettings", "from_environment"]
