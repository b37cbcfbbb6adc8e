-- Time on content, resolved to the shopper: every `Page Engaged` ping (docs/contracts.md
-- section 2) with the user it belongs to (an anonymous browser's pings count for the user it
-- later identifies as, like every other event). A page reports the seconds it was visible with
-- the shopper active since its previous ping, every heartbeat and once more when the shopper
-- leaves it, as Snowplow's page pings do; one page view is one `page_view_id`. Staging has
-- already nulled a count outside 0..`max_engaged_seconds_per_ping` (listed in
-- `quarantined_values`): one client cannot claim an hour of reading in one ping. Rules
-- aggregate it over their own window: engaged seconds per page view, capped at
-- `max_engaged_seconds_per_view`, then per product or category.

with

tracks as (
    select * from {{ ref('stg_rudderstack__tracks') }}
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
    where event_name = 'Page Engaged'
        and engaged_seconds is not null
        and page_view_id is not null
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
