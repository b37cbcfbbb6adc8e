"""Incremental runs equal a full refresh, on DuckDB and on PostgreSQL.

One warehouse is built once and then advanced by several incremental runs while batches arrive
with the real world's mess: late events (old event time, new receipt), retried duplicates (same
messageId, within one batch and across batches), a batch loaded out of order (received before
the previous batch's newest row, inside the lookback), anonymous history stitched to a user
by a later identify, sessions that grow across deliveries and merge when a late event
bridges them, a late report of an earlier order that takes over a stored cart's conversion, a
cart two shoppers share, and identifies folded into a stored profile (a tie of event times, a
late one that must lose). The same raw data built from scratch into a second schema must give
the same rows in every model.
"""

from __future__ import annotations

import copy
import uuid
from datetime import timedelta

import duckdb
import pytest
from testkit import raw_events, scenario
from testkit.harness import Warehouse, run_dbt, snapshot
from testkit.scenario import NOW, received_at

pytestmark = pytest.mark.slow

AS_OF = {"as_of": scenario.AS_OF}
# A lookback shorter than the deliveries' spread, so that later runs fold new rows into stored
# state instead of re-reading every delivery (it still covers the out-of-order one, 12 min).
INCREMENTAL = AS_OF | {"lookback_minutes": 15}

# every persisted model: incremental state, tables and the marts
COMPARED = [
    "stg_rudderstack__tracks",
    "stg_rudderstack__identifies",
    "stg_rudderstack__pages",
    "stg_rudderstack__aliases",
    "stg_rudderstack__product_events",
    "stg_rudderstack__email_events",
    "int_identity_map",
    "int_events",
    "int_product_interactions",
    "int_user_profiles",
    "int_sessions",
    "int_cart_items",
    "int_carts",
    "int_user_activity",
    "int_orders",
    "int_order_items",
    "int_user_send_preferences",
    "user_signals",
    "product_recommendations",
    "email_triggers",
    "campaign_performance",
]
# Tables on PostgreSQL only (ephemeral elsewhere): there, the rules' windows are read from them
POSTGRES_COMPARED = [*COMPARED, "int_product_engagement", "int_searches"]


def reported(order_id: str, at, product: dict) -> dict:
    """An Order Completed report of s-carts with one product (a new message id each call)."""
    f = raw_events.EventFactory(seed=f"report-{order_id}-{at:%H%M}")
    properties = {"order_id": order_id, "total": product["price"], "currency": "EUR"}
    return f.track("Order Completed", at, properties | {"products": [product]}, user_id="s-carts")


def ordered(order_id: str, at, user_id: str) -> dict:
    """An Order Completed of one cart product, without a cart_id."""
    f = raw_events.EventFactory(seed=f"order-{order_id}")
    properties = {"order_id": order_id, "total": 10.0, "currency": "EUR"}
    return f.track(
        "Order Completed", at, properties | {"products": [scenario.CART_PRODUCT]}, user_id=user_id
    )


UNRECEIVED_CART = dict(scenario.CART_PRODUCT, cart_id="cart-unreceived")


def unreceived_add() -> dict:
    """An add to cart that the initial load carries without a receipt time, so its stored cart
    line has no first_received_at; batch two adds to the same line. The loader always sets
    received_at (staging tests it, in the nightly build), but the models keep a row without
    one, and so must the deletes that replace it."""
    f = raw_events.EventFactory(seed="unreceived")
    event = f.track(
        "Product Added", NOW - timedelta(hours=26), UNRECEIVED_CART, user_id="s-unreceived"
    )
    del event["receivedAt"]
    return event


