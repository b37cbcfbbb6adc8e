{#-
    Near-real-time incremental helpers (see docs/signals.md, "How incremental works").

    Event-grain models keep a high-water mark on received_at and reprocess `lookback_minutes`
    before it; state models recompute every user touched at or after their own mark.
-#}

{% macro incremental_cutoff(column='received_at') -%}
    {#-
        The high-water mark of {{ this }} on `column` minus the lookback, as a timestamp literal.

        Read with one query when the model compiles and inlined as a constant, never as a
        subquery: a constant lets DuckDB skip row groups by their min/max (zone maps) and
        Postgres use an index, so a tick reads the newest rows instead of scanning all of
        history. A subquery is only evaluated at run time, after the scan is planned.
    -#}
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


{% macro full_build_order(column) -%}
    {#-
        Ends the select of a table that ticks read or delete through a range on `column`: on a
        full build, its rows are stored in that order. DuckDB answers a range by skipping row
        groups whose min/max lie outside it (zone maps), and that only works if rows sit
        roughly in `column` order. Incremental appends keep that order by themselves (event
        tables by received_at, sessions by started_at: a tick writes the newest); a full build
        computed through window functions and joins scatters it, and every later tick then
        read every row group (0.1-0.3 s per scan at 5M events).
    -#}
    {%- if not is_incremental() -%}
    order by {{ column }}
    {%- endif -%}
{%- endmacro %}


{% macro timestamp_literal(value) -%}
    {#- A timestamp read from the warehouse as a literal; none is the beginning of time. -#}
    {%- set text = value.strftime('%Y-%m-%d %H:%M:%S.%f') if value is not none else '1900-01-01 00:00:00' -%}
    {{ return("cast('" ~ text ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}


{% macro get_incremental_bounded_delete_insert_sql(arg_dict) -%}
    {#-
        Strategy `bounded_delete_insert`: delete+insert on `unique_key`, whose delete also
        carries `<delete_bound> >= <the smallest delete_bound among the new rows>` as a literal,
        with a second delete for the keys' stored rows whose bound is null.

        For models where a key's stored rows never have an earlier bound than the new rows
        that replace them, so the bound loses no row to delete:
        - keyed by message (staging, events): a message's stored row never has an earlier
          received_at than its new row (staging keeps the earliest copy and only looks at
          copies received since the cutoff);
        - carts (`first_received_at`): a touched cart is rebuilt from every event received
          since the first receipt of any of its stored rows (touched_carts()), so each stored
          row's events are read again and its new row starts no later; a carried row is
          inserted as stored.
        On DuckDB, which has no index a delete by key can use, the delete then reads only the
        row groups whose min/max reach the bound (zone maps; the table is stored in bound
        order, full_build_order()) instead of every stored key; on Postgres the key's index
        serves either way. A null bound is not covered by the range, hence the second delete,
        which DuckDB answers from its per-row-group null statistics. A new row with a null
        bound, or no new row at all, leaves the delete unbounded. The bound is the smallest
        among all new rows: one old cart carried in a tick (int_carts re-decides a buyer's
        stored carts) widens it for the whole delete.
    -#}
    {%- set column = config.require('delete_bound') -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if key is not string -%}
        {{ exceptions.raise_compiler_error(
            "bounded_delete_insert needs a single-column unique_key, got " ~ key ~ " in " ~ this
        ) }}
    {%- endif -%}
    {%- set predicates = [] + (arg_dict['incremental_predicates'] or []) -%}
    {%- set query -%}
        select min({{ column }}), count(*) - count({{ column }}) from {{ arg_dict['temp_relation'] }}
    {%- endset -%}
    {%- set row = run_query(query).rows[0] -%}
    {%- if row[0] is none or row[1] > 0 -%}
        {{ return(get_incremental_delete_insert_sql(arg_dict)) }}
    {%- endif -%}
    {%- do predicates.append(column ~ ' >= ' ~ timestamp_literal(row[0])) -%}
    {%- do arg_dict.update({'incremental_predicates': predicates}) -%}
    delete from {{ arg_dict['target_relation'] }}
    where {{ key }} in (select {{ key }} from {{ arg_dict['temp_relation'] }})
        and {{ column }} is null;
    {{ get_incremental_delete_insert_sql(arg_dict) }}
{%- endmacro %}


{% macro get_incremental_tail_replace_sql(arg_dict) -%}
    {#-
        Strategy `tail_replace`: for each `unique_key` value among the new rows, replace the
        stored rows whose `tail_column` is at or after the smallest `tail_column` of that key's
        new rows; earlier stored rows stay.

        For state folded forward from a point in time (int_sessions: a user's sessions from the
        first one a change can touch), where delete+insert on the key would drop the history
        that was kept on purpose, and delete+insert on the row's own key would leave behind rows
        that the rebuild no longer produces (two sessions merged by a late event). The delete
        also carries `tail_column >= <the smallest among all new rows>` as a literal, so that
        on a table stored in `tail_column` order (full_build_order()) it reads the newest row
        groups, not every stored key.
    -#}
    {%- set column = config.require('tail_column') -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if key is not string -%}
        {{ exceptions.raise_compiler_error(
            "tail_replace needs a single-column unique_key, got " ~ key ~ " in " ~ this
        ) }}
    {%- endif -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set dest_cols_csv = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {#- the smallest replaced_from of all keys, as a literal: lets the delete skip row groups -#}
    {%- set replaced_from = earliest('select ' ~ column ~ ' from ' ~ source, column) -%}
    delete from {{ target }} as stored
    where {% if replaced_from is not none -%}
        stored.{{ column }} >= {{ replaced_from }}
        and {% endif -%}
    exists (
        select 1
        from (
            select {{ key }}, min({{ column }}) as replaced_from
            from {{ source }}
            group by {{ key }}
        ) as replaced
        where replaced.{{ key }} = stored.{{ key }}
            and stored.{{ column }} >= replaced.replaced_from
    );

    insert into {{ target }} ({{ dest_cols_csv }})
    (
        select {{ dest_cols_csv }}
        from {{ source }}
    )
{%- endmacro %}


{% macro touched_carts(cutoff, interaction_types) -%}
    {#-
        Carts whose events of `interaction_types` changed at or after `cutoff` (new rows, and
        rows of anonymous ids stitched to a user since), with `read_from`: the earliest receipt
        among their changed events and the events already folded into {{ this }} (its column
        `first_received_at`). Every event of such a cart was received at or after `read_from`.
    -#}
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


{% macro earliest(sql, column) -%}
    {#-
        The smallest `column` of a query's rows as a timestamp literal, read when the model
        compiles (so that a scan can skip older row groups); none if there are no rows.
    -#}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set value = run_query(
        'select min(' ~ column ~ ')\nfrom (\n' ~ sql ~ '\n) as rows_read'
    ).columns[0].values()[0] -%}
    {{ return(timestamp_literal(value) if value is not none else none) }}
{%- endmacro %}


{% macro touched_users(cutoff) -%}
    {#-
        Users whose history changed at or after `cutoff`: a new event of theirs (directly or via
        a stitched anonymous id), or a newly stitched anonymous id whose past events join them.
    -#}
    select user_id from {{ ref('int_events') }}
    where received_at >= {{ cutoff }}
        and user_id is not null
    union
    select user_id from {{ ref('int_identity_map') }}
    where linked_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro deduplicated_source(source_name, table_name, where=none) -%}
    {#-
        The rows of a raw stream, one per message_id (the earliest received copy: SDK retries and
        append-mode loads duplicate). Incrementally only the rows received since the cutoff, minus
        messages whose first copy is already stored from before it.

        That check would read every stored message id (DuckDB has no index a join can use), so
        it is bounded by original_timestamp: the SDK sets it once when the event is created, and
        every copy of a message (a retry, a reloaded file) carries the same one, while
        received_at differs between copies. Stored copies older than the new rows' earliest
        original_timestamp cannot match; their row groups are skipped. A new row without
        original_timestamp leaves the check unbounded.
    -#}
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
    {#-
        The smallest original_timestamp among the raw rows (`relation` as raw_events, matching
        `filters`) received since `cutoff`, as a literal; none if one of them has none (no
        bound can be drawn). With no new rows at all there is nothing to check, and the cutoff
        itself serves.
    -#}
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


{% macro attach_send_ledger() -%}
    {{ return(adapter.dispatch('attach_send_ledger', 'signalmail')()) }}
{%- endmacro %}

{% macro default__attach_send_ledger() -%}
    {#- Postgres, Snowflake, BigQuery: the ledger lives in the warehouse itself. -#}
    select 1
{%- endmacro %}

{% macro duckdb__attach_send_ledger() -%}
    {#-
        The target writes the ledger into its own DuckDB file (one writer per file). Attach it
        read-only when it exists; before the first send there is no file, and the staging model
        then reads an empty ledger instead (see stg_signalmail__send_ledger).

        Detached and attached again on every invocation: a read-only attachment keeps the file
        as it was when attached, and a long-lived dbt process (`signalmail watch`) must see the
        sends the target recorded since its last tick.
    -#}
    {%- set path = env_var('SIGNALMAIL_LEDGER_PATH', '../data/ledger.duckdb') -%}
    {%- set alias = ledger_database() -%}
    {%- if execute -%}
        {%- set found = run_query("select count(*) from glob('" ~ path | replace("'", "''") ~ "')") -%}
        detach database if exists {{ alias }};
        {%- if found.columns[0].values()[0] > 0 %}
        attach '{{ path | replace("'", "''") }}' as {{ alias }} (read_only)
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{% macro detach_send_ledger() -%}
    {#- on-run-end: let go of the ledger file, so the target can write it between dbt runs. -#}
    {{ return(adapter.dispatch('detach_send_ledger', 'signalmail')()) }}
{%- endmacro %}

{% macro default__detach_send_ledger() -%}
    select 1
{%- endmacro %}

{% macro duckdb__detach_send_ledger() -%}
    detach database if exists {{ ledger_database() }}
{%- endmacro %}


{% macro ledger_database() -%}
    {#- Catalog holding the send ledger: the attached file on DuckDB, the warehouse elsewhere. -#}
    {{ return(adapter.dispatch('ledger_database', 'signalmail')()) }}
{%- endmacro %}

{% macro default__ledger_database() -%}
    {{ return(var('ledger_database', target.database)) }}
{%- endmacro %}

{% macro duckdb__ledger_database() -%}
    {{ return(var('ledger_database', 'signalmail_ledger_db')) }}
{%- endmacro %}


{% macro restitched_anonymous_ids(cutoff) -%}
    {#-
        Anonymous ids whose identity link changed at or after `cutoff`: their stored events must
        be resolved again (a late identify or alias re-attributes earlier anonymous activity).
    -#}
    select anonymous_id from {{ ref('int_identity_map') }}
    where linked_received_at >= {{ cutoff }}
{%- endmacro %}


{% macro received_or_restitched(relation, cutoff, columns='*', where=none, unresolved_only=false) -%}
    {#-
        The rows of `relation` a tick must (re)process: those received at or after `cutoff`,
        and older ones of anonymous ids whose identity link changed since (re-attribution).
        `where` filters both; `unresolved_only` keeps only re-attributed rows that carry no
        user_id of their own (raw rows, whose user comes from the identity map).

        Two branches, not one OR: the first is a range on received_at that skips every older
        row group (DuckDB zone maps, the Postgres index); an OR would read the whole history.
    -#}
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


{% macro rows_since(relation, column, bound, where) -%}
    {#-
        The rows of `relation` matching `where` whose `column` is at or after `bound` (a
        timestamp literal, from earliest()), and those where it is null; no rows when `bound`
        is none (nothing was touched).

        Two branches, not one OR: DuckDB applies a constant range inside the scan, skipping
        row groups by their min/max and decoding the other columns only of the rows that pass;
        `(column >= bound or column is null)` is applied after every column of every row is
        decoded (0.037 s against 0.015 s on the 320,000 stored carts of 5M events).
    -#}
    select * from {{ relation }}
    where {{ where }}
    {%- if bound is none %}
        and 1 = 0
    {%- else %}
        and {{ column }} >= {{ bound }}
    union all
    select * from {{ relation }}
    where {{ where }}
        and {{ column }} is null
    {%- endif %}
{%- endmacro %}


{% macro cte_hint(hint) -%}
    {#-
        `materialized` or `not materialized` before a CTE's body, where the engine takes it.
        `materialized`: compute once a CTE that is read several times (the touched users).
        `not materialized`: keep a CTE read twice inlined into each reader, so each reader's
        filter reaches the tables and their indexes (Postgres 12+ would compute it in full).
    -#}
    {{ return(adapter.dispatch('cte_hint', 'signalmail')(hint)) }}
{%- endmacro %}

{% macro default__cte_hint(hint) -%}
{%- endmacro %}

{% macro duckdb__cte_hint(hint) -%}
    {{ hint }}
{%- endmacro %}

{% macro postgres__cte_hint(hint) -%}
    {{ hint }}
{%- endmacro %}

{% macro snowflake__cte_hint(hint) -%}
    {#- Snowflake decides materialisation itself -#}
{%- endmacro %}

{% macro bigquery__cte_hint(hint) -%}
    {#- BigQuery has no CTE materialisation hint -#}
{%- endmacro %}


{% macro postgres_indexes(column_sets) -%}
    {#-
        The `indexes` config of an incremental model, on Postgres only. A tick finds its rows by
        key (delete+insert, the anti-join against stored copies, a touched user's history) and
        by the high-water mark; without indexes Postgres scans all of history for each. DuckDB
        needs none (zone maps on received_at; its ART indexes would slow every delete+insert).
    -#}
    {%- set indexes = [] -%}
    {%- if target.type == 'postgres' -%}
        {%- for columns in column_sets -%}
            {%- do indexes.append({'columns': columns}) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(indexes) }}
{%- endmacro %}
