{#-
    One row per message_id from a raw stream, incrementally. Docs: deduplication.yml.
-#}

{% macro deduplicated_source(source_name, table_name, where=none) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- set filters -%}
        raw_events.message_id is not null
        {% if where %}and {{ where }}{% endif %}
    {%- endset -%}
    {%- if is_incremental() -%}
        {%- set cutoff = incremental_cutoff() -%}
        {%- set copies_from = earliest_original_timestamp(relation, filters, cutoff) -%}
    {%- endif %}
    select * from (
        select
            raw_events.*,
            row_number() over (
                partition by raw_events.message_id
                order by raw_events.received_at, raw_events._spool_key, raw_events._spool_line
            ) as copy_number
        from {{ relation }} as raw_events
        where {{ filters }}
            {% if is_incremental() %}
            and raw_events.received_at >= {{ cutoff }}
            {% endif %}
    ) as numbered
    where copy_number = 1
    {% if is_incremental() %}
        and not exists (
            select 1
            from {{ this }} as stored
            where stored.message_id = numbered.message_id
                and stored.received_at < {{ cutoff }}
                {% if copies_from is not none %}
                and stored.original_timestamp >= {{ copies_from }}
                {% endif %}
        )
    {% endif %}
{%- endmacro %}


{% macro earliest_original_timestamp(relation, filters, cutoff) -%}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set query -%}
        select
            min(raw_events.original_timestamp),
            count(*),
            count(*) - count(raw_events.original_timestamp)
        from {{ relation }} as raw_events
        where {{ filters }}
            and raw_events.received_at >= {{ cutoff }}
    {%- endset -%}
    {%- set row = run_query(query).rows[0] -%}
    {%- if row[1] == 0 -%}
        {{ return(cutoff) }}
    {%- elif row[2] > 0 -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(timestamp_literal(row[0])) }}
{%- endmacro %}
