{% macro campaign_setting(campaign_column, setting, optional=false) -%}
    case {{ campaign_column }}
        {%- for name, settings in var('campaigns').items() %}
        {%- set value = settings.get(setting) if optional else settings[setting] %}
        when '{{ name }}' then {{ 'null' if value is none else value }}
        {%- endfor %}
    end
{%- endmacro %}


{% macro trigger_id(parts) -%}
    {%- set pieces = [] -%}
    {%- for part in parts -%}
        {%- do pieces.append("coalesce(cast(" ~ part ~ " as " ~ dbt.type_string() ~ "), '')") -%}
        {%- if not loop.last %}{% do pieces.append("'|'") %}{% endif -%}
    {%- endfor -%}
    {{ dbt.hash(dbt.concat(pieces)) }}
{%- endmacro %}


{% macro product_merge_var(relation, quantity=none) -%}
    {%- set pairs = [
        ('product_id', relation ~ '.product_id'),
        ('name', relation ~ '.product_name'),
        ('brand', relation ~ '.brand'),
        ('category', relation ~ '.category'),
        ('url', relation ~ '.product_url'),
        ('image_url', relation ~ '.image_url'),
        ('price', rounded(relation ~ '.price', 2)),
    ] -%}
    {%- if quantity is not none -%}
        {%- do pairs.append(('quantity', 'cast(' ~ quantity ~ ' as ' ~ dbt.type_int() ~ ')')) -%}
    {%- endif -%}
    {{ json_object(pairs) }}
{%- endmacro %}
