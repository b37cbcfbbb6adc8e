{{
    config(
        materialized='incremental',
        incremental_strategy='bounded_delete_insert',
        unique_key='message_id',
        delete_bound='received_at',
        indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']]),
        on_schema_change='append_new_columns',
    )
}}

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
        coalesce(source."timestamp", original_timestamp, received_at) as event_at,
        original_timestamp,
        received_at,
        context_timezone,
        context_locale,
        context_page_url as page_url,
        nullif(trim({{ json_text('properties', ['query']) }}), '') as search_query,
        {{ json_text('properties', ['cart_id']) }} as cart_id,
        {{ json_text('properties', ['order_id']) }} as order_id,
        coalesce(
            {{ safe_to_double(json_text('properties', ['revenue'])) }},
            {{ safe_to_double(json_text('properties', ['total'])) }},
            {{ safe_to_double(json_text('properties', ['value'])) }}
        ) as order_revenue,
        upper({{ json_text('properties', ['currency']) }}) as currency,
        properties
    from source
)

select * from renamed
{{ full_build_order('received_at') }}
