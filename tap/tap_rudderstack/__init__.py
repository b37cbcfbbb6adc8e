"""tap_rudderstack."""
