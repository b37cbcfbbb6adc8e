{{
    config(
        materialized='incremental' if target.type == 'postgres' else 'ephemeral',
        incremental_strategy='bounded_delete_insert',
        unique_key='message_id',
        delete_bound='received_at',
        indexes=postgres_indexes([['message_id'], ['received_at'], ['anonymous_id'], ['searched_at']]),
    )
}}

{#-
    A table on Postgres, ephemeral elsewhere, for the reason int_product_engagement gives: two
    rules read it, so Postgres materialized every search of the history on every tick before
    either kept its window.
-#}

{%- set is_search -%}
event_name = 'Products Searched' and search_query is not null
{%- endset %}

with

tracks as (
    {% if is_incremental() %}
    {{ received_or_restitched(
        ref('stg_rudderstack__tracks'), incremental_cutoff(), where=is_search, unresolved_only=true
    ) }}
    {% else %}
    select * from {{ ref('stg_rudderstack__tracks') }}
    where {{ is_search }}
    {% endif %}
),

identity_map as (
    select * from {{ ref('int_identity_map') }}
),

searches as (
    select
        tracks.message_id,
        coalesce(tracks.user_id, identity_map.user_id) as user_id,
        tracks.anonymous_id,
        lower(tracks.search_query) as search_term,
        tracks.event_at as searched_at,
        tracks.received_at
    from tracks
    left join identity_map
        on tracks.anonymous_id = identity_map.anonymous_id
)

select * from searches
