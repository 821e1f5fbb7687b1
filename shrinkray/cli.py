"""The `shrinkray` command: the library alone (`compress`), the service parts, and a client of the API."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from shrinkray.catalog_view import format_catalog, read_catalog_file
from shrinkray.children import spawn_cli, stop_child
from shrinkray.client import ApiError, ShrinkrayClient
from shrinkray.keys_cli import keys_app
from shrinkray.report_view import format_report
from shrinkray.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Compress large language models: as a library, as a service, or against a running API.")
app.add_typer(keys_app, name="keys")

RecipeOption = Annotated[str, typer.Option("--recipe", "-r", help="preset name (e.g. w4a16-rtn) or a YAML/JSON file")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _api_client() -> ShrinkrayClient:
    settings = Settings()
    return ShrinkrayClient(settings.api_url, api_key=settings.api_key)


def _recipe_arguments(recipe: str) -> dict[str, object]:
    path = Path(recipe)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise _fail(f"recipe file {path} does not exist", 2)
        return {"recipe": path.read_text(encoding="utf-8")}
    return {"preset": recipe}


@app.command()
def compress(
    model_dir: Annotated[Path, typer.Argument(help="a Hugging Face model directory (safetensors)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the compressed checkpoint")],
    recipe: RecipeOption = "w4a16-rtn",
    calib: Annotated[Path | None, typer.Option(help="calibration text (UTF-8); bundled text if omitted")] = None,
    eval_text: Annotated[Path | None, typer.Option("--eval", help="evaluation text for perplexity")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Compress MODEL_DIR with a recipe into OUT, without any service."""
    from compress.errors import CompressError
    from compress.pipeline import compress_directory
    from compress.recipes import resolve_recipe
    from workers.stages.common import BUNDLED_TEXTS

    if out.exists() and any(out.iterdir()):
        raise _fail(f"{out} exists and is not empty; choose a new --out directory", 2)
    try:
        chosen = resolve_recipe(**_recipe_arguments(recipe))  # type: ignore[arg-type]
        calib_text = (calib or BUNDLED_TEXTS / "calib.txt").read_text(encoding="utf-8")
        evaluation = eval_text.read_text(encoding="utf-8") if eval_text else None
        with _progress_bar() as progress:
            report = compress_directory(model_dir, chosen, out, calib_text, evaluation, device=device,
                                        progress=progress)
    except (CompressError, OSError, UnicodeDecodeError) as exc:
        raise _fail(str(exc), 2) from exc
    typer.echo(json.dumps(report, indent=2, default=str))
    typer.secho(f"wrote {out}", fg=typer.colors.GREEN)


@app.command()
def generate(
    checkpoint: Annotated[Path, typer.Argument(help="a compressed checkpoint directory (or any model directory)")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="the text to continue")],
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate (greedy)")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    compile_step: Annotated[bool, typer.Option("--compile", help="torch.compile the decode step")] = False,
) -> None:
    """Continue PROMPT with CHECKPOINT on Shrinkray's kernels: the text on stdout, speed and kernels on stderr."""
    from compress.errors import CompressError
    from kernels.generation import GenerationError, resolve_device
    from kernels.generation import generate as generate_text
    from kernels.loader import UnsupportedScheme
    from kernels.self_check import KernelMismatch
    from kernels.triton_support import KERNEL_BUILD_FAILURES, build_failure_reason

    if not checkpoint.is_dir():
        raise _fail(f"{checkpoint} is not a directory", 2)
    try:
        result = generate_text(checkpoint, prompt, max_new_tokens, resolve_device(device), compile_step)
    except (GenerationError, CompressError, UnsupportedScheme, OSError) as exc:
        raise _fail(str(exc), 2) from exc
    except KernelMismatch as exc:
        raise _fail(str(exc), 1) from exc
    except KERNEL_BUILD_FAILURES as exc:  # a GPU Triton cannot build the kernels for
        raise _fail(build_failure_reason(exc), 1) from exc
    typer.echo(result.text)
    layers = ", ".join(f"{kernel} x{count}" for kernel, count in sorted(result.kernels.items()))
    typer.echo(f"{result.tokens} tokens ({result.decoded} decoded in {result.seconds:.2f} s, "
               f"{result.tokens_per_s:.1f} tokens/s, prefill included) on {result.device}"
               f"{', CUDA graph' if result.cuda_graph else ''}; layers: {layers}; attention: {result.attention}",
               err=True)
    if result.note:
        typer.secho(f"note: {result.note}", fg=typer.colors.YELLOW, err=True)


