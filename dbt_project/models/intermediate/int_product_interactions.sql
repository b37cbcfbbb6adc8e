{{
    config(
        materialized='incremental',
        incremental_strategy='bounded_delete_insert',
        unique_key='message_id',
        delete_bound='received_at',
        indexes=postgres_indexes([
            ['message_id'], ['received_at'], ['user_id'], ['anonymous_id'], ['cart_key'], ['event_at'],
        ]),
    )
}}

{#-
    A table for the same reason as int_events: newly received rows plus re-attributed ones.
    On Postgres, a tick's cart models find the touched carts' rows by the cart_key index, and
    the rules their windows by the event_at index: without them, each read all of history.
-#}

with

product_events as (
    {% if is_incremental() %}
    {{ received_or_restitched(
        ref('stg_rudderstack__product_events'), incremental_cutoff(), unresolved_only=true
    ) }}
    {% else %}
    select * from {{ ref('stg_rudderstack__product_events') }}
    {% endif %}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

resolved as (
    select
        product_events.message_id,
        product_events.product_index,
        product_events.interaction_type,
        product_events.anonymous_id,
        coalesce(product_events.user_id, identity_map.user_id) as user_id,
        product_events.event_at,
        product_events.received_at,
        product_events.cart_id,
        -- a cart is its cart_id; events without one belong to the shopper's implicit cart
        coalesce(
            product_events.cart_id,
            'user:' || coalesce(product_events.user_id, identity_map.user_id)
        ) as cart_key,
        product_events.order_id,
        product_events.product_id,
        product_events.sku,
        product_events.product_name,
        product_events.brand,
        product_events.category,
        product_events.price,
        product_events.quantity,
        product_events.currency,
        product_events.product_url,
        product_events.image_url
    from product_events
    left join identity_map
        on product_events.anonymous_id = identity_map.anonymous_id
)

select * from resolved
{{ full_build_order('received_at') }}
