"""tap_warehouse."""
