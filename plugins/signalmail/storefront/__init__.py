"""`signalmail storefront`: a small shop wired to RudderStack's JavaScript SDK and the collector.

Catalogue, product pages, search, cart and checkout, served from the simulator's catalogue: a
person clicks through it and then watches their own emails arrive in the sandbox. The SDK is
RudderStack's own browser build (`@rudderstack/analytics-js`, MIT, shipped in `static/` with
its licence); the source configuration it would fetch from RudderStack's control plane is given
inline, so nothing leaves the machine.
"""
