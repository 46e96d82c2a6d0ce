"""Multi-process runs: joining one (`join`) and starting one on a single machine (`launch`)."""
