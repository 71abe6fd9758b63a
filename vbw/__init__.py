"""The `vbw` program: the command line and the benchmarks, on top of every other package."""
