"""Hostile client values: no build stops, each value set aside is reported, others get email.

A price of 1e16 or "1e309" or a quantity of 1e20 from one client, even an anonymous one, used
to overflow a decimal or integer cast and fail `email_triggers` for every user; a price of -5
failed a nightly data test. docs/signals.md ("Hostile values") now promises: staging reads a
price, quantity, order revenue or engaged time that is not a number or lies outside its
documented range as null (a quantity as 1), so the event still counts; `quarantined_values`
lists each such value with the reason; the nightly test `no_quarantined_values` warns with the
count and blocks nothing.

Raw rows are written with testkit, then the near-real-time tick (`--selector trigger_path`) on
the fresh warehouse and the full nightly build (every model, data test and unit test) run on
DuckDB and on PostgreSQL, whose `safe_to_double` is the project's own. Each hostile value comes
from a shopper of its own, anonymous or identified, about the product the ordinary shoppers are
recommended: one poisoned price must not reach their emails either.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "dbt_project"))

from testkit import raw_events, scenario
from testkit.harness import DbtFailed, Warehouse, run_dbt

pytestmark = pytest.mark.slow

NOW = scenario.NOW
AS_OF = {"as_of": scenario.AS_OF}
# The nightly build re-reads every raw row through staging's incremental path (the tick on the
# fresh warehouse took the full-refresh one): both must read the values alike.
NIGHTLY = AS_OF | {"lookback_minutes": 24 * 60}
VARS = yaml.safe_load((REPO_ROOT / "dbt_project" / "dbt_project.yml").read_text())["vars"]

CART_PRODUCT = "p-cart"  # what the ordinary shoppers leave in their carts, at 12.50
HOT_PRODUCT = "p-hot"  # what the hostile values are about, bought most: recommended to them
HOT_PRICE = 30.0  # every well-formed price of p-hot
ORDINARY = ("ok-ada", "ok-bo", "ok-cy")

NOT_A_NUMBER = "not a number"
BELOW_ZERO = "below 0"


def above(bound: str) -> str:
    """client_number_issue()'s reason for a value above a bound of dbt_project.yml."""
    return f"above {VARS[bound]} (or not finite)"


class JsonNumber(str):
    """A JSON number written verbatim into the raw JSON: json.dumps would write 1e-400 as 0.0."""


@dataclass(frozen=True)
class Hostile:
    """One client value; `reason` is what quarantined_values says, None when staging keeps it
    (as `kept`)."""

    field: str
    value: Any
    reason: str | None
    identified: bool = False
    kept: float | None = None


HOSTILE: tuple[Hostile, ...] = (
    Hostile("price", 1e16, above("max_price")),
    Hostile("price", "1e309", above("max_price")),
    Hostile("price", -5, BELOW_ZERO, identified=True),
    Hostile("price", "NaN", above("max_price")),
    Hostile("price", "Infinity", above("max_price"), identified=True),
    Hostile("price", "abc", NOT_A_NUMBER),
    Hostile("price", "", NOT_A_NUMBER, identified=True),
    # underflows double precision: 0, as IEEE 754 and DuckDB read it (a price in range)
    Hostile("price", JsonNumber("1e-400"), None, kept=0.0),
    Hostile("price", 10**299, above("max_price")),  # 300 digits
    Hostile("quantity", 1e20, above("max_quantity")),
    Hostile("quantity", 1e20, above("max_quantity"), identified=True),
    Hostile("quantity", -3, BELOW_ZERO, identified=True),
    Hostile("quantity", 2.5, None, identified=True, kept=2.5),
    Hostile("quantity", "1e309", above("max_quantity"), identified=True),
    Hostile("revenue", 1e30, above("max_order_revenue")),
    Hostile("revenue", "-1", BELOW_ZERO, identified=True),
    Hostile("engaged_seconds", 1e9, above("max_engaged_seconds_per_ping")),
    Hostile("engaged_seconds", -1, BELOW_ZERO, identified=True),
    Hostile("engaged_seconds", "x", NOT_A_NUMBER),
)
EVENT_OF = {
    "price": "Product Viewed",
    "quantity": "Product Added",
    "revenue": "Order Completed",
    "engaged_seconds": "Page Engaged",
}


