"""The ``Reverted`` condition of a Domain: how its last revert by hand ended.

``kvmrec snapshot revert`` writes it with its event: ``False`` (reason ``RevertFailed``,
QEMU's words and what became of the guest) when a revert failed, ``True`` when a later one
succeeded. A guest whose revert failed is left as its ``runStrategy`` says (started again
from cold under Always), and the condition keeps the failure visible after the restart.

The command writes while the service may be reconciling the same domain from a status read
before that write; the store refuses the reconcile's write over a status it has not seen
(``StatusConflict``), and the retry, from a fresh read, keeps the command's word.
"""

from __future__ import annotations

from datetime import datetime

from kvmrec.api.kinds import DomainSpec, ObjectKey, RunStrategy
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.store.base import StatusConflict, Store
from kvmrec.store.records import Status, StoredObject

CONDITION = "Reverted"
ATTEMPTS = 5  # reads and writes of the status, should the service write it meanwhile


def what_next(obj: StoredObject | None, live: LiveDomain | None) -> str:
    """What becomes of a guest after a failed revert, as its manifest's runStrategy says."""
    if live is None:
        return "the domain is gone"
    if live.active:
        return f"the guest is {live.state}"
    if obj is None or obj.deleting:
        return f"the guest is {live.state} ({live.reason}); no manifest manages it: left as it is"
    strategy = DomainSpec.from_spec(obj.spec, obj.key.name).run_strategy
    if strategy in (RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE):
        return (
            f"the guest is {live.state} ({live.reason}); runStrategy {strategy.value}: "
            "kvmrec starts it again from cold, without the snapshot's memory state"
        )
    return f"the guest is {live.state} ({live.reason}); runStrategy {strategy.value}: left as it is"


def record(
    store: Store,
    key: ObjectKey,
    *,
    failed: bool,
    message: str,
    now: datetime,
) -> None:
    """Store how a revert by hand ended, as the condition and its event, in one write."""
    said = [("Warning" if failed else "Normal", _reason(failed), message)]
    for attempt in range(1, ATTEMPTS + 1):
        old = store.get_status(key)
        status = old or Status()
        gone = store.get(key) is None
        if gone or (not failed and status.condition(CONDITION) is None):
            # No manifest manages it, or it never failed: nothing to say in the status.
            for event in said:
                store.add_event(key, *event, now)
            return
        status = status.with_condition(
            CONDITION, "False" if failed else "True", _reason(failed), message, now
        )
        try:
            store.record(key, status, said, now)
            return
        except StatusConflict:
            # The service wrote the status meanwhile: read it again and write over what it
            # wrote. The refused write kept its event, which is not told twice.
            if attempt == ATTEMPTS:
                raise
            said = []


def _reason(failed: bool) -> str:
    return "RevertFailed" if failed else "Reverted"
