{{ config(tags=['nightly']) }}

{%- set weights = var('intent_weights') -%}

with

interactions as (
    select * from {{ ref('int_product_interactions') }}
),

similarity as (
    select * from {{ ref('int_item_similarity') }}
),

products as (
    select * from {{ ref('int_products') }}
),

order_items as (
    select * from {{ ref('int_order_items') }}
),

seeds as (
    -- what each identified user showed interest in, weighted like the intent score
    select
        user_id,
        product_id,
        max(case interaction_type
            {%- for kind, weight in weights.items() if weight > 0 %}
            when '{{ kind }}' then {{ weight }}
            {%- endfor %}
            when 'purchase' then {{ weights.get('checkout', 5) }}
            else 0
        end) as seed_weight
    from interactions
    where user_id is not null
        and event_at >= {{ dbt.dateadd(
            'day', -1 * var('recommendation_lookback_days'), now_utc()
        ) }}
    group by user_id, product_id
),

bought as (
    select distinct
        user_id,
        product_id
    from order_items
    where user_id is not null
),

candidates as (
    select
        seeds.user_id,
        similarity.related_product_id as product_id,
        sum(seeds.seed_weight * similarity.similarity) as score
    from seeds
    inner join similarity
        on seeds.product_id = similarity.product_id
    left join bought
        on seeds.user_id = bought.user_id
        and similarity.related_product_id = bought.product_id
    where bought.product_id is null
    group by seeds.user_id, similarity.related_product_id
),

ranked as (
    select
        user_id,
        product_id,
        score,
        row_number() over (
            partition by user_id order by score desc, product_id asc
        ) as recommendation_rank
    from candidates
),

final as (
    select
        ranked.user_id,
        ranked.recommendation_rank,
        ranked.product_id,
        {{ rounded('ranked.score', 6) }} as score,
        products.product_name,
        products.brand,
        products.category,
        products.price,
        products.currency,
        products.product_url,
        products.image_url
    from ranked
    inner join products
        on ranked.product_id = products.product_id
    where ranked.recommendation_rank <= {{ var('recommendations_per_user') }}
)

select * from final
