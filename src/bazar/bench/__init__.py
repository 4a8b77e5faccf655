"""`bazar bench`, the lab's measuring instrument, one module per concept.

- `scenarios`: what can be measured, and the plan of runs (pure; checked before running);
- `load`: the closed-loop load generator, in worker processes;
- `stats`: nearest-rank percentiles from exact per-request times;
- `procstat`: server CPU per request from /proc;
- `failover`: kill -9 of a primary, the write gap and the timeline;
- `baseline`: the bare aiohttp server that ratios are taken against;
- `report`: rows, tables and JSON; `compare`: before/after; `plots`: PNG figures;
- `command`: `bazar bench` itself, putting them together.
"""
