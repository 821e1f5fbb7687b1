"""One module per pipeline stage, each a function from StageContext to StageResult."""

from collections.abc import Callable

from storage.models import Stage
from workers.stage_context import StageContext, StageResult
from workers.stages import calibrate, compress, fetch, publish, validate

STAGE_FUNCTIONS: dict[Stage, Callable[[StageContext], StageResult]] = {
    Stage.FETCH: fetch.run,
    Stage.CALIBRATE: calibrate.run,
    Stage.COMPRESS: compress.run,
    Stage.VALIDATE: validate.run,
    Stage.PUBLISH: publish.run,
}
