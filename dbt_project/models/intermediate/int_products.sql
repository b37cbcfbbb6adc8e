{{ config(materialized='table', tags=['nightly']) }}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

described as (
    -- when each description reached us: a client's clock may claim a day ahead
    -- (max_clock_skew_minutes), and a forged view dated so would have given every email its
    -- name, price and link until then; capped at the receipt, a real view after it wins
    select
        *,
        least(event_at, received_at) as described_at
    from interactions
),

final as (
    -- the catalogue as the storefront last described each product
    select
        product_id,
        {{ latest_value('product_name', 'described_at desc, message_id desc') }} as product_name,
        {{ latest_value('brand', 'described_at desc, message_id desc') }} as brand,
        {{ latest_value('category', 'described_at desc, message_id desc') }} as category,
        {{ latest_value('price', 'described_at desc, message_id desc') }} as price,
        {{ latest_value('currency', 'described_at desc, message_id desc') }} as currency,
        {{ latest_value('product_url', 'described_at desc, message_id desc') }} as product_url,
        {{ latest_value('image_url', 'described_at desc, message_id desc') }} as image_url,
        max(event_at) as last_seen_at
    from described
    group by product_id
)

select * from final
