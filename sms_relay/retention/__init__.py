"""Retention and erasure: how long each table keeps its rows, and forgetting a number."""
