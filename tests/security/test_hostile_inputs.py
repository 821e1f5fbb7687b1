"""Every hostile input is refused with the right 4xx and a message that says why, and none of them leaves a job,
a catalog or a queued message behind."""

from __future__ import annotations

from sqlalchemy import func, select

from shrinkray.services import session_factory
from storage.models import Catalog, Job, OutboxMessage
from tests.security.conftest import Deployment
from tests.security.hostile_cases import run


def _rows(deployment: Deployment) -> tuple[int, int, int]:
    with session_factory(deployment.settings)() as session:
        return tuple(session.scalar(select(func.count()).select_from(table))  # type: ignore[return-value]
                     for table in (Job, Catalog, OutboxMessage))


def test_every_hostile_input_is_refused_with_a_reason(deployment: Deployment) -> None:
    before = _rows(deployment)
    outcomes = run(deployment.cases, deployment.clients)
    wrong = [f"{o.case.category}/{o.case.name}: {o.status} {o.message[:200]!r}" for o in outcomes if not o.refused]
    assert not wrong, "\n".join(wrong)
    assert len(outcomes) >= 60
    assert _rows(deployment) == before  # nothing created or enqueued by any of them
    checkpoint_messages = {o.case.name: o.message for o in outcomes if o.case.category == "checkpoint"}
    assert "pytorch_model.bin" in checkpoint_messages["pickle-bin"]
    assert "checkpoints/step-10.pt" in checkpoint_messages["pickle-nested"]
    assert "tokenizer_config.json asks for remote code" in checkpoint_messages["remote-tokenizer"]
    assert "tokenizer.model is a link" in checkpoint_messages["link-out"]
