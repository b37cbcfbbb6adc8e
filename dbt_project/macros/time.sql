{#- Time-zone conversion between naive UTC and naive local wall-clock time. -#}

{% macro utc_to_local(utc_timestamp, timezone) -%}
    {{ return(adapter.dispatch('utc_to_local', 'signalmail')(utc_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__utc_to_local(utc_timestamp, timezone) -%}
    (({{ utc_timestamp }} at time zone 'UTC') at time zone {{ timezone }})
{%- endmacro %}

{% macro snowflake__utc_to_local(utc_timestamp, timezone) -%}
    convert_timezone('UTC', {{ timezone }}, {{ utc_timestamp }})
{%- endmacro %}

{% macro bigquery__utc_to_local(utc_timestamp, timezone) -%}
    datetime(timestamp({{ utc_timestamp }}, 'UTC'), {{ timezone }})
{%- endmacro %}


{% macro local_to_utc(local_timestamp, timezone) -%}
    {{ return(adapter.dispatch('local_to_utc', 'signalmail')(local_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__local_to_utc(local_timestamp, timezone) -%}
    (({{ local_timestamp }} at time zone {{ timezone }}) at time zone 'UTC')
{%- endmacro %}

{% macro snowflake__local_to_utc(local_timestamp, timezone) -%}
    convert_timezone({{ timezone }}, 'UTC', {{ local_timestamp }})
{%- endmacro %}

{% macro bigquery__local_to_utc(local_timestamp, timezone) -%}
    datetime(timestamp({{ local_timestamp }}, {{ timezone }}), 'UTC')
{%- endmacro %}


{% macro known_timezones() -%}
    {#- A relation with one column `timezone_name` listing the IANA names the engine can convert. -#}
    {{ return(adapter.dispatch('known_timezones', 'signalmail')()) }}
{%- endmacro %}

{% macro default__known_timezones() -%}
    (select name as timezone_name from pg_timezone_names) as known_timezones
{%- endmacro %}

{% macro duckdb__known_timezones() -%}
    (select name as timezone_name from pg_timezone_names()) as known_timezones
{%- endmacro %}

{% macro snowflake__known_timezones() -%}
    {#- Snowflake has no catalog of zones; trust the IANA shape and let convert_timezone decide. -#}
    (select null as timezone_name where false) as known_timezones
{%- endmacro %}

{% macro bigquery__known_timezones() -%}
    (select null as timezone_name where false) as known_timezones
{%- endmacro %}


{% macro epoch_seconds(timestamp) -%}
    {#- Seconds since 1970 of a naive UTC timestamp: for decay weights, never for thresholds. -#}
    {{ return(adapter.dispatch('epoch_seconds', 'signalmail')(timestamp)) }}
{%- endmacro %}

{% macro default__epoch_seconds(timestamp) -%}
    extract(epoch from {{ timestamp }})
{%- endmacro %}

{% macro duckdb__epoch_seconds(timestamp) -%}
    epoch({{ timestamp }})
{%- endmacro %}

{% macro snowflake__epoch_seconds(timestamp) -%}
    date_part(epoch_second, {{ timestamp }})
{%- endmacro %}

{% macro bigquery__epoch_seconds(timestamp) -%}
    unix_seconds(timestamp({{ timestamp }}))
{%- endmacro %}
