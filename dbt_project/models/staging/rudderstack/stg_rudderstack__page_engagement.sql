{{ config(indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']])) }}

{#-
    Time on content: `Page Engaged` pings (docs/contracts.md section 2). A page reports the
    seconds it was visible with the shopper active since its previous ping, every heartbeat and
    once more when the shopper leaves it, as Snowplow's page pings do; one page view is one
    `page_view_id`. A count outside 0..`max_engaged_seconds_per_ping` is no count (null, listed
    in `quarantined_values`): one client cannot claim an hour of reading in one ping.
-#}

with

source as (
    {{ deduplicated_source(
        'rudderstack', 'tracks', where="raw_events.event = 'Page Engaged'"
    ) }}
),

renamed as (
    select
        message_id,
        anonymous_id,
        user_id,
        {{ event_time('source') }} as event_at,
        -- the deduplication of later ticks bounds its look at stored rows by this
        original_timestamp,
        received_at,
        {{ client_text(json_text('properties', ['page_view_id']), 100) }} as page_view_id,
        {{ client_number(
            json_text('properties', ['engaged_seconds']), 0, var('max_engaged_seconds_per_ping')
        ) }} as engaged_seconds,
        coalesce(
            {{ json_text('properties', ['product_id']) }}, {{ json_text('properties', ['sku']) }}
        ) as product_id,
        {{ client_text(json_text('properties', ['category']), 200) }} as category,
        {{ client_text('context_page_url', 2048) }} as page_url,
        -- what the client sent, for `quarantined_values`
        {{ client_text(json_text('properties', ['engaged_seconds']), 100) }} as engaged_seconds_text
    from source
)

select * from renamed
{{ full_build_order('received_at') }}
