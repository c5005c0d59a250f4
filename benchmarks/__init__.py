"""Benchmarks: each module has main(argv) that prints a table, writes JSON and draws plots."""
