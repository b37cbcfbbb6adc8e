"""tap-rudderstack: RudderStack object-storage dumps (local folder or S3) as Singer streams."""

from tap_rudderstack.tap import TapRudderStack

__all__ = ["TapRudderStack"]