def shopper(index: int) -> str:
    return f"h{index:02d}-{HOSTILE[index].field}"


# -- events --------------------------------------------------------------------------------


@dataclass
class Sent:
    """The raw events, and the message that carries each hostile value (by index)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    message_of: dict[int, str] = field(default_factory=dict)


def item(product_id: str, **values: Any) -> dict[str, Any]:
    """A products[] item of p-cart or p-hot (both shoes) at its price; `values` override."""
    price = HOT_PRICE if product_id == HOT_PRODUCT else 12.5
    return raw_events.product(product_id, price=price, category="Shoes") | values


def identify(f: raw_events.EventFactory, user: str, at: datetime) -> dict[str, Any]:
    """A consenting identify, traits in context.traits as rudder-sdk-python sends them."""
    traits = {"email": f"{user}@example.com", "first_name": user.title(), "email_opt_in": True}
    return f.identify(at, user, traits, anonymous_id=f"anon-{user}")


def ordinary_shopper(f: raw_events.EventFactory, user: str, at: datetime) -> list[dict]:
    """Views p-hot at its price, leaves two p-cart in a cart: a cart email is due."""
    ids = {"user_id": user, "anonymous_id": f"anon-{user}"}
    cart = {"cart_id": f"cart-{user}"}
    return [
        identify(f, user, at - timedelta(minutes=5)),
        f.track("Product Viewed", at - timedelta(minutes=2), item(HOT_PRODUCT), **ids),
        f.track("Product Viewed", at - timedelta(minutes=1), item(CART_PRODUCT), **ids),
        f.track("Product Added", at, item(CART_PRODUCT, quantity=2, **cart), **ids),
    ]


def carrying(f: raw_events.EventFactory, index: int, at: datetime) -> dict[str, Any]:
    """The event that carries HOSTILE[index], in the field it belongs to, about p-hot."""
    hostile, user = HOSTILE[index], shopper(index)
    ids = {"anonymous_id": f"anon-{user}", "user_id": user if hostile.identified else None}
    value = {hostile.field: hostile.value}
    if hostile.field == "price":
        properties = item(HOT_PRODUCT)
    elif hostile.field == "quantity":
        properties = item(HOT_PRODUCT, cart_id=f"cart-{user}")
    elif hostile.field == "revenue":
        properties = {"order_id": f"o-{user}", "currency": "EUR", "products": [item(HOT_PRODUCT)]}
    else:
        properties = {"page_view_id": f"pv-{user}", "product_id": HOT_PRODUCT}
    return f.track(EVENT_OF[hostile.field], at, properties | value, **ids)


def all_events() -> Sent:
    """Ordinary carts three hours old; each hostile value from its own shopper, later on."""
    f = raw_events.EventFactory(seed="quarantine")
    sent = Sent()
    for user in ORDINARY:
        sent.events.extend(ordinary_shopper(f, user, NOW - timedelta(hours=3)))
    for index, hostile in enumerate(HOSTILE):
        at = NOW - timedelta(hours=2) + timedelta(minutes=index)
        if hostile.identified:
            sent.events.append(identify(f, shopper(index), at - timedelta(minutes=1)))
        event = carrying(f, index, at)
        sent.message_of[index] = event["messageId"]
        sent.events.append(event)
    return sent


def sentinel(value: JsonNumber) -> str:
    return f"json-number:{value}"


def with_sentinels(value: Any) -> Any:
    """Each JsonNumber as a string that load_events writes and write_json_numbers finds."""
    if isinstance(value, JsonNumber):
        return sentinel(value)
    if isinstance(value, dict):
        return {key: with_sentinels(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_sentinels(item) for item in value]
    return value


def write_json_numbers(conn: Any, wh: Warehouse) -> None:
    """Turn each sentinel into the JSON number literal the client sent.

    PostgreSQL's jsonb keeps it as numeric (1e-400 reads back as 402 characters of digits),
    DuckDB's json as text: what either engine's loader would hold.
    """
    json_type = "jsonb" if wh.dialect == "postgres" else "json"
    for hostile in HOSTILE:
        if isinstance(hostile.value, JsonNumber):
            quoted = json.dumps(sentinel(hostile.value))
            conn.execute(
                f'update "{wh.raw_schema}".tracks set properties = cast(replace('
                f"cast(properties as varchar), '{quoted}', '{hostile.value}') as {json_type})"
            )


# -- warehouses ----------------------------------------------------------------------------


@dataclass
class Built:
    """A warehouse after the tick and the nightly build, and what each left behind."""

    warehouse: Warehouse
    sent: Sent
    tick_triggers: dict[tuple[str, str], dict[str, Any]]
    tick_results: dict[str, dict[str, Any]]
    nightly_triggers: dict[tuple[str, str], dict[str, Any]]
    nightly_results: dict[str, dict[str, Any]]
    nightly_error: str | None

    def rows(self, relation: str, where: str = "true") -> list[dict[str, Any]]:
        sql = f'select * from "{self.warehouse.schema}".{relation} where {where}'
        return query(self.warehouse, sql)


def connect(wh: Warehouse) -> Any:
    if wh.dialect == "postgres":
        import psycopg

        return psycopg.connect(wh.pg_url, autocommit=True)
    return duckdb.connect(str(wh.duckdb_path))


def query(wh: Warehouse, sql: str) -> list[dict[str, Any]]:
    with connect(wh) as conn:
        cursor = conn.execute(sql)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def triggers(wh: Warehouse) -> dict[tuple[str, str], dict[str, Any]]:
    rows = query(wh, f'select * from "{wh.schema}".email_triggers')
    return {(row["user_id"], row["campaign"]): row for row in rows}


def run_results(wh: Warehouse) -> dict[str, dict[str, Any]]:
    """The last dbt command's models, data tests and unit tests (no hooks, no exposures)."""
    path = Path(wh.target_dir) / "target" / "run_results.json"
    results = json.loads(path.read_text())["results"]
    kinds = ("model.", "test.", "unit_test.")
    return {r["unique_id"]: r for r in results if r["unique_id"].startswith(kinds)}


