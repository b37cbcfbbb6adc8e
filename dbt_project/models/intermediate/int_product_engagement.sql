-- Time on content, resolved to the shopper: every `Page Engaged` ping of a product page with
-- the user it belongs to (an anonymous browser's pings count for the user it later identifies
-- as, like every other event). Rules aggregate it over their own window: engaged seconds per
-- page view, capped at `max_engaged_seconds_per_view`, then per product or category.

with

pings as (
    select * from {{ ref('stg_rudderstack__page_engagement') }}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
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
    where pings.engaged_seconds is not null
        and pings.page_view_id is not null
)

select * from resolved
