{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        indexes=postgres_indexes([['user_id'], ['last_received_at']]),
    )
}}

-- touched_users() reads these on incremental runs:
-- depends_on: {{ ref('int_events') }}
-- depends_on: {{ ref('int_identity_map') }}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

{% if is_incremental() %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_users(incremental_cutoff('last_received_at')) }}
),
{% endif %}

cart_changes as (
    -- a cart is its cart_id; events without one belong to the user's implicit cart
    select
        coalesce(cart_id, 'user:' || user_id) as cart_key,
        user_id,
        product_id,
        interaction_type,
        case when interaction_type = 'add' then quantity else -1 * quantity end as quantity_change,
        message_id,
        event_at,
        received_at,
        product_name,
        brand,
        category,
        price,
        currency,
        product_url,
        image_url
    from interactions
    where interaction_type in ('add', 'remove')
        and user_id is not null
        {% if is_incremental() %}
        and user_id in (select user_id from touched)
        {% endif %}
),

items as (
    select
        cart_key,
        user_id,
        product_id,
        sum(quantity_change) as net_quantity,
        {{ latest_value('product_name', 'event_at desc, message_id desc') }} as product_name,
        {{ latest_value('brand', 'event_at desc, message_id desc') }} as brand,
        {{ latest_value('category', 'event_at desc, message_id desc') }} as category,
        {{ latest_value('price', 'event_at desc, message_id desc') }} as price,
        {{ latest_value('currency', 'event_at desc, message_id desc') }} as currency,
        {{ latest_value('product_url', 'event_at desc, message_id desc') }} as product_url,
        {{ latest_value('image_url', 'event_at desc, message_id desc') }} as image_url,
        min(event_at) as first_added_at,
        max(event_at) as last_changed_at,
        max(received_at) as last_received_at
    from cart_changes
    group by cart_key, user_id, product_id
),

final as (
    select
        cart_key,
        user_id,
        product_id,
        -- removing more than was added empties the line, it never goes negative
        case when net_quantity > 0 then net_quantity else 0 end as quantity,
        product_name,
        brand,
        category,
        price,
        currency,
        product_url,
        image_url,
        first_added_at,
        last_changed_at,
        last_received_at
    from items
)

select * from final
