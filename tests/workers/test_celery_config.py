"""Redis redelivers a message whose worker has not acknowledged it within the visibility timeout. Acknowledgement
comes after the stage (acks_late), so the timeout must outlast the longest stage the time limits allow, or a long
stage would be delivered a second time while it still runs."""

from __future__ import annotations

import pytest

from shrinkray.settings import Settings
from workers.celery_app import create_celery


@pytest.mark.parametrize("hard_limit_s", [600, 3 * 3600 + 300, 48 * 3600])
def test_the_visibility_timeout_outlasts_the_longest_stage(tmp_path, hard_limit_s: int) -> None:
    settings = Settings(home=tmp_path, broker_url="redis://127.0.0.1:6379/0", stage_soft_time_limit_s=hard_limit_s - 60,
                        stage_hard_time_limit_s=hard_limit_s)
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit == hard_limit_s
    assert conf.broker_transport_options["visibility_timeout"] >= 2 * conf.task_time_limit


def test_a_soft_limit_at_or_above_the_hard_one_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="stage_soft_time_limit_s must be below"):
        Settings(home=tmp_path, stage_soft_time_limit_s=100, stage_hard_time_limit_s=100)
