{% macro campaign_setting(campaign_column, setting, optional=false) -%}
    {#-
        A per-campaign setting from var('campaigns') as a SQL case expression. A required
        setting missing from a campaign fails the build; an `optional` one reads as null
        ("not set") where a campaign leaves it out.
    -#}
    case {{ campaign_column }}
        {%- for name, settings in var('campaigns').items() %}
        {%- set value = settings.get(setting) if optional else settings[setting] %}
        when '{{ name }}' then {{ 'null' if value is none else value }}
        {%- endfor %}
    end
{%- endmacro %}


{% macro trigger_id(parts) -%}
    {#-
        Deterministic id of a trigger situation: md5 of its defining parts joined with '|'.
        The same cart state, the same order, the same week gives the same id on every run.
        Timestamps are cast to text, which both DuckDB and Postgres render as ISO 8601.
    -#}
    {%- set pieces = [] -%}
    {%- for part in parts -%}
        {%- do pieces.append("coalesce(cast(" ~ part ~ " as " ~ dbt.type_string() ~ "), '')") -%}
        {%- if not loop.last %}{% do pieces.append("'|'") %}{% endif -%}
    {%- endfor -%}
    {{ dbt.hash(dbt.concat(pieces)) }}
{%- endmacro %}


{% macro product_merge_var(relation, quantity=none) -%}
    {#- One products[] / recommendations[] entry as the templates expect it. -#}
    {%- set pairs = [
        ('product_id', relation ~ '.product_id'),
        ('name', relation ~ '.product_name'),
        ('brand', relation ~ '.brand'),
        ('category', relation ~ '.category'),
        ('url', relation ~ '.product_url'),
        ('image_url', relation ~ '.image_url'),
        ('price', 'round(cast(' ~ relation ~ '.price as numeric), 2)'),
    ] -%}
    {%- if quantity is not none -%}
        {%- do pairs.append(('quantity', 'cast(' ~ quantity ~ ' as ' ~ dbt.type_int() ~ ')')) -%}
    {%- endif -%}
    {{ json_object(pairs) }}
{%- endmacro %}
