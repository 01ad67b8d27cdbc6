"""``twobranch serve``: the search as a small HTTP service (FastAPI).

``GET /search?q=TEXT&k=10&split=test&dataset=NAME`` answers a text query with images (ids,
scores, paths, captions and a thumbnail URL); ``POST /search/image`` takes an image upload and
answers with captions; ``GET /`` is a search page; ``GET /healthz`` says it is up. Each
dataset's index is loaded once and loaded again when a new one is published (a new champion's
index replaces the folder, and so its manifest file). Bad input is a 4xx with
``{"error": "..."}``; nothing answers with a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ops.data.registry import DatasetRegistryError, check_name
from ops.search.engine import SearchIndex, open_index, search_image, search_text
from ops.search.errors import SearchError
from ops.search.manifest import manifest_path
from ops.search.page import SEARCH_PAGE
from ops.search.render import thumbnail_jpeg

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_UPLOAD_BYTES = 10 * 2**20
# A multipart body carries a little more than the file: boundaries and part headers.
UPLOAD_OVERHEAD_BYTES = 64 * 2**10


class ServiceError(Exception):
    """A request the service refuses: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class IndexSource(Protocol):
    default_dataset: str

    def get(self, dataset: str) -> SearchIndex: ...

    def loaded(self) -> dict[str, str]: ...


class PublishedIndexes:
    """The data root's published indexes, each opened on first use and opened again when its
    manifest file changes (a publish swaps the whole index folder in)."""

    def __init__(self, root: str | Path, default_dataset: str, device: str = "auto") -> None:
        self.root = Path(root).resolve()
        self.default_dataset = default_dataset
        self.device = device
        self._indexes: dict[str, tuple[tuple[int, int, int], SearchIndex]] = {}
        self._lock = threading.Lock()

    def _version(self, dataset: str) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(manifest_path(self.root, dataset))
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def get(self, dataset: str) -> SearchIndex:
        version = self._version(dataset)
        cached = self._indexes.get(dataset)
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]
        with self._lock:  # one load per publish, however many requests arrive meanwhile
            cached = self._indexes.get(dataset)
            if cached is not None and version is not None and cached[0] == version:
                return cached[1]
            try:
                index = open_index(self.root, dataset, self.device)
            except SearchError as error:
                self._indexes.pop(dataset, None)
                raise ServiceError(404, str(error)) from None
            if version is not None:
                self._indexes[dataset] = (version, index)
            return index

    def loaded(self) -> dict[str, str]:
        return {name: index.manifest["run_id"] for name, (_, index) in self._indexes.items()}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(error: RequestValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return f"{where}: {first.get('msg', 'invalid')}"


def _dataset(source: IndexSource, dataset: str | None) -> SearchIndex:
    name = dataset or source.default_dataset
    try:
        check_name(name)  # never a path: a name is looked up only when it could be registered
    except DatasetRegistryError:
        raise ServiceError(404, f"unknown dataset {name!r}") from None
    return source.get(name)


def _with_thumbnail(index: SearchIndex, hit: dict[str, Any]) -> dict[str, Any]:
    """A hit with the URL of its image's thumbnail (None for a dataset of precomputed
    features, which has no image files)."""
    from urllib.parse import urlencode

    url = "/thumbnail?" + urlencode({"dataset": index.dataset, "image_id": hit["image_id"]})
    return hit | {"thumbnail": url if hit["path"] else None}


def create_app(source: IndexSource) -> FastAPI:
    """The service over ``source`` (the data root's indexes, or any that a caller built)."""
    app = FastAPI(title="twobranch search", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServiceError)
    async def refused(_: Request, error: ServiceError) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def failed(_: Request, error: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(error).__name__})")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "indexes": source.loaded()}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return SEARCH_PAGE

    @app.get("/search")
    def text_search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        split: Annotated[str | None, Query(max_length=64)] = None,
        dataset: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        index = _dataset(source, dataset)
        try:
            [result] = search_text(index, [q], k, split or None)
        except SearchError as error:
            raise ServiceError(400, str(error)) from None
        if result.error:
            raise ServiceError(400, result.error)
        hits = [_with_thumbnail(index, asdict(hit)) for hit in result.hits]
        return {
            "dataset": index.dataset,
            "run_id": index.manifest["run_id"],
            "query": q,
            "hits": hits,
            "warning": index.stale,
        }

    @app.post("/search/image")
    async def image_search(
        request: Request,
        image: Annotated[UploadFile, File()],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        split: Annotated[str | None, Query(max_length=64)] = None,
        dataset: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD_BYTES:
            raise ServiceError(413, f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MiB")
        content = await image.read(MAX_UPLOAD_BYTES + 1)
        if len(content) > MAX_UPLOAD_BYTES:
            raise ServiceError(413, f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MiB")
        if not content:
            raise ServiceError(400, "the upload is empty")
        index = await run_in_threadpool(_dataset, source, dataset)
        name = Path(image.filename or "upload").name
        # The network and the CNN run off the event loop, as the plain endpoints do.
        return await run_in_threadpool(_answer_image, index, content, name, k, split or None)

    @app.get("/thumbnail")
    def thumbnail(
        image_id: Annotated[str, Query(min_length=1, max_length=512)],
        dataset: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        index = _dataset(source, dataset)
        path = index.image_path(image_id)
        if path is None:
            raise ServiceError(404, f"no image {image_id!r} in {index.dataset!r}")
        jpeg = thumbnail_jpeg(path)
        if jpeg is None:
            raise ServiceError(404, f"image {image_id!r} cannot be read")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})

    return app


def _answer_image(
    index: SearchIndex, content: bytes, name: str, k: int, split: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twobranch-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(content)
        try:
            result = search_image(index, path, k, split)
        except SearchError as error:
            raise ServiceError(400, str(error).replace(str(path), name)) from None
    return {
        "dataset": index.dataset,
        "run_id": index.manifest["run_id"],
        "image": name,
        "hits": [_with_thumbnail(index, asdict(hit)) for hit in result.hits],
        "warning": index.stale,
    }


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``app`` served by uvicorn on a thread of this process (port 0: a free one); yields its
    base URL and stops it on exit. For tests and benchmarks that talk HTTP to the service."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="twobranch-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the service did not start on {host}:{port}")
            thread.join(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def serve(root: Path, dataset: str, host: str, port: int, device: str = "auto") -> None:
    """Run the service until interrupted; the dataset's index is loaded before it listens."""
    import uvicorn

    indexes = PublishedIndexes(root, dataset, device)
    indexes.get(dataset)  # fail now, with the reason, rather than at the first request
    uvicorn.run(create_app(indexes), host=host, port=port, log_level="info", access_log=False)
