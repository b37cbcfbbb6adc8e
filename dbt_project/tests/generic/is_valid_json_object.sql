{% test is_valid_json_object(model, column_name) %}
{#- Fails on every value that does not parse as a JSON object. -#}
{{ adapter.dispatch('test_is_valid_json_object', 'signalmail')(model, column_name) }}
{% endtest %}
