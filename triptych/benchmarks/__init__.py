"""Speed and memory measurements behind `bench attention` and `bench long-context` (triptych/commands/bench.py
prints them). Measurements only: nothing here passes or fails; tests/test_bench.py checks the arithmetic."""
