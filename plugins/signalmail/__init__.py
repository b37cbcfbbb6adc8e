"""signalmail operator CLI: collector, simulator, replay, Mandrill sandbox, templates, demo."""

__version__ = "0.1.0"
