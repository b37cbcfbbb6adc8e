"""tap-rudderstack: RudderStack object-storage dumps (local folder or S3) as Singer streams."""

from tap_rudderstack.spool import (
    DEFAULT_LOGS_FOLDER,
    CorruptFile,
    iter_lines,
    logs_folder_name,
    segment_opened_at,
)
from tap_rudderstack.sync import storage_options
from tap_rudderstack.tap import TapRudderStack

__all__ = [
    "DEFAULT_LOGS_FOLDER",
    "CorruptFile",
    "TapRudderStack",
    "iter_lines",
    "logs_folder_name",
    "segment_opened_at",
    "storage_options",
]