def batches() -> list[list[dict]]:
    """Three deliveries after the initial load, each with its own kind of trouble."""
    base = scenario.background() + scenario.scenario()
    f = raw_events.EventFactory(seed="late-batches")
    minute = timedelta(minutes=1)

    traffic = raw_events.Traffic(
        start=NOW - 110 * minute,
        end=NOW - 60 * minute,
        users=150,
        seed=11,
        factory=raw_events.EventFactory(seed="batch-traffic"),
    )
    fresh = list(traffic.events(600))
    for index, event in enumerate(fresh):
        received_at(event, NOW - 100 * minute + index * (40 * minute) / len(fresh))

    one = fresh[:200]
    # a late event: viewed three days ago on a phone that was offline, received now
    late = f.track(
        "Product Viewed",
        NOW - timedelta(days=3),
        dict(scenario.BROWSED_PRODUCT),
        user_id="s-browse",
    )
    one.append(received_at(late, NOW - 95 * minute))
    # a retry of an event loaded in the initial batch, and a retry inside this batch
    one.append(received_at(copy.deepcopy(base[10]), NOW - 94 * minute))
    one.append(received_at(copy.deepcopy(one[5]), NOW - 93 * minute))
    # from an SDK that sends no originalTimestamp, retried two deliveries later: the duplicate
    # check cannot bound its scan by original time then
    untimed = f.page(NOW - 96 * minute, anonymous_id="a-untimed")
    del untimed["originalTimestamp"]
    one.append(received_at(untimed, NOW - 96 * minute))
    # two sessions of one shopper, 50 minutes apart (the timeout is 30)
    one.append(received_at(f.page(NOW - 200 * minute, user_id="s-sessions"), NOW - 92 * minute))
    one.append(received_at(f.page(NOW - 150 * minute, user_id="s-sessions"), NOW - 92 * minute))
    # two orders, each reported again two deliveries later under a new message id (see below)
    one.append(
        received_at(reported("o-kept", NOW - 78 * minute, scenario.CART_PRODUCT), NOW - 99 * minute)
    )
    one.append(
        received_at(
            reported("o-twice", NOW - 78 * minute, scenario.CART_PRODUCT), NOW - 99 * minute
        )
    )
    # a cart converted by an order; two deliveries later a report of an earlier order by the
    # same shopper arrives late, and it is that order which converted the cart
    reorder_cart = dict(scenario.CART_PRODUCT, cart_id="cart-reorder")
    reorder_add = f.track("Product Added", NOW - 130 * minute, reorder_cart, user_id="s-reorder")
    one.append(received_at(reorder_add, NOW - 99 * minute))
    one.append(received_at(ordered("o-first", NOW - 110 * minute, "s-reorder"), NOW - 98 * minute))
    # a cart two shoppers share: one of them buys two deliveries later, and the other's row of
    # the cart stays as it was
    shared = dict(scenario.CART_PRODUCT, cart_id="cart-shared")
    for index, shopper in enumerate(["s-share-buyer", "s-share-other"]):
        shared_add = f.track("Product Added", NOW - (126 + index) * minute, shared, user_id=shopper)
        one.append(received_at(shared_add, NOW - 99 * minute))
    # a shopper's traits: two deliveries later come an identify at the same instant, whose
    # larger message id wins the tie, and a late one from the day before, which loses
    traits_at = NOW - 120 * minute
    first_traits = f.identify(
        traits_at, "s-traits", {"email": "new@example.com", "first_name": "Ann"}
    )
    first_traits["messageId"] = "m-traits-a"
    one.append(received_at(first_traits, NOW - 99 * minute))
    # a cart started now and added to again two deliveries later
    added = dict(scenario.CART_PRODUCT, cart_id="cart-growing")
    first_add = f.track("Product Added", NOW - 150 * minute, added, user_id="s-carts")
    one.append(received_at(first_add, NOW - 100 * minute))

    two = fresh[200:400]
    # the second of them goes on in the next delivery: the stored session grows
    two.append(received_at(f.page(NOW - 140 * minute, user_id="s-sessions"), NOW - 80 * minute))
    # an order at this delivery's end moves the orders' mark likewise
    two.append(
        received_at(reported("o-mark", NOW - 74 * minute, scenario.CART_PRODUCT), NOW - 74 * minute)
    )
    # the carts' mark moves to this delivery's end, so the next run's cutoff leaves the first
    # delivery's cart-growing add behind: only cart-growing's stored first receipt reaches it
    other = dict(scenario.BROWSED_PRODUCT, cart_id="cart-other")
    two.append(
        received_at(
            f.track("Product Added", NOW - 74 * minute, other, user_id="s-carts"), NOW - 74 * minute
        )
    )
    # anonymous browsing and an add to cart that nobody can email yet
    anon = "a-stitched"
    two.append(
        received_at(
            f.track(
                "Product Viewed", NOW - 80 * minute, dict(scenario.CART_PRODUCT), anonymous_id=anon
            ),
            NOW - 80 * minute,
        )
    )
    two.append(
        received_at(
            f.track(
                "Product Added",
                NOW - 79 * minute,
                dict(scenario.CART_PRODUCT, cart_id="cart-stitched"),
                anonymous_id=anon,
            ),
            NOW - 79 * minute,
        )
    )
    # and the same browser's search and time on the product page, stored unresolved until the
    # identify below (int_searches and int_product_engagement are incremental on PostgreSQL)
    two.append(
        received_at(
            f.track("Products Searched", NOW - 81 * minute, {"query": "boots"}, anonymous_id=anon),
            NOW - 80 * minute,
        )
    )
    ping = {
        "page_view_id": "pv-stitched",
        "engaged_seconds": 25,
        "heartbeat_seconds": 30,
        "product_id": scenario.CART_PRODUCT["product_id"],
        "category": scenario.CART_PRODUCT.get("category"),
    }
    two.append(
        received_at(
            f.track("Page Engaged", NOW - 80 * minute, ping, anonymous_id=anon), NOW - 80 * minute
        )
    )

    # a second add to the line stored without a receipt: the line is rebuilt from both adds,
    # and the bounded delete (first_received_at >= this receipt) must still remove the stored
    # line, whose bound is null
    two.append(
        received_at(
            f.track("Product Added", NOW - 76 * minute, UNRECEIVED_CART, user_id="s-unreceived"),
            NOW - 76 * minute,
        )
    )

    three = fresh[400:]
    # loaded after batch two but received before its newest rows (within the lookback)
    for event in three[:50]:
        received_at(event, NOW - 85 * minute)
    # the shopper identifies: their anonymous history (loaded in batch two) joins them
    identify = f.identify(
        NOW - 70 * minute,
        "s-stitched",
        {
            "email": "s-stitched@example.com",
            "email_opt_in": True,
            "timezone": "Asia/Tokyo",
        },
        anonymous_id=anon,
    )
    three.append(received_at(identify, NOW - 70 * minute))
    # a late page view 25 minutes after the first session and before the second: one session
    three.append(received_at(f.page(NOW - 175 * minute, user_id="s-sessions"), NOW - 70 * minute))
    again = dict(scenario.BROWSED_PRODUCT, cart_id="cart-growing")
    second_add = f.track("Product Added", NOW - 72 * minute, again, user_id="s-carts")
    three.append(received_at(second_add, NOW - 70 * minute))
    # the second report of o-twice: earlier event time, so it replaces the stored first report
    # and its items replace the stored items
    three.append(
        received_at(
            reported("o-twice", NOW - 79 * minute, scenario.BROWSED_PRODUCT), NOW - 70 * minute
        )
    )
    # the second report of o-kept: later event time, so the stored first report stays
    three.append(
        received_at(
            reported("o-kept", NOW - 71 * minute, scenario.BROWSED_PRODUCT), NOW - 70 * minute
        )
    )
    # an order for a cart from an earlier batch, then the same message delivered twice
    order = f.track(
        "Order Completed",
        NOW - 75 * minute,
        {
            "order_id": "o-late",
            "total": 12.5,
            "currency": "EUR",
            "products": [scenario.CART_PRODUCT],
            "cart_id": "cart-s-softbounce",
        },
        user_id="s-softbounce",
    )
    three.append(received_at(order, NOW - 69 * minute))
    three.append(received_at(copy.deepcopy(order), NOW - 68 * minute))
    three.append(received_at(copy.deepcopy(untimed), NOW - 68 * minute))
    three.append(
        received_at(ordered("o-earlier", NOW - 120 * minute, "s-reorder"), NOW - 69 * minute)
    )
    three.append(
        received_at(ordered("o-shared", NOW - 71 * minute, "s-share-buyer"), NOW - 69 * minute)
    )
    tied = f.identify(traits_at, "s-traits", {"first_name": "Bea"})
    tied["messageId"] = "m-traits-b"
    three.append(received_at(tied, NOW - 69 * minute))
    stale = f.identify(traits_at - timedelta(days=1), "s-traits", {"email": "old@example.com"})
    three.append(received_at(stale, NOW - 69 * minute))
    return [one, two, three]


