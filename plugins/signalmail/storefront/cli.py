"""`signalmail storefront`: serve the demo shop (see the package docstring)."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SIGNALMAIL_SHOP_HOST")
@click.option("--port", default=8090, show_default=True, type=int, envvar="SIGNALMAIL_SHOP_PORT")
@click.option(
    "--data-plane-url",
    envvar="SIGNALMAIL_DATA_PLANE_URL",
    required=True,
    help="The collector's URL as the browser reaches it [env SIGNALMAIL_DATA_PLANE_URL].",
)
@click.option(
    "--write-key",
    envvar="SIGNALMAIL_WRITE_KEY",
    required=True,
    help="The source's write key; browser write keys are public [env SIGNALMAIL_WRITE_KEY].",
)
@click.option("--catalog-seed", default=42, show_default=True, type=int,
              help="The simulator's catalogue to sell (the same seed as `simulate`).")  # fmt: skip
@click.option("--heartbeat-seconds", default=30.0, show_default=True,
              type=click.FloatRange(min=1.0),
              help="Time on content: one `Page Engaged` ping per this much.")  # fmt: skip
def storefront(
    host: str,
    port: int,
    data_plane_url: str,
    write_key: str,
    catalog_seed: int,
    heartbeat_seconds: float,
) -> None:
    """Serve a small shop whose every click goes to the collector through RudderStack's SDK."""
    import uvicorn

    from signalmail.storefront.app import ShopSettings, create_app

    app = create_app(
        ShopSettings(
            data_plane_url.rstrip("/"),
            write_key,
            catalog_seed,
            heartbeat_seconds=heartbeat_seconds,
        )
    )
    click.echo(f"storefront: http://{host}:{port}/ -> events to {data_plane_url}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
