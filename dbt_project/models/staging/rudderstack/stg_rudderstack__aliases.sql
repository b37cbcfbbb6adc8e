{{ config(indexes=postgres_indexes([['message_id'], ['received_at']])) }}

with

source as (
    {{ deduplicated_source('rudderstack', 'aliases') }}
),

renamed as (
    select
        message_id,
        previous_id,
        user_id,
        {{ event_time('source') }} as event_at,
        original_timestamp,
        received_at
    from source
    where previous_id is not null
        and user_id is not null
)

select * from renamed
{{ full_build_order('received_at') }}
