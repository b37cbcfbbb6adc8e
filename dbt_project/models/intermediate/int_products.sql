{{ config(materialized='table', tags=['nightly']) }}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

final as (
    -- the catalogue as the storefront last described each product
    select
        product_id,
        {{ latest_value('product_name', 'event_at desc, message_id desc') }} as product_name,
        {{ latest_value('brand', 'event_at desc, message_id desc') }} as brand,
        {{ latest_value('category', 'event_at desc, message_id desc') }} as category,
        {{ latest_value('price', 'event_at desc, message_id desc') }} as price,
        {{ latest_value('currency', 'event_at desc, message_id desc') }} as currency,
        {{ latest_value('product_url', 'event_at desc, message_id desc') }} as product_url,
        {{ latest_value('image_url', 'event_at desc, message_id desc') }} as image_url,
        max(event_at) as last_seen_at
    from interactions
    group by product_id
)

select * from final
