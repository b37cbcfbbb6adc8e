{{ config(indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id']])) }}

{#- Events about one product carry it in properties; list events carry products[]. -#}
{%- set single_product_events = {
    'Product Viewed': 'view',
    'Product Clicked': 'view',
    'Product Added': 'add',
    'Product Removed': 'remove',
} -%}
{%- set product_list_events = {
    'Product List Viewed': 'list_view',
    'Cart Viewed': 'cart_view',
    'Checkout Started': 'checkout',
    'Order Completed': 'purchase',
} -%}
{%- set all_events = (single_product_events.keys() | list) + (product_list_events.keys() | list) -%}

with

source as (
    {{ deduplicated_source(
        'rudderstack', 'tracks',
        where="raw_events.event in ('" ~ all_events | join("', '") ~ "')"
    ) }}
),

single_products as (
    select
        source.*,
        0 as product_index,
        source.properties as product
    from source
    -- (LT05 below: sqlfluff counts a quoted list that Jinja completes as one overlong line)
    where source.event in ('{{ single_product_events.keys() | join("', '") }}')  -- noqa: LT05
),

listed_products as (
    select
        source.*,
        json_elements.element_index as product_index,
        json_elements.element as product
    from source
    {{ json_array_rows(json_get('source.properties', ['products'])) }}
    where source.event in ('{{ product_list_events.keys() | join("', '") }}')  -- noqa: LT05
),

products as (
    select * from single_products
    union all
    select * from listed_products
),

renamed as (
    select
        message_id,
        product_index,
        event as event_name,
        case event
            {%- for name, kind in
                (single_product_events.items() | list) + (product_list_events.items() | list) %}
            when '{{ name }}' then '{{ kind }}'
            {%- endfor %}
        end as interaction_type,
        anonymous_id,
        user_id,
        {{ event_time('products') }} as event_at,
        original_timestamp,
        received_at,
        {{ json_text('properties', ['cart_id']) }} as cart_id,
        {{ json_text('properties', ['order_id']) }} as order_id,
        coalesce({{ json_text('product', ['product_id']) }}, {{ json_text('product', ['sku']) }})
            as product_id,
        {{ json_text('product', ['sku']) }} as sku,
        {{ client_text(json_text('product', ['name']), 300) }} as product_name,
        {{ client_text(json_text('product', ['brand']), 200) }} as brand,
        {{ client_text(json_text('product', ['category']), 200) }} as category,
        {{ client_number(json_text('product', ['price']), 0, var('max_price')) }} as price,
        -- absent, or no real quantity: one
        coalesce(
            {{ client_number(json_text('product', ['quantity']), 0, var('max_quantity')) }}, 1
        ) as quantity,
        upper(left(coalesce(
            {{ json_text('product', ['currency']) }}, {{ json_text('properties', ['currency']) }}
        ), 3)) as currency,
        {{ client_text(json_text('product', ['url']), 2048) }} as product_url,
        {{ client_text(json_text('product', ['image_url']), 2048) }} as image_url,
        -- what the client sent, for `quarantined_values`
        {{ client_text(json_text('product', ['price']), 100) }} as price_text,
        {{ client_text(json_text('product', ['quantity']), 100) }} as quantity_text
    from products
)

select * from renamed
where product_id is not null
{{ full_build_order('received_at') }}
