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
    the same for a full build and a tick. A full build reads every cart's activity and items.
    A tick recomputes the carts with new activity from their own events (read from the cart's
    first receipt, see int_cart_items), and carries the stored carts of shoppers with a new
    order, whose activity and contents did not change, so that their conversion is re-decided.
#}

with

cart_items as {{ cte_hint('not materialized') }} (
    -- read once per branch of a tick's unions below, each by its own filter
    select * from {{ ref('int_cart_items') }}
),

interactions as {{ cte_hint('not materialized') }} (
    -- read once per branch of a tick's unions below, each by its own filter
    select * from {{ ref('int_product_interactions') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

{% if is_incremental() %}
{%- set cutoff = incremental_cutoff('last_received_at') -%}
{%- set touched_sql = touched_carts(cutoff, ['add', 'remove', 'cart_view', 'checkout']) -%}
{%- set read_from = earliest(touched_sql, 'read_from') %}
touched as {{ cte_hint('materialized') }} (
    {{ touched_sql | indent(4) }}
),

{%- set new_orders_sql -%}
    -- orders received since the mark, or newly stitched to their buyer
    select user_id, ordered_at from {{ ref('int_orders') }}
    where received_at >= {{ cutoff }}
        and user_id is not null
    union all
    select user_id, ordered_at from {{ ref('int_orders') }}
    where anonymous_id in (
        {{ restitched_anonymous_ids(cutoff) }}
    )
        and user_id is not null
{%- endset -%}
{%- set new_orders_from = earliest(new_orders_sql, 'ordered_at') %}
new_orders as (
    {{ new_orders_sql | indent(4) }}
),

buyers as (
    select user_id, min(ordered_at) as first_new_order_at
    from new_orders
    group by user_id
),

buyer_carts as {{ cte_hint('materialized') }} (
    -- the stored carts a buyer's new orders can convert: those not converted yet, and those
    -- converted by an order no earlier than the first new one (a late report may be earlier).
    -- A cart converted before it keeps its first order, however many the buyer places later.
    -- Two branches of constant filters, which the scan applies before it reads the other
    -- columns: a join condition or an OR would read every column of every stored cart.
    select stored.*
    from {{ this }} as stored
    inner join buyers
        on stored.user_id = buyers.user_id
    where stored.is_converted = false
    {%- if new_orders_from is not none %}
    union all
    select stored.*
    from {{ this }} as stored
    inner join buyers
        on stored.user_id = buyers.user_id
    where stored.converted_at >= {{ new_orders_from }}
        and stored.converted_at >= buyers.first_new_order_at
    {%- endif %}
),

shared_carts as (
    -- carts that another shopper shares with a buyer: the delete is by cart_key, so their
    -- other rows are carried too. Found with a two-column scan; the whole rows are read again
    -- only when there are some (rare)
    select stored.cart_key, stored.user_id
    from {{ this }} as stored
    where stored.cart_key in (select cart_key from buyer_carts)
        and not exists (
            select 1 from buyer_carts
            where buyer_carts.cart_key = stored.cart_key
                and buyer_carts.user_id = stored.user_id
        )
),

stored_carts as (
    select * from buyer_carts
    union all
    select stored.*
    from {{ this }} as stored
    inner join shared_carts
        on stored.cart_key = shared_carts.cart_key
        and stored.user_id = shared_carts.user_id
),

carried as (
    -- a new order may convert a buyer's older carts: carried as stored, conversion re-decided
    select
        cart_key,
        user_id,
        cart_id,
        created_at,
        last_activity_at,
        item_count,
        quantity,
        cart_value,
        currency,
        first_received_at,
        last_received_at
    from stored_carts
    where cart_key not in (select cart_key from touched)
),

activity_events as (
    -- each touched cart's activity
    {{ touched_cart_rows(
        'interactions',
        'received_at',
        read_from,
        "interaction_type in ('add', 'remove', 'cart_view', 'checkout') and user_id is not null",
    ) }}
),

items as (
    -- the items of the touched carts. Each item was received at or after its cart's first
    -- receipt, so none before `read_from`
    {{ touched_cart_rows('cart_items', 'first_received_at', read_from) }}
),

{% else %}

activity_events as (
    -- a full build: every cart's activity; viewing the cart or starting checkout counts too
    select * from interactions
    where interaction_type in ('add', 'remove', 'cart_view', 'checkout')
        and user_id is not null
),

items as (
    select * from cart_items
),

carried as (
    -- a full build recomputes every cart and carries none. The null columns take the types of
    -- the recomputed ones in the union below (the lowest type of each kind is cast).
    select
        cast(null as {{ dbt.type_string() }}) as cart_key,
        cast(null as {{ dbt.type_string() }}) as user_id,
        cast(null as {{ dbt.type_string() }}) as cart_id,
        cast(null as {{ dbt.type_timestamp() }}) as created_at,
        cast(null as {{ dbt.type_timestamp() }}) as last_activity_at,
        cast(null as {{ dbt.type_int() }}) as item_count,
        cast(null as {{ dbt.type_int() }}) as quantity,
        cast(null as {{ dbt.type_int() }}) as cart_value,
        cast(null as {{ dbt.type_string() }}) as currency,
        cast(null as {{ dbt.type_timestamp() }}) as first_received_at,
        cast(null as {{ dbt.type_timestamp() }}) as last_received_at
    where 1 = 0
),
{% endif %}

cart_activity as (
    select
        cart_key,
        user_id,
        max(event_at) as last_activity_at,
        min(received_at) as first_received_at,
        max(received_at) as last_received_at
    from activity_events
    group by cart_key, user_id
),

cart_contents as (
    select
        cart_key,
        user_id,
        sum(case when quantity > 0 then 1 else 0 end) as item_count,
        sum(quantity) as quantity,
        sum(quantity * coalesce(price, 0)) as cart_value,
        max(currency) as currency,
        min(first_added_at) as created_at
    from items
    group by cart_key, user_id
),

recomputed as (
    select
        cart_activity.cart_key,
        cart_activity.user_id,
        case when cart_activity.cart_key like 'user:%' then null else cart_activity.cart_key end
            as cart_id,
        cart_contents.created_at,
        cart_activity.last_activity_at,
        coalesce(cart_contents.item_count, 0) as item_count,
        coalesce(cart_contents.quantity, 0) as quantity,
        coalesce(cart_contents.cart_value, 0) as cart_value,
        cart_contents.currency,
        cart_activity.first_received_at,
        cart_activity.last_received_at
    from cart_activity
    left join cart_contents
        on cart_activity.cart_key = cart_contents.cart_key
        and cart_activity.user_id = cart_contents.user_id
),

carts as (
    select * from recomputed
    union all
    select * from carried
),

conversions as (
    -- the first order placed from this cart, or by its owner after the cart's last change
    select
        carts.cart_key,
        carts.user_id,
        orders.order_id,
        orders.ordered_at,
        row_number() over (
            partition by carts.cart_key, carts.user_id
            order by orders.ordered_at, orders.order_id
        ) as order_rank
    from carts
    inner join orders
        on carts.user_id = orders.user_id
        and (
            carts.cart_id = orders.cart_id
            or carts.last_activity_at <= orders.ordered_at
        )
),

final as (
    select
        carts.cart_key,
        carts.user_id,
        carts.cart_id,
        carts.created_at,
        carts.last_activity_at,
        carts.item_count,
        carts.quantity,
        carts.cart_value,
        carts.currency,
        conversions.order_id as converted_order_id,
        conversions.ordered_at as converted_at,
        conversions.order_id is not null as is_converted,
        carts.first_received_at,
        carts.last_received_at
    from carts
    left join conversions
        on carts.cart_key = conversions.cart_key
        and carts.user_id = conversions.user_id
        and conversions.order_rank = 1
)

select * from final
{# stored in first-receipt order: a tick's delete is bounded by it (bounded_delete_insert) #}
{{ full_build_order('first_received_at') }}