@app.command()
def migrate() -> None:
    """Create or upgrade the metadata schema (Alembic) in SHRINKRAY_DATABASE_URL."""
    from shrinkray.migrate import upgrade_database

    settings = Settings()
    upgrade_database(settings.database_url)
    typer.echo(f"database at head: {_redact(settings.database_url)}")


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000,
          maintenance: Annotated[bool, typer.Option(help="run the outbox relay and lease reaper")] = True) -> None:
    """Run the REST API (and, by default, the outbox relay and lease reaper)."""
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(Settings(), run_maintenance=maintenance), host=host, port=port, log_level="warning")


@app.command()
def worker(queues: Annotated[str | None, typer.Option(help="comma-separated: gpu,cpu (default by CUDA)")] = None,
           concurrency: int = 1, loglevel: str = "INFO") -> None:
    """Run a Celery worker that executes pipeline stages."""
    from workers.main import start_worker

    chosen = [q.strip() for q in queues.split(",")] if queues else None
    start_worker(Settings(), chosen, concurrency, loglevel)


@app.command()
def up(host: str = "127.0.0.1", port: int = 8000) -> None:
    """The embedded default: SQLite, a local artifact directory, a file broker, the API and one worker."""
    from shrinkray.migrate import upgrade_database

    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    worker_log = settings.home / "worker.log"
    with worker_log.open("ab") as log_file:
        worker_process = spawn_cli(["worker", "--loglevel", "INFO"], log_file)
    typer.echo(f"shrinkray up: API on http://{host}:{port} (docs at /docs), worker pid {worker_process.pid} "
               f"(log {worker_log}), data in {settings.home}")
    # uvicorn re-raises the SIGTERM that stopped it once it is done; turned into SystemExit here, it still lets
    # the `finally` below stop the worker (the default action would end this process before it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(host=host, port=port, maintenance=True)
    finally:
        stop_child(worker_process)


