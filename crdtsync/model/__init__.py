"""The memory model: plain records, the v1 document schema on pycrdt, and the strict Yjs update reader."""
