"""The catalog tier: books, stock and sales. `machine.py` is its state machine (commands to
row images, on SQLite); `service.py` its replica process on the shared replication library."""
