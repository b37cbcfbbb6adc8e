-- Time on content, resolved to the shopper: every `Page Engaged` ping (docs/contracts.md
-- section 2) with the user it belongs to (an anonymous browser's pings count for the user it
-- later identifies as, like every other event). A page reports the seconds it was visible with
-- the shopper active since its previous ping, every heartbeat and once more when the shopper
-- leaves it, as Snowplow's page pings do; one page view is one `page_view_id`. Staging has
-- already nulled a count outside 0..`max_engaged_seconds_per_ping` (listed in
-- `quarantined_values`): one client cannot claim an hour of reading in one ping. Rules
-- aggregate it over their own window: engaged seconds per page view, capped at
-- `max_engaged_seconds_per_view`, then per product or category.

{{
    config(
        materialized='incremental' if target.type == 'postgres' else 'ephemeral',
        incremental_strategy='bounded_delete_insert',
        unique_key='message_id',
        delete_bound='received_at',
        indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id'], ['event_at']]),
    )
}}

{#-
    A table on Postgres, ephemeral elsewhere. Browse and search abandonment both read it, so in
    int_trigger_candidates Postgres materialized the inlined pings, all of them, before either
    rule kept its window: a scan of every tracks row on every tick (0.3 s at 1M events, growing
    with history). As a table it takes a tick's new and re-attributed pings, and each rule finds
    its window by the event_at index. Spark inlines a CTE at each reference, so each rule's
    window filter reaches the scan there; DuckDB's tick was not measured to need the table.
-#}

{%- set is_ping -%}
event_name = 'Page Engaged' and engaged_seconds is not null and page_view_id is not null
{%- endset %}

with

tracks as (
    {% if is_incremental() %}
    {{ received_or_restitched(
        ref('stg_rudderstack__tracks'), incremental_cutoff(), where=is_ping, unresolved_only=true
    ) }}
    {% else %}
    select * from {{ ref('stg_rudderstack__tracks') }}
    where {{ is_ping }}
    {% endif %}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

pings as (
    select
        message_id,
        anonymous_id,
        user_id,
        page_view_id,
        engaged_seconds,
        -- on a product page (product_id, else sku)
        coalesce(
            {{ json_text('properties', ['product_id']) }}, {{ json_text('properties', ['sku']) }}
        ) as product_id,
        {{ client_text(json_text('properties', ['category']), 200) }} as category,
        event_at,
        received_at
    from tracks
),

resolved as (
    select
        pings.message_id,
        coalesce(pings.user_id, identity_map.user_id) as user_id,
        pings.anonymous_id,
        pings.page_view_id,
        pings.product_id,
        pings.category,
        pings.engaged_seconds,
        pings.event_at,
        pings.received_at
    from pings
    left join identity_map
        on pings.anonymous_id = identity_map.anonymous_id
)

select * from resolved
