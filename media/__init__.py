"""Video in, frames out: decoding, sampling and the synthetic clip generator. No model, no runtime."""
