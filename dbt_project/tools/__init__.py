"""Python helpers for developing and testing the dbt project (not part of any dbt run)."""
