"""signalmail operator CLI: collector, simulator, replay, Mandrill sandbox, template tooling, demo."""

__version__ = "0.1.0"
