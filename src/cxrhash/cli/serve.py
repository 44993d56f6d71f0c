"""``cxrhash serve``: the retrieval API (issue #13, first increment) over an index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxrhash.cli.common import command, console, setup_logging
from cxrhash.cli.export import EngineOpt, OnnxOpt, OnnxThreadsOpt, engine_spec


@command()
def serve(
    index: Annotated[Path, typer.Option(help="Index folder (made by `cxrhash index`).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint; default: the one the index's model.json names."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; the default answers this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest upload in MiB: one film, or all films of one add (413).")
    ] = 50,
    images: Annotated[
        str | None,
        typer.Option(
            help="Dataset spec the index was made from (as `cxrhash index --data`), to show "
            "each case's film in answers and the viewer; a pseudonymous index needs the "
            "pseudonym key to map its ids back to files. Not needed for an index made with "
            "--keep-source-names."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the API token that adding and removing cases need (mode 600; "
            "else $CXRHASH_API_TOKEN; neither: writes are disabled)."
        ),
    ] = None,
    uploads_per_minute: Annotated[
        int,
        typer.Option(
            help="Uploads (searches, adds, STOW-RS requests) per client and minute; 0: no "
            "limit (e.g. for a PACS pushing every new film)."
        ),
    ] = 120,
    pacs_url: Annotated[
        str | None,
        typer.Option(
            help="DICOMweb base URL of the PACS that pushes films to /dicomweb/studies "
            "(STOW-RS): their search hits then carry a WADO-RS URL to the original; "
            "without it, their UIDs only."
        ),
    ] = None,
    engine: EngineOpt = "torch",
    onnx: OnnxOpt = None,
    onnx_threads: OnnxThreadsOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Serve the retrieval API (docs/service.md): health, stats, search by upload, cases."""
    setup_logging(verbose)
    import uvicorn

    from cxrhash.index.pacs_links import is_link
    from cxrhash.serve import create_app
    from cxrhash.serve.write_guard import load_api_token

    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if uploads_per_minute < 0:
        raise ValueError(f"--uploads-per-minute must be 0 or more, got {uploads_per_minute}")
    if pacs_url is not None and not is_link(
        pacs_url.rstrip("/") + "/studies/1.2/series/1.2/instances/1.2"
    ):
        raise ValueError(
            f"--pacs-url must be an http(s) URL without credentials or query, got {pacs_url!r}"
        )
    token = load_api_token(token_file)
    app = create_app(
        index,
        checkpoint,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        images=images,
        api_token=token,
        upload_rate=f"{uploads_per_minute}/minute" if uploads_per_minute else None,
        pacs_url=pacs_url,
        engine=engine_spec(engine, onnx, onnx_threads),
    )
    writes = "enabled (API token)" if token else "disabled (no --token-file)"
    console.print(
        f"serving {index}: viewer http://{host}:{port}/, API /api (docs: /docs); writes {writes}"
    )
    # uvicorn's access log would print each request's path (a case id): ours logs the route.
    uvicorn.run(
        app, host=host, port=port, access_log=False, log_level="info" if verbose else "warning"
    )
