"""Python helpers for testing and benchmarking the dbt project (never imported by dbt itself)."""
