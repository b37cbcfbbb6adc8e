{#- Time-zone conversion between naive UTC and naive local wall-clock time. -#}

{% macro utc_to_local(utc_timestamp, timezone) -%}
    {{ return(adapter.dispatch('utc_to_local', 'signalmail')(utc_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__utc_to_local(utc_timestamp, timezone) -%}
    (({{ utc_timestamp }} at time zone 'UTC') at time zone {{ timezone }})
{%- endmacro %}

{% macro spark__utc_to_local(utc_timestamp, timezone) -%}
    from_utc_timestamp({{ utc_timestamp }}, {{ timezone }})
{%- endmacro %}


{% macro local_to_utc(local_timestamp, timezone) -%}
    {{ return(adapter.dispatch('local_to_utc', 'signalmail')(local_timestamp, timezone)) }}
{%- endmacro %}

{% macro default__local_to_utc(local_timestamp, timezone) -%}
    (({{ local_timestamp }} at time zone {{ timezone }}) at time zone 'UTC')
{%- endmacro %}

{% macro spark__local_to_utc(local_timestamp, timezone) -%}
    to_utc_timestamp({{ local_timestamp }}, {{ timezone }})
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

{% macro spark__known_timezones() -%}
    {#-
        Spark has no catalogue of zone names: the IANA names pytz (in dbt's context) lists as
        common, every one of which Java's time-zone database knows.
    -#}
    (
        select explode(array(
            {%- for name in modules.pytz.common_timezones %}
            '{{ name }}'{{ ',' if not loop.last }}
            {%- endfor %}
        )) as timezone_name
    ) as known_timezones
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

{% macro spark__epoch_seconds(timestamp) -%}
    (unix_micros({{ timestamp }}) / 1000000.0)
{%- endmacro %}


{% macro spark__dateadd(datepart, interval, from_date_or_timestamp) -%}
    {#-
        Overrides dbt-spark's dateadd (the root project's wins), which adds seconds to
        to_unix_timestamp() and so drops the fraction of a second: a cart idle "60 minutes
        after 10:00:00.250" became due at 11:00:00.000. timestampadd keeps microseconds.
    -#}
    timestampadd({{ datepart }}, {{ interval }}, {{ from_date_or_timestamp }})
{%- endmacro %}


{% macro after_quiet_hours(local_timestamp) -%}
    {#- The local time itself, or the end of quiet hours when it falls inside them. -#}
    {%- set quiet_start = var('quiet_hours_start') | int -%}
    {%- set quiet_end = var('quiet_hours_end') | int -%}
    {%- if quiet_start == quiet_end -%}
        {{ local_timestamp }}
    {%- else -%}
    case
        {%- if quiet_start > quiet_end %}
        when extract(hour from {{ local_timestamp }}) >= {{ quiet_start }}
            then {{ dbt.dateadd('hour', quiet_end + 24, dbt.date_trunc('day', local_timestamp)) }}
        when extract(hour from {{ local_timestamp }}) < {{ quiet_end }}
            then {{ dbt.dateadd('hour', quiet_end, dbt.date_trunc('day', local_timestamp)) }}
        {%- else %}
        when extract(hour from {{ local_timestamp }}) >= {{ quiet_start }}
            and extract(hour from {{ local_timestamp }}) < {{ quiet_end }}
            then {{ dbt.dateadd('hour', quiet_end, dbt.date_trunc('day', local_timestamp)) }}
        {%- endif %}
        else {{ local_timestamp }}
    end
    {%- endif -%}
{%- endmacro %}
