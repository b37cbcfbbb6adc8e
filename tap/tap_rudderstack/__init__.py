"""tap-rudderstack: RudderStack object-storage dumps (local folder or S3) as Singer streams."""

from tap_rudderstack.spool import CorruptFile, iter_lines, segment_opened_at
from tap_rudderstack.tap import TapRudderStack

__all__ = ["CorruptFile", "TapRudderStack", "iter_lines", "segment_opened_at"]
