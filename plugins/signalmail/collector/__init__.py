"""`signalmail collect`: a RudderStack-compatible data plane that writes a durable event spool.

The spool layout and the `SpoolWriter` interface (docs/contracts.md, section 1) live in
`signalmail.collector.spool`; the HTTP surface in `app`; request parsing and enrichment in
`ingest`; Mandrill webhooks in `webhooks`; the click command in `cli`.
"""

from __future__ import annotations
