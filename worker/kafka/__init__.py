"""Kafka in and out: the frames source, the labels/embeddings sinks, dead letters, offsets, ingest."""
