{{ config(severity='warn', tags=['nightly']) }}

{#-
    Warns (never fails: one shop's broken or hostile client must not stop the nightly build)
    with the number of client values staging set aside. Look at `quarantined_values`.
-#}

-- a test returns the rows that fail it, whatever their columns
-- noqa: disable=AM04
select * from {{ ref('quarantined_values') }}