@app.command()
def submit(
    model_uri: Annotated[str, typer.Argument(help="file:///path, s3://bucket/prefix, or a local directory")],
    recipe: RecipeOption = "w4a16-rtn",
    calibration_uri: str | None = None,
    eval_uri: str | None = None,
    device: str = "auto",
    wait: Annotated[bool, typer.Option(help="wait for the job and print its report")] = False,
) -> None:
    """Submit a compression job to a running API."""
    client = _api_client()
    if "://" not in model_uri:
        model_uri = Path(model_uri).resolve().as_uri()
    try:
        job = client.submit(model_uri=model_uri, calibration_uri=calibration_uri, eval_uri=eval_uri,
                            device=device, **_recipe_arguments(recipe))
        typer.echo(job["id"])
        if wait:
            _finish(client, client.wait(job["id"]))
    except ApiError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def status(job_id: Annotated[str | None, typer.Argument(help="a job id; all recent jobs if omitted")] = None,
           watch: Annotated[bool, typer.Option(help="follow the job until it ends")] = False) -> None:
    """Show one job (with --watch, follow it) or the most recent jobs."""
    client = _api_client()
    try:
        if job_id is None:
            for job in client.jobs()["items"]:
                typer.echo(f"{job['id']}  {job['status']:<10} {job['stage']:<10} {100 * job['progress']:5.1f}%  "
                           f"{job['model_uri']}")
            return
        job = client.wait(job_id) if watch else client.job(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            _finish(client, job)
        else:
            typer.echo(f"{job['status']}: {job.get('progress_message') or ''} ({100 * job['progress']:.0f}%)")
    except ApiError as exc:
        raise _fail(str(exc)) from exc


catalog_app = typer.Typer(no_args_is_help=True, help="Compress a whole catalog (models x recipes) in one request.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("submit")
def catalog_submit(
    path: Annotated[Path, typer.Argument(help="catalog YAML or JSON: models (uri, name...), recipes (preset...)")],
    wait: Annotated[bool, typer.Option(help="wait for every pair and print the results table")] = False,
) -> None:
    """Submit a catalog to a running API; prints its id (and with --wait, the results)."""
    try:
        document = read_catalog_file(path)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    client = _api_client()
    try:
        catalog = client.submit_catalog(document)
        typer.echo(catalog["id"])
        if wait:
            typer.echo(format_catalog(client.wait_catalog(catalog["id"])))
    except ApiError as exc:
        raise _fail(str(exc)) from exc


@catalog_app.command("status")
def catalog_status(
    catalog_id: Annotated[str, typer.Argument(help="the catalog's id")],
    watch: Annotated[bool, typer.Option(help="show a progress bar until every pair has ended")] = False,
) -> None:
    """The catalog's progress, its results table and each model's recommended artifact."""
    client = _api_client()
    try:
        catalog = client.wait_catalog(catalog_id) if watch else client.catalog(catalog_id)
    except ApiError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(format_catalog(catalog))


@app.command()
def demo(port: Annotated[int, typer.Option(help="API port; a free one if 0")] = 0) -> None:
    """Compress the bundled demo model through the embedded service and print the report."""
    from shrinkray.demo_model import build_demo_model

    settings = Settings()
    port = port or _free_port()
    typer.echo("building the demo model (first run only)...")
    model_dir = build_demo_model(settings.home / "demo-model")
    env = {**os.environ, "SHRINKRAY_API_URL": f"http://127.0.0.1:{port}"}
    with (settings.home / "up.log").open("ab") as log_file:
        server = spawn_cli(["up", "--port", str(port)], log_file, env=env)
    client = ShrinkrayClient(env["SHRINKRAY_API_URL"])
    try:
        _wait_healthy(client, server)
        job = client.submit(model_uri=model_dir.as_uri(), preset="w4a16-rtn")
        typer.echo(f"job {job['id']}: {model_dir.name} with w4a16-rtn")
        _finish(client, client.wait(job["id"]))
    except ApiError as exc:
        raise _fail(f"{exc} (see {settings.home / 'up.log'})") from exc
    finally:
        stop_child(server, signal.SIGINT, timeout_s=60)


def _wait_healthy(client: ShrinkrayClient, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ApiError(f"the embedded service exited with code {server.returncode}")
        try:
            client.health()
            return
        except ApiError:
            time.sleep(0.5)
    raise ApiError(f"the embedded service did not become healthy within {timeout_s:.0f} s")


def _finish(client: ShrinkrayClient, job: dict) -> None:
    if job["status"] != "succeeded":
        raise _fail(f"job {job['id']} {job['status']}: {job.get('error') or 'no reason recorded'}")
    typer.echo(format_report(job["report"] or {}))
    manifest = [a for a in client.artifacts(job["id"])["items"] if a["name"] == "manifest.json"]
    if manifest:
        typer.echo(f"artifacts: {manifest[0]['url'].removesuffix('/manifest.json')}")


class _progress_bar:
    """A tqdm bar fed by the library's (done, total, message) callback."""

    def __enter__(self):  # type: ignore[no-untyped-def]
        from tqdm import tqdm

        self._bar = tqdm(total=1, bar_format="{desc:<50} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}")
        return self._update

    def _update(self, done: int, total: int, message: str) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.set_description_str(message[:50])
        self._bar.refresh()

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
