{#-
    The purchase probabilities `signalmail intent train` writes after the nightly build. Before
    the first training the table does not exist: the model then reads as empty, and every
    purchase_probability downstream is null (a campaign's min_purchase_probability then lets
    everyone through: no model, no filter).

    Ephemeral, like the send ledger, so the first tick after a training sees the scores.
-#}
{{ config(materialized='ephemeral') }}
{%- set scores = source('signalmail_intent', 'purchase_scores') -%}
{%- set found = none -%}
{%- if execute -%}
    {%- set found = adapter.get_relation(
        database=scores.database, schema=scores.schema, identifier=scores.identifier
    ) -%}
{%- endif -%}

with

{% if found is not none %}
source as (
    select * from {{ scores }}
),
{% else %}
source as (
    select
        cast(null as {{ dbt.type_string() }}) as user_id,
        cast(null as {{ dbt.type_float() }}) as purchase_probability,
        cast(null as {{ dbt.type_string() }}) as model_version,
        cast(null as {{ dbt.type_timestamp() }}) as scored_at
    where 1 = 0
),
{% endif %}

renamed as (
    select
        user_id,
        cast(purchase_probability as {{ dbt.type_float() }}) as purchase_probability,
        model_version,
        scored_at
    from source
)

select * from renamed
