"""The Mandrill API's endpoint groups, one module per group of `/api/1.3/<group>/<call>.json`.

Each module's functions take the `Sandbox` (its state: store, config, clock, dispatcher) and the
request body, already authenticated and checked against the OpenAPI schema by `Sandbox.call`,
and return the JSON answer or raise `MandrillError`. Each ends with `OPERATIONS`, the calls it
serves; `Sandbox` builds its dispatch table from them.

- `sending`: messages/send, send-template, send-mc-template (with `send_checks`, what refuses
  a whole call, and `send_recipients`, each recipient's status, rendering and stored row)
- `messages`: messages/info, content, search
- `templates`: templates/add, update, info, list, publish, delete, render
- `mctemplates`: mctemplates/list, info, render (and seeding, as Mailchimp makes them)
- `rejects`: rejects/add, delete, list (the denylist)
- `webhooks`: webhooks/add, list
- `metadata`: metadata/add, list
- `users`: users/ping, ping2
"""
