{#- Time-zone conversion between naive UTC and naive local wall-clock time. -#}

{% macro utc_to_local(utc_timestamp, timezone) -%}
    {{ return(adapter.dispatch('utc_to_local', 'signalmail')(utc_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__utc_to_local(utc_timestamp, timezone) -%}
    (({{ utc_timestamp }} at time zone 'UTC') at time zone {{ timezone }})
{%- endmacro %}


{% macro local_to_utc(local_timestamp, timezone) -%}
    {{ return(adapter.dispatch('local_to_utc', 'signalmail')(local_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__local_to_utc(local_timestamp, timezone) -%}
    (({{ local_timestamp }} at time zone {{ timezone }}) at time zone 'UTC')
{%- endmacro %}


{% macro known_timezones() -%}
    {{ return(adapter.dispatch('known_timezones', 'signalmail')()) }}
{%- endmacro %}

{% macro default__known_timezones() -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('known_timezones')) }}
{%- endmacro %}

{% macro postgres__known_timezones() -%}
    (select name as timezone_name from pg_timezone_names) as known_timezones
{%- endmacro %}

{% macro duckdb__known_timezones() -%}
    (select name as timezone_name from pg_timezone_names()) as known_timezones
{%- endmacro %}


{% macro epoch_seconds(timestamp) -%}
    {{ return(adapter.dispatch('epoch_seconds', 'signalmail')(timestamp)) }}
{%- endmacro %}

{% macro default__epoch_seconds(timestamp) -%}
    {{ exceptions.raise_compiler_error(unsupported_adapter('epoch_seconds')) }}
{%- endmacro %}

{% macro postgres__epoch_seconds(timestamp) -%}
    extract(epoch from {{ timestamp }})
{%- endmacro %}

{% macro duckdb__epoch_seconds(timestamp) -%}
    epoch({{ timestamp }})
{%- endmacro %}

