"""The order tier: orders, and purchases run end to end by its primary. `machine.py` is its
state machine; `service.py` its replica process on the shared replication library."""
