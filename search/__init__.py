"""Search over what the cameras saw: `vbw index` writes the published window embeddings into a
vector index (LanceDB, embedded by default), `vbw search` asks it by text or by example window.

Modules: `records` (one indexed window, parsed from a Kafka embedding record or a JSONL line),
`store` (the LanceDB table: upsert by window_id, filtered k-NN), `query` (filters and times),
`text` (the text-encoder interface a query needs), `indexer` (the consume -> write -> commit
loop), `metrics`, and the two commands. See docs/search.md.
"""
