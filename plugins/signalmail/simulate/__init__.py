"""A synthetic storefront: catalog, shoppers and sessions that emit RudderStack e-commerce events.

`iter_events` (in `model`) is the generator API other benches use to build large spools without
the network; `signalmail simulate` drives the real rudder-sdk-python client with the same stream.
"""

from __future__ import annotations

from signalmail.simulate.model import Simulation, SimulationConfig, iter_events

__all__ = ["Simulation", "SimulationConfig", "iter_events"]
