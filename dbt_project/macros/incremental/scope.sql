{#-
    What a tick reads: its cutoff, and the keys (users, carts, anonymous ids) whose rows changed
    since. Docs: scope.yml.
-#}

{% macro incremental_cutoff(column='received_at') -%}
    {%- if not execute -%}
        {{ return(timestamp_literal(none)) }}
    {%- endif -%}
    {#- in seconds, so a fraction of a minute works: the watch loop uses 10 s -#}
    {%- set lookback_seconds = (var('lookback_minutes') * 60) | round | int -%}
    {%- set query -%}
        select {{ dbt.dateadd('second', -1 * lookback_seconds, 'max(' ~ column ~ ')') }}
        from {{ this }}
    {%- endset -%}
    {{ return(timestamp_literal(run_query(query).columns[0].values()[0])) }}
{%- endmacro %}


{% macro touched_users(cutoff) -%}
    select user_id from {{ ref('int_events') }}
    where received_at >= {{ cutoff }}
        and user_id is not null
    union
    select user_id from {{ ref('int_identity_map') }}
    where linked_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro touched_carts(cutoff, interaction_types) -%}
    {%- set types = "'" ~ interaction_types | join("', '") ~ "'" -%}
    with

    changed as (
        {{ received_or_restitched(
            ref('int_product_interactions'),
            cutoff,
            columns='cart_key, received_at',
            where='interaction_type in (' ~ types ~ ') and user_id is not null',
        ) | indent(8) }}
    ),

    changed_carts as (
        select cart_key, min(received_at) as changed_from
        from changed
        group by cart_key
    ),

    stored_carts as (
        select cart_key, min(first_received_at) as stored_from
        from {{ this }}
        where cart_key in (select cart_key from changed_carts)
        group by cart_key
    )

    select
        changed_carts.cart_key,
        case
            when stored_carts.stored_from < changed_carts.changed_from
                then stored_carts.stored_from
            else coalesce(changed_carts.changed_from, stored_carts.stored_from)
        end as read_from
    from changed_carts
    left join stored_carts
        on changed_carts.cart_key = stored_carts.cart_key
{%- endmacro %}


{% macro restitched_anonymous_ids(cutoff) -%}
    select anonymous_id from {{ ref('int_identity_map') }}
    where linked_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro received_or_restitched(relation, cutoff, columns='*', where=none, unresolved_only=false) -%}
    select {{ columns }}
    from {{ relation }}
    where received_at >= {{ cutoff }}
        {% if where %}and {{ where }}{% endif %}
    union all
    select {{ columns }}
    from {{ relation }}
    where (received_at < {{ cutoff }} or received_at is null)
        {% if where %}and {{ where }}{% endif %}
        {% if unresolved_only %}and user_id is null{% endif %}
        and anonymous_id in (
            {{ restitched_anonymous_ids(cutoff) }}
        )
{%- endmacro %}


{% macro touched_cart_rows(relation, column, bound, where='true') -%}
    select {{ relation }}.*
    from {{ relation }}
    inner join touched
        on {{ relation }}.cart_key = touched.cart_key
    where {{ where }}
    {%- if bound is none %}
        and 1 = 0
    {%- else %}
        and {{ relation }}.{{ column }} >= {{ bound }}
    union all
    select {{ relation }}.*
    from {{ relation }}
    inner join touched
        on {{ relation }}.cart_key = touched.cart_key
    where {{ where }}
        and {{ relation }}.{{ column }} is null
    {%- endif %}
{%- endmacro %}


{% macro earliest(sql, column) -%}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set value = run_query(
        'select min(' ~ column ~ ')\nfrom (\n' ~ sql ~ '\n) as rows_read'
    ).columns[0].values()[0] -%}
    {{ return(timestamp_literal(value) if value is not none else none) }}
{%- endmacro %}
