{{ config(indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']])) }}

with

source as (
    {{ deduplicated_source('rudderstack', 'tracks') }}
),

renamed as (
    select
        message_id,
        event as event_name,
        anonymous_id,
        user_id,
        {{ event_time('source') }} as event_at,
        original_timestamp,
        received_at,
        context_timezone,
        context_locale,
        context_page_url as page_url,
        nullif(trim({{ client_text(json_text('properties', ['query']), 300) }}), '')
            as search_query,
        {{ json_text('properties', ['cart_id']) }} as cart_id,
        {{ json_text('properties', ['order_id']) }} as order_id,
        coalesce(
            {%- for key in ['revenue', 'total', 'value'] %}
            {{ client_number(json_text('properties', [key]), 0, var('max_order_revenue')) }}
            {%- if not loop.last %},{% endif %}
            {%- endfor %}
        ) as order_revenue,
        upper(left({{ json_text('properties', ['currency']) }}, 3)) as currency,
        -- time on content: a `Page Engaged` ping's page view and its engaged seconds
        {{ client_text(json_text('properties', ['page_view_id']), 100) }} as page_view_id,
        {{ client_number(
            json_text('properties', ['engaged_seconds']), 0, var('max_engaged_seconds_per_ping')
        ) }} as engaged_seconds,
        -- what the client sent, for `quarantined_values`
        left(coalesce(
            {{ json_text('properties', ['revenue']) }},
            {{ json_text('properties', ['total']) }},
            {{ json_text('properties', ['value']) }}
        ), 100) as revenue_text,
        {{ client_text(json_text('properties', ['engaged_seconds']), 100) }}
            as engaged_seconds_text,
        properties
    from source
)

select * from renamed
{{ full_build_order('received_at') }}
