"""The VideoBERT model definition in torch (one readable file: `videobert.model`)."""