def check_equivalence(
    connect,
    dialect: str,
    incremental: Warehouse,
    full: Warehouse,
    full_refresh: tuple[str, ...] = ("run", "--full-refresh"),
    compared: list[str] = COMPARED,
) -> None:
    with connect() as conn:
        raw_events.create_raw_tables(conn, dialect, incremental.raw_schema)
        raw_events.load_events(conn, dialect, scenario.background(), incremental.raw_schema)
        raw_events.load_events(
            conn, dialect, scenario.scenario(), incremental.raw_schema, spool_key="scenario"
        )
        raw_events.load_events(
            conn, dialect, [unreceived_add()], incremental.raw_schema, spool_key="unreceived"
        )
    run_dbt(incremental, "run", "--full-refresh", dbt_vars=AS_OF)

    for number, batch in enumerate(batches()):
        with connect() as conn:
            raw_events.load_events(
                conn, dialect, batch, incremental.raw_schema, spool_key=f"batch-{number}"
            )
        if number < 2:
            # near-real-time ticks: only the trigger path
            run_dbt(incremental, "build", "--selector", "trigger_path", dbt_vars=INCREMENTAL)
        else:
            # the nightly build brings the nightly models (recommendations) up to date too
            run_dbt(incremental, "run", dbt_vars=INCREMENTAL)

    run_dbt(full, *full_refresh, dbt_vars=AS_OF)

    with connect() as conn:
        got = snapshot(conn, incremental.schema, compared)
        want = snapshot(conn, full.schema, compared)
        raw_count = conn.execute(
            f'select count(*) from "{incremental.raw_schema}".tracks'
        ).fetchone()[0]
        stitched = conn.execute(
            f'select item_count from "{incremental.schema}".int_carts '
            "where user_id = 's-stitched'"
        ).fetchall()
        merged = conn.execute(
            f'select session_number, event_count from "{incremental.schema}".int_sessions '
            "where user_id = 's-sessions'"
        ).fetchall()
        growing = conn.execute(
            f'select item_count from "{incremental.schema}".int_carts '
            "where cart_key = 'cart-growing'"
        ).fetchall()
        twice = conn.execute(
            f'select product_id from "{incremental.schema}".int_order_items '
            "where order_id = 'o-twice'"
        ).fetchall()
        kept = conn.execute(
            f'select product_id from "{incremental.schema}".int_order_items '
            "where order_id = 'o-kept'"
        ).fetchall()
        reconverted = conn.execute(
            f'select converted_order_id from "{incremental.schema}".int_carts '
            "where cart_key = 'cart-reorder'"
        ).fetchall()
        shared = conn.execute(
            f'select user_id, converted_order_id from "{incremental.schema}".int_carts '
            "where cart_key = 'cart-shared' order by user_id"
        ).fetchall()
        unreceived = conn.execute(
            "select quantity, first_received_at is null"
            f' from "{incremental.schema}".int_cart_items'
            " where cart_key = 'cart-unreceived'"
        ).fetchall()
        traits = conn.execute(
            f'select email, first_name from "{incremental.schema}".int_user_profiles '
            "where user_id = 's-traits'"
        ).fetchall()
        late_order = conn.execute(
            f"select count(*) from \"{incremental.schema}\".int_orders where order_id = 'o-late'"
        ).fetchone()[0]

    # the batches really did add data, stitched history and a deduplicated late order
    assert raw_count > 2000
    assert stitched == [(1,)]
    assert late_order == 1
    assert merged == [(1, 4)]  # grown across deliveries, then bridged by the late view
    assert growing == [(2,)]  # the second add folded into the cart stored two deliveries ago
    assert twice == [(scenario.BROWSED_PRODUCT["product_id"],)]  # the earlier report's items
    assert kept == [(scenario.CART_PRODUCT["product_id"],)]  # the stored first report stays
    assert reconverted == [("o-earlier",)]  # the late, earlier order converted the stored cart
    # one line for both adds, the one without a receipt and the one with
    assert unreceived == [(2, False)]
    # folded into the stored profile: the tie to the larger message id, the late email lost
    assert traits == [("new@example.com", "Bea")]
    # the buyer's row converted, the other shopper's row of the same cart carried as it was
    assert shared == [("s-share-buyer", "o-shared"), ("s-share-other", None)]
    for relation in compared:
        assert want[relation], f"{relation} is empty: the comparison would prove nothing"
        missing = set(want[relation]) - set(got[relation])
        extra = set(got[relation]) - set(want[relation])
        detail = (
            f"{relation}: incremental differs from full refresh\n"
            f"  only in full refresh: {sorted(missing, key=repr)[:3]}\n"
            f"  only in incremental: {sorted(extra, key=repr)[:3]}"
        )
        assert not missing, detail
        assert not extra, detail
        assert len(got[relation]) == len(want[relation]), f"{relation}: duplicate rows"


