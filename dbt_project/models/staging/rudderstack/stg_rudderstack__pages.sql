{{ config(indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']])) }}

with

source as (
    {{ deduplicated_source('rudderstack', 'pages') }}
),

renamed as (
    select
        message_id,
        anonymous_id,
        user_id,
        {{ event_time('source') }} as event_at,
        original_timestamp,
        received_at,
        name as page_name,
        context_page_url as page_url,
        context_timezone
    from source
)

select * from renamed
{{ full_build_order('received_at') }}
