{#- Per-adapter bodies of the generic test is_valid_json_object (tests/generic). -#}

{% macro default__test_is_valid_json_object(model, column_name) %}
select * from {{ model }}
where {{ column_name }} is not null
    and coalesce(json_type(try_cast({{ column_name }} as json)), 'INVALID') <> 'OBJECT'
{% endmacro %}

{% macro postgres__test_is_valid_json_object(model, column_name) %}
select * from {{ model }}
where {{ column_name }} is not null
    and (
        {{ column_name }} !~ '^\s*\{'
        or jsonb_typeof(cast({{ column_name }} as jsonb)) <> 'object'
    )
{% endmacro %}

{% macro spark__test_is_valid_json_object(model, column_name) %}
select * from {{ model }}
where {{ column_name }} is not null
    and (
        left(ltrim({{ column_name }}), 1) <> '{'
        or from_json({{ column_name }}, 'map<string,string>') is null
    )
{% endmacro %}
