"""A simulated order replica: the production driver like every replica, plus what its primary
does on top, as `order/service.py` does it: a purchase is a sale at the catalog primary under
the purchase's key (retried across catalog failovers: the catalog deduplicates the key),
then the order recorded here; purchases with a key already in flight wait for the first one;
a reconciler pages through the catalog's completed sales and records the order of any sale
that has none (a crash, a failover or a lost answer between the two writes).

Why: "every sale has exactly one order, and no order exists without its sale" is a property
of the two tiers together, through crashes between the two writes; only a run of both under
faults can break it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from bazar.errors import BazarError, NotPrimary, Refused
from bazar.testing.sim_machines import Buy, Outcome, Reconciled, RecordOrder
from bazar.testing.sim_network import Call, Failure
from bazar.testing.sim_replica import (
    Internal,
    ReplicaNode,
    Sale,
    SalesPage,
    SalesRequest,
    WriteRequest,
    failure_of,
)

ORDER_TIER: Literal["order"] = "order"
CATALOG_TIER: Literal["catalog"] = "catalog"
SALES_PAGE_MAX = 4  # small, so that the reconciler pages


class OrderNode(ReplicaNode):
    """An order replica process (`OrderService`)."""

    def __init__(self, name: str, *, recovery_ms: int, **kwargs: Any) -> None:
        super().__init__(name, tier=ORDER_TIER, **kwargs)
        self.recovery_ms = recovery_ms
        self.inflight: dict[str, list[Call]] = {}  # a purchase's key -> the calls waiting
        self.mark: tuple[int, str] = (0, "")  # the reconciler's, in memory
        self.reconciling = False

    def boot(self) -> None:
        super().boot()
        self.loop.timer(self.host, self.recovery_ms, self._reconcile)

    def crash(self, *, power_loss: bool = False) -> None:
        super().crash(power_loss=power_loss)
        self.inflight.clear()
        self.mark = (0, "")
        self.reconciling = False

    def handle(self, call: Call) -> None:
        request = call.request
        if isinstance(request, WriteRequest) and isinstance(request.command, Buy):
            self.serving_calls[call.ident] = call
            self._purchase(call, request.command)
        else:
            super().handle(call)

    # ---------------------------------------------------------------- purchases

    def _purchase(self, call: Call, buy: Buy) -> None:
        """`OrderService._purchase` and `_run`."""
        try:
            self.live().check_writable()
        except BazarError as error:
            self._answer(call, failure_of(error))
            return
        waiting = self.inflight.get(buy.key)
        if waiting is not None:
            waiting.append(call)  # answered with the first one's outcome
            return
        done = self.store.rows["orders"].get(buy.key)
        if done is not None:
            same = (done["book_id"], done["quantity"]) == (buy.book_id, buy.quantity)
            self._answer(call, Outcome(status="ok" if same else "key_reused"))
            return
        self.inflight[buy.key] = [call]
        deadline_ms = self.now_ms() + self.limits.write_retry_deadline_ms
        self._sell(buy, deadline_ms)

    def _finish(self, key: str, answer: object) -> None:
        for call in self.inflight.pop(key, []):
            self._answer(call, answer)

    def _sell(self, buy: Buy, deadline_ms: int) -> None:
        """`OrderService._sell`: to the catalog primary; a refusal, or an attempt whose
        primary a failover replaced, is retried (the key makes it safe) until the deadline."""
        view = self.live_core().views.get(CATALOG_TIER)
        if view is None:
            self._finish(buy.key, Failure("unavailable"))
            return
        primary = view.primary

        def answered(answer: object) -> None:
            if buy.key not in self.inflight:
                return
            if isinstance(answer, Outcome):
                self._sold(buy, answer)
                return
            assert isinstance(answer, Failure), answer
            now_view = self.live_core().views.get(CATALOG_TIER)
            failover = now_view is not None and now_view.primary != primary
            decision = answer.retry(failover)
            retry = decision is not None and decision.again
            if not retry or self.now_ms() >= deadline_ms:
                self._finish(buy.key, Failure("unavailable"))
                return
            self.loop.timer(self.host, self.limits.retry_ms, lambda: self._retry(buy, deadline_ms))

        timeout_ms = self.limits.write_timeout_ms
        self.network.call(self.name, primary, WriteRequest(buy), timeout_ms, answered)

    def _retry(self, buy: Buy, deadline_ms: int) -> None:
        if buy.key in self.inflight:
            self._sell(buy, deadline_ms)

    def _sold(self, buy: Buy, sale: Outcome) -> None:
        if sale.status != "ok":
            self._finish(buy.key, sale)
            return

        def recorded(result: Outcome | None, error: BazarError | None) -> None:
            if error is None:
                assert result is not None
                self._finish(buy.key, result)
            elif isinstance(error, Refused | NotPrimary):
                # The sale is done and its order not recorded here: an unknown outcome for
                # the front end, which retries the key (or the reconciler records it).
                self._finish(buy.key, Failure("abandoned"))
            else:
                self._finish(buy.key, failure_of(error))

        self._record(RecordOrder(buy.key, buy.book_id, buy.quantity), recorded)

    def _record(
        self,
        command: RecordOrder | Reconciled,
        done: Callable[[Outcome | None, BazarError | None], None],
    ) -> None:
        try:
            self.live().submit(command, Internal(done))
        except BazarError as error:
            done(None, error)
            return
        if not self.busy:
            self._try_batch()

    # ---------------------------------------------------------------- reconciler

    def _reconcile(self) -> None:
        """`OrderService._reconcile_loop`: on the primary only, one round at a time."""
        self.loop.timer(self.host, self.recovery_ms, self._reconcile)
        core = self.live_core()
        view = core.views.get(CATALOG_TIER)
        if self.reconciling or core.role != "primary" or view is None:
            return
        saved = self._saved_mark()
        mark = max(saved, self.mark)
        self.reconciling = True
        self.network.call(
            self.name,
            view.primary,
            SalesRequest(mark, SALES_PAGE_MAX),
            self.limits.read_timeout_ms,
            lambda page: self._reconcile_page(mark, saved, page),
        )

    def _saved_mark(self) -> tuple[int, str]:
        row = self.store.rows["reconciled"].get(1)
        if row is None:
            return (0, "")
        seq, key = row["seq"], row["key"]
        assert isinstance(seq, int)
        assert isinstance(key, str)
        return (seq, key)

    def _reconcile_page(self, mark: tuple[int, str], saved: tuple[int, str], page: object) -> None:
        """`OrderService.reconcile`: record the missing orders up to the first sale still in
        flight here, then move the mark (replicated only when orders were recorded)."""
        if not isinstance(page, SalesPage):
            self.reconciling = False
            return
        through, missing = mark, list[Sale]()
        for sale in page.sales:
            if sale.key in self.inflight:
                break
            if sale.key not in self.store.rows["orders"]:
                missing.append(sale)
            through = sale.mark
        pending = len(missing)

        def recorded(result: Outcome | None, error: BazarError | None) -> None:
            nonlocal pending
            if error is not None:
                self.reconciling = False  # the next round tries again
                pending = -1
                return
            assert result is not None
            pending -= 1
            if pending == 0:
                self.trace(f"transition=orders_reconciled count={len(missing)}")
                self._reconciled(through, saved, bool(missing))

        if not missing:
            self._reconciled(through, saved, False)
            return
        for sale in missing:
            self._record(RecordOrder(sale.key, sale.book_id, sale.quantity), recorded)

    def _reconciled(self, through: tuple[int, str], saved: tuple[int, str], recorded: bool) -> None:
        self.mark = through
        if through > saved and recorded:

            def done(result: Outcome | None, error: BazarError | None) -> None:
                del result, error
                self.reconciling = False

            self._record(Reconciled(*through), done)
            return
        self.reconciling = False
