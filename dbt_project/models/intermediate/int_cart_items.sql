{{
    config(
        materialized='incremental',
        incremental_strategy='bounded_delete_insert',
        unique_key='cart_key',
        delete_bound='first_received_at',
        indexes=postgres_indexes([['cart_key'], ['user_id'], ['last_received_at']]),
    )
}}

-- touched_carts() reads these on incremental runs:
-- depends_on: {{ ref('int_identity_map') }}

{#
    Incremental on cart_key. The block at the top sets what a run reads; the SQL below it is
    the same for a full build and a tick. A full build reads every cart's events. A tick
    recomputes the carts that gained an add or a remove (new rows, or anonymous rows newly
    stitched to a user) from all their events, read from the first receipt the cart ever had.
    A cart lives for days, so that is a recent slice of history, however long the shopper's
    history is.
#}

with

interactions as {{ cte_hint('not materialized') }} (
    -- read once per branch of a tick's union below, each by its own filter
    select * from {{ ref('int_product_interactions') }}
),

{% if is_incremental() %}
{%- set touched_sql = touched_carts(incremental_cutoff('last_received_at'), ['add', 'remove']) -%}
{%- set read_from = earliest(touched_sql, 'read_from') %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_sql | indent(4) }}
),

cart_events as (
    -- each touched cart's adds and removes
    {{ touched_cart_rows(
        'interactions',
        'received_at',
        read_from,
        "interaction_type in ('add', 'remove') and user_id is not null",
    ) }}
),

{% else %}

cart_events as (
    -- a full build: every cart's adds and removes
    select * from interactions
    where interaction_type in ('add', 'remove')
        and user_id is not null
),
{% endif %}

cart_changes as (
    select
        cart_key,
        user_id,
        product_id,
        interaction_type,
        case
            when interaction_type = 'add' then quantity
            else -1 * quantity
        end as quantity_change,
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
    from cart_events
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
        min(received_at) as first_received_at,
        max(received_at) as last_received_at
    from cart_changes
    group by cart_key, user_id, product_id
),

final as (
    select
        cart_key,
        user_id,
        product_id,
        -- removing more than was added empties the line, it never goes negative; and a line
        -- holds at most max_quantity, as one event does: staging bounds each add, and without
        -- this a shopper's many adds could pass a 32-bit integer and fail every email's build
        case
            when net_quantity > 0 then least(net_quantity, {{ var('max_quantity') }}) else 0
        end as quantity,
        product_name,
        brand,
        category,
        price,
        currency,
        product_url,
        image_url,
        first_added_at,
        last_changed_at,
        first_received_at,
        last_received_at
    from items
)

select * from final
{# stored in first-receipt order: a tick's delete is bounded by it (bounded_delete_insert) #}
{{ full_build_order('first_received_at') }}
