"""publish: copy the staged checkpoint to jobs/<id>/model/, write report.json, then manifest.json last.

A publish that finds the job's manifest already written (a retry after a crash between the manifest
write and the database commit) verifies it and records it instead of writing anything again.
"""

from __future__ import annotations

import json

from storage.artifacts import StoredObject
from storage.artifacts.manifest import read_manifest, verify_against_manifest, write_manifest
from workers.stage_context import StageContext, StageResult


def run(context: StageContext) -> StageResult:
    final = context.job_prefix
    existing = read_manifest(context.store, final)
    if existing is not None:
        verify_against_manifest(context.store, final)
        return _result(final, _manifest_objects(final, existing), json.loads(
            context.store.get_bytes(f"{final}/report.json")))
    staged = context.outputs["compress"]["prefix"]
    staged_files = read_manifest(context.store, staged)
    if staged_files is None:
        raise RuntimeError(f"staged checkpoint {staged} has no manifest")
    objects: list[StoredObject] = []
    names = sorted(staged_files["files"])
    for done, name in enumerate(names):
        context.should_stop()
        objects.append(context.store.copy(f"{staged}/{name}", f"{final}/model/{name}"))
        context.report_progress(done / (len(names) + 2), f"publish: {name}")
    report = {**context.outputs["validate"]["report"], "stage_seconds": context.stage_seconds,
              "job_id": context.job_id}
    objects.append(context.store.put_bytes(f"{final}/report.json",
                                           json.dumps(report, indent=2, sort_keys=True).encode()))
    manifest = write_manifest(context.store, final, objects)
    return _result(final, [*objects, manifest], report)


def _manifest_objects(prefix: str, manifest: dict) -> list[StoredObject]:
    objects = [StoredObject(key=f"{prefix}/{name}", size=entry["size"], sha256=entry["sha256"])
               for name, entry in manifest["files"].items()]
    return objects


def _result(prefix: str, objects: list[StoredObject], report: dict) -> StageResult:
    return StageResult(outputs={"manifest_key": f"{prefix}/manifest.json"}, report=report, published=objects)