def build(wh: Warehouse, sent: Sent) -> Built:
    """Load the raw rows, tick on the fresh warehouse, then run the full nightly build."""
    with connect(wh) as conn:
        raw_events.create_raw_tables(conn, wh.dialect, wh.raw_schema)
        raw_events.load_events(conn, wh.dialect, with_sentinels(sent.events), wh.raw_schema)
        write_json_numbers(conn, wh)
    run_dbt(wh, "build", "--selector", "trigger_path", dbt_vars=AS_OF)
    tick = (triggers(wh), run_results(wh))
    try:
        run_dbt(wh, "build", dbt_vars=NIGHTLY)
        error = None
    except DbtFailed as failed:  # its test says so; the other tests read what it built
        error = str(failed)
    return Built(wh, sent, *tick, triggers(wh), run_results(wh), error)


@pytest.fixture(scope="module")
def sent() -> Sent:
    return all_events()


@pytest.fixture(
    scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def built(request, sent: Sent, tmp_path_factory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp(f"quarantine_{request.param}")
    if request.param == "duckdb":
        wh = Warehouse(
            dialect="duckdb",
            schema="signals",
            duckdb_path=folder / "warehouse.duckdb",
            ledger_path=folder / "ledger.duckdb",  # no send yet: the ledger does not exist
            target_dir=folder,
        )
        yield build(wh, sent)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    wh = Warehouse(
        dialect="postgres",
        schema=schema,
        raw_schema=f"{schema}_raw",
        ledger_schema=f"{schema}_ledger",
        pg_url=request.getfixturevalue("pg_url"),
        target_dir=folder,
    )
    try:
        yield build(wh, sent)
    finally:
        with connect(wh) as conn:
            for name in (schema, wh.raw_schema, wh.ledger_schema):
                conn.execute(f'drop schema if exists "{name}" cascade')


# -- the builds ----------------------------------------------------------------------------


def test_a_tick_over_hostile_values_builds_every_model_and_runs_no_test(built: Built):
    statuses = {name: r["status"] for name, r in built.tick_results.items()}
    assert statuses["model.signalmail.email_triggers"] == "success"
    assert set(statuses.values()) == {"success"}, statuses
    # data and unit tests are the nightly build's: a tick never stops on one
    assert not [name for name in statuses if name.startswith(("test.", "unit_test."))]


def test_the_nightly_build_over_hostile_values_only_warns_with_their_count(built: Built):
    statuses = {name: r["status"] for name, r in built.nightly_results.items()}
    failed = {name: s for name, s in statuses.items() if s not in ("success", "pass", "warn")}
    assert not failed, built.nightly_error
    assert built.nightly_error is None
    assert statuses["model.signalmail.quarantined_values"] == "success"
    assert statuses["model.signalmail.email_triggers"] == "success"
    assert sum(name.startswith("test.") for name in statuses) > 50, "the data tests ran"
    warned = {name: r for name, r in built.nightly_results.items() if r["status"] == "warn"}
    assert list(warned) == ["test.signalmail.no_quarantined_values"]
    count = sum(hostile.reason is not None for hostile in HOSTILE)
    assert warned["test.signalmail.no_quarantined_values"]["failures"] == count


# -- the other shoppers' email ---------------------------------------------------------------


def payload(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]


def cart_lines(row: dict[str, Any]) -> list[tuple[str, int, float]]:
    return [(p["product_id"], p["quantity"], p["price"]) for p in payload(row)["products"]]


@pytest.mark.parametrize("run", ["tick", "nightly"])
@pytest.mark.parametrize("user", ORDINARY)
def test_ordinary_shoppers_get_their_cart_email_with_its_values(built: Built, run: str, user):
    found = built.tick_triggers if run == "tick" else built.nightly_triggers
    row = found[(user, "cart_abandonment")]
    merge = payload(row)
    assert row["email"] == f"{user}@example.com"
    assert row["first_name"] == user.title()
    assert cart_lines(row) == [(CART_PRODUCT, 2, 12.5)]
    assert merge["cart_total"] == 25.0
    assert merge["currency"] == VARS["default_currency"]
    if run == "nightly":
        # p-hot, the shoes bought most, is recommended at its price: the set-aside prices of
        # later events did not replace the catalogue's latest well-formed one
        recommended = {p["product_id"]: p["price"] for p in merge["recommendations"]}
        assert recommended.get(HOT_PRODUCT) == HOT_PRICE, merge["recommendations"]


def test_a_set_aside_quantity_counts_as_one_in_its_own_cart_email(built: Built):
    """docs/signals.md: a quantity that is not a number in range is 1, as when absent."""
    carts = [i for i, h in enumerate(HOSTILE) if h.field == "quantity" and h.identified]
    assert len(carts) == 4
    for index in carts:
        row = built.nightly_triggers[(shopper(index), "cart_abandonment")]
        if HOSTILE[index].reason is None:  # 2.5 is kept, however each engine rounds it
            assert payload(row)["cart_total"] == 2.5 * HOT_PRICE
            continue
        assert cart_lines(row) == [(HOT_PRODUCT, 1, HOT_PRICE)], HOSTILE[index]
        assert payload(row)["cart_total"] == HOT_PRICE


# -- what staging set aside ------------------------------------------------------------------


def assert_client_value(client_value: str, sent: Any) -> None:
    """The text the client sent, its first 100 characters; a number in the engine's spelling."""
    if isinstance(sent, str):
        assert client_value == sent[:100]
    elif isinstance(sent, int) and len(str(sent)) > 100:
        assert client_value == str(sent)[:100]
    else:
        assert float(client_value) == float(sent)


def test_each_value_set_aside_is_listed_once_with_its_field_and_reason(built: Built):
    rows = built.rows("quarantined_values")
    listed = {(r["message_id"], r["product_index"], r["field"]): r for r in rows}
    assert len(listed) == len(rows), "one row per value"
    # exactly the bad values: none for the ordinary shoppers', 2.5 or 1e-400
    want = {
        (built.sent.message_of[index], 0, hostile.field): hostile.reason
        for index, hostile in enumerate(HOSTILE)
        if hostile.reason is not None
    }
    assert {key: row["reason"] for key, row in listed.items()} == want
    for index, hostile in enumerate(HOSTILE):
        row = listed.get((built.sent.message_of[index], 0, hostile.field))
        if row is not None:
            assert row["event_name"] == EVENT_OF[hostile.field]
            assert row["anonymous_id"] == f"anon-{shopper(index)}"
            assert row["user_id"] == (shopper(index) if hostile.identified else None)
            assert_client_value(row["client_value"], hostile.value)


# -- the events still count -----------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_an_event_with_a_hostile_value_still_counts_with_the_value_unknown(built: Built, index):
    hostile = HOSTILE[index]
    message = f"message_id = '{built.sent.message_of[index]}'"
    if hostile.field in ("price", "quantity"):
        (row,) = built.rows("stg_rudderstack__product_events", message)
        assert row["product_id"] == HOT_PRODUCT
        unknown = 1 if hostile.field == "quantity" else None
        assert row[hostile.field] == (unknown if hostile.reason else hostile.kept)
        (interaction,) = built.rows("int_product_interactions", message)
        assert interaction["product_id"] == HOT_PRODUCT
    elif hostile.field == "revenue":
        (row,) = built.rows("stg_rudderstack__tracks", message)
        assert row["order_revenue"] is None
        (order,) = built.rows("int_orders", message)
        assert order["order_id"] == f"o-{shopper(index)}"
    else:
        (row,) = built.rows("stg_rudderstack__tracks", message)
        assert row["page_view_id"] == f"pv-{shopper(index)}"
        assert row["engaged_seconds"] is None
        assert_client_value(row["engaged_seconds_text"], hostile.value)


# -- PostgreSQL reads numbers as DuckDB does ---------------------------------------------------

CLIENT_TEXTS = [
    *("1e16", "1e309", "-1e309", "-5", "2.5", " 12 ", "+.5", "5.", "00012", "1e0005", "-0"),
    *("NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "INF"),
    *("abc", "", ".", "-", "1e", "0x10", "1,5", "12abc", "٣", "1e5e5", "--1"),
    *("1e-400", "-1e-400", "1e1000", "-1e1000", "1e-1000", "0e5000", "0.0e1000"),
    *("1e299", "-1e299", "1e" + "9" * 5000, "1" + "0" * 299, "0." + "0" * 401 + "1"),
    "0.1000000000000000055511151231257827021181583404541015625",
    "9" * 10000,
]


def read_alike(duck: float | None, pg: float | None) -> bool:
    """Equal, or both NaN, both 0 or below 1e-300, both +-Infinity or beyond +-1e300."""
    if duck is None or pg is None:
        return duck is pg
    if math.isnan(duck) or math.isnan(pg):
        return math.isnan(duck) and math.isnan(pg)
    if abs(duck) < 1e-300 and abs(pg) < 1e-300:
        return True
    if abs(duck) >= 1e300 and abs(pg) >= 1e300:
        return (duck > 0) == (pg > 0)
    return duck == pg


@pytest.mark.postgres
def test_postgres_reads_a_client_number_as_duckdbs_try_cast_does(pg_url: str, tmp_path):
    """postgres__safe_to_double: so one value is staged and quarantined alike on both engines,
    and no text, however long or absurd, fails the cast."""
    wh = Warehouse(dialect="postgres", schema="unused", pg_url=pg_url, target_dir=tmp_path)
    compiled = run_dbt(
        wh, "--quiet", "compile", "--inline",
        "select v, {{ safe_to_double('v') }} as x from client_texts",
    )  # fmt: skip
    texts = [*CLIENT_TEXTS, "9" * 200_000, "." * 50_000]
    with connect(wh) as conn:
        sql = "with client_texts as (select unnest(cast(%s as text[])) as v) " + compiled
        pg = dict(conn.execute(sql, [texts]).fetchall())
    with duckdb.connect() as conn:
        duck = dict(
            conn.execute(
                "select v, try_cast(v as double) from unnest(cast(? as varchar[])) as t(v)",
                [CLIENT_TEXTS],
            ).fetchall()
        )
    differ = {t[:40]: (duck[t], pg[t]) for t in CLIENT_TEXTS if not read_alike(duck[t], pg[t])}
    assert not differ
    assert pg["9" * 200_000] is None  # beyond 10,000 characters: no cast is tried
