"""Replay of public e-commerce clickstreams (REES46, Retailrocket) as RudderStack events."""
