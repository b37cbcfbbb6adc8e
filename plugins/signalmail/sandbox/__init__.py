"""`signalmail sandbox`: a Mandrill-compatible server for development, demos and tests."""