def test_incremental_equals_full_refresh_duckdb(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    common = {"dialect": "duckdb", "duckdb_path": path, "ledger_path": tmp_path / "none.duckdb"}
    incremental = Warehouse(schema="signals", target_dir=tmp_path / "inc", **common)
    full = Warehouse(schema="signals_full", target_dir=tmp_path / "full", **common)
    check_equivalence(lambda: duckdb.connect(str(path)), "duckdb", incremental, full)
    with duckdb.connect(str(path)) as conn:
        # postgres_indexes() is a no-op here: ART indexes would slow every delete+insert
        indexes = conn.execute(
            "select count(*) from duckdb_indexes() where schema_name = 'signals'"
        ).fetchone()
    assert indexes == (0,)


@pytest.mark.postgres
def test_incremental_equals_full_refresh_postgres(tmp_path, pg_url, pg_schema):
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    schemas = [f"{pg_schema}_raw", f"{pg_schema}_full", f"{pg_schema}_ledger_{suffix}"]
    common = {
        "dialect": "postgres",
        "pg_url": pg_url,
        "raw_schema": schemas[0],
        "ledger_schema": schemas[2],
    }
    incremental = Warehouse(schema=pg_schema, target_dir=tmp_path / "inc", **common)
    full = Warehouse(schema=schemas[1], target_dir=tmp_path / "full", **common)

    def connect():
        return psycopg.connect(pg_url, autocommit=True)

    try:
        check_equivalence(connect, "postgres", incremental, full, compared=POSTGRES_COMPARED)
        with connect() as conn:
            indexed = conn.execute(
                "select tablename, indexdef from pg_indexes where schemaname = %s",
                (pg_schema,),
            ).fetchall()
            analysed = conn.execute(
                "select attname from pg_stats where schemaname = %s"
                " and tablename = 'int_trigger_candidates'",
                (pg_schema,),
            ).fetchall()
            # the anonymous search and ping, stored in the second delivery, re-attributed in
            # the third (their rows were not re-read in the full refresh's comparison alone)
            stitched = [
                conn.execute(
                    f'select user_id from "{pg_schema}".{table} where anonymous_id = %s',
                    ("a-stitched",),
                ).fetchall()
                for table in ("int_searches", "int_product_engagement")
            ]
        assert stitched == [[("s-stitched",)], [("s-stitched",)]]
        # analysed for the planner, without the merge data (analyze_skip_columns)
        assert ("trigger_id",) in analysed, analysed
        assert ("user_id",) in analysed, analysed
        assert ("payload",) not in analysed, analysed
        # postgres_indexes(): the columns a tick looks rows up by are indexed
        assert any(t == "int_events" and "(user_id)" in d for t, d in indexed), indexed
        assert any(t == "stg_rudderstack__tracks" and "(received_at)" in d for t, d in indexed)
        assert any(t == "int_sessions" and "(user_id)" in d for t, d in indexed)
        # the touched carts' rows, and the rules' windows
        assert any(t == "int_product_interactions" and "(cart_key)" in d for t, d in indexed)
        assert any(t == "int_product_interactions" and "(event_at)" in d for t, d in indexed)
        assert any(t == "int_product_engagement" and "(event_at)" in d for t, d in indexed)
        assert any(t == "int_searches" and "(searched_at)" in d for t, d in indexed)
    finally:
        with connect() as conn:
            for schema in schemas:
                conn.execute(f'drop schema if exists "{schema}" cascade')
