"""A small app run by `make demo`: jobs enqueued by a client, processed by `arq-supervise --procs 2`."""
