{#-
    The target's send ledger. Before the first send it does not exist (no DuckDB file, or no
    table yet): the model then reads as an empty ledger with the same columns, so triggers and
    performance never depend on the target having run.

    Ephemeral, not a view: whether the ledger exists is decided when a reader compiles, so the
    first tick after the first send sees the ledger (a view would keep its empty form until
    rebuilt, and the tick rebuilds no views).
-#}
{{ config(materialized='ephemeral') }}
{%- set ledger = source('signalmail_ledger', 'send_ledger') -%}
{%- set found = none -%}
{%- set has_due_at = false -%}
{%- if execute -%}
{%- set found = adapter.get_relation(
    database=ledger.database, schema=ledger.schema, identifier=ledger.identifier
) -%}
{%- if found is not none -%}
{%- set columns = adapter.get_columns_in_relation(found)
    | map(attribute='name') | map('lower') | list -%}
{%- set has_due_at = 'due_at' in columns -%}
{%- endif -%}
{%- endif -%}

with

{% if found is not none %}
source as (
    -- a ledger written before due_at existed reads as having none
    select
        *{% if not has_due_at %},
        cast(null as {{ dbt.type_timestamp() }}) as due_at{% endif %}
    from {{ ledger }}
),
{% else %}
source as (
    select
        cast(null as {{ dbt.type_string() }}) as trigger_id,
        cast(null as {{ dbt.type_string() }}) as campaign,
        cast(null as {{ dbt.type_string() }}) as user_id,
        cast(null as {{ dbt.type_string() }}) as email,
        cast(null as {{ dbt.type_string() }}) as variant,
        cast(null as {{ dbt.type_string() }}) as template,
        cast(null as {{ dbt.type_string() }}) as state,
        cast(null as {{ dbt.type_string() }}) as reject_reason,
        cast(null as {{ dbt.type_string() }}) as error,
        cast(null as {{ dbt.type_string() }}) as mandrill_id,
        cast(null as {{ dbt.type_int() }}) as attempts,
        cast(null as {{ dbt.type_timestamp() }}) as created_at,
        cast(null as {{ dbt.type_timestamp() }}) as updated_at,
        cast(null as {{ dbt.type_timestamp() }}) as sent_at,
        cast(null as {{ dbt.type_timestamp() }}) as due_at
    where 1 = 0
),
{% endif %}

renamed as (
    select
        trigger_id,
        campaign,
        user_id,
        nullif(lower(trim(email)), '') as email,
        variant,
        template,
        lower(state) as send_state,
        reject_reason,
        mandrill_id,
        attempts,
        created_at,
        updated_at,
        sent_at,
        due_at
    from source
)

select * from renamed
