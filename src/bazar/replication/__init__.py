"""The replication library that the catalog and order tiers share: primary/backup with
numbered views, leases and failover. `replica.py` and `ready.py` are the pure protocol core
(no I/O: a step function); `storage.py` is the only SQLite code, `runtime.py` drives the core
(persist, then send), `process.py` is what every replica process serves."""
