"""Benchmarks run by `vbw bench ...`. They drive the runtime and the engines from above; they ship,
so operators can measure their own machines, and never make the runtime import training code."""
