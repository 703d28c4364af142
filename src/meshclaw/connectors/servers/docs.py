"""The built-in ``docs`` MCP server: documents on a WebDAV share (list, read, search, write).

Settings come from ``MESHCLAW_DOCS_*`` (``DocsSettings``). WebDAV is spoken directly
with ``httpx`` (PROPFIND, GET, PUT, MKCOL, HEAD). A write returns **evidence**: the
document's URL and its revision (the server's ETag after the write); passing
``expected_etag`` makes the write conditional (``If-Match``), so an agent cannot
overwrite a change it has not seen.

Reading a document that is not there (404 or 410, on a share whose root is there) is an
answer, not an error: ``{"path": ..., "exists": false}``. The outcome re-check of
``doc_published`` reads it as "the document was deleted" (the outcome is undone), while a
read that fails (the share is down or not at its URL, a 5xx, a refused login) stays an
error, so it is retried instead.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)
DAV = "{DAV:}"
PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    "<d:resourcetype/><d:getcontentlength/><d:getlastmodified/><d:getetag/>"
    "</d:prop></d:propfind>"
)
MAX_SEARCHED = 500
"""Entries a search walks at most."""
MAX_DOCUMENT_BYTES = 1_000_000
GONE = (404, 410)
"""Statuses that say the document is not there (as opposed to a read that failed)."""


class DocsSettings(BaseSettings):
    """Which WebDAV share, as whom (``MESHCLAW_DOCS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_DOCS_")

    url: str
    """The share's root, e.g. ``https://dav.example.com/docs/``."""
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = 30.0


class DocsError(ToolError):
    """A document operation failed; the text reaches the agent (never the password)."""


def _clean(path: str) -> str:
    """A share-relative path without ``..``, always starting with ``/``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DocsError(f"path may not contain '..': {path!r}")
    return "/" + "/".join(parts)


class Share:
    def __init__(self, settings: DocsSettings) -> None:
        self.settings = settings
        self.root = settings.url.rstrip("/") + "/"
        self._root_path = urlsplit(self.root).path

    def client(self) -> httpx.AsyncClient:
        s = self.settings
        auth = None
        if s.username is not None:
            password = s.password.get_secret_value() if s.password else ""
            auth = httpx.BasicAuth(s.username, password)
        return httpx.AsyncClient(auth=auth, timeout=s.timeout_seconds)

    def url(self, path: str) -> str:
        return self.root + quote(_clean(path).lstrip("/"))

    def _path_of(self, href: str) -> str:
        path = unquote(urlsplit(href).path)
        return _clean(path.removeprefix(self._root_path.rstrip("/")))

    async def request(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """The share's response; ``DocsError`` when it cannot answer, and for a path that
        is not there unless ``missing_ok`` (then the 404 or 410 is returned)."""
        try:
            response = await client.request(method, self.url(path), **kwargs)
        except httpx.HTTPError as exc:
            raise DocsError(f"cannot reach WebDAV {self.root}: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise DocsError(f"WebDAV login to {self.root} failed")
        if response.status_code in GONE and missing_ok:
            return response
        if response.status_code == 404:
            raise DocsError(f"no document or folder {_clean(path)!r}")
        if response.status_code == 412:
            raise DocsError(
                f"{_clean(path)} changed since you read it (its revision is no longer the "
                "expected_etag): read it again before writing"
            )
        return response

    async def listing(self, client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
        response = await self.request(
            client,
            "PROPFIND",
            path,
            content=PROPFIND,
            headers={"Depth": "1", "Content-Type": "application/xml"},
        )
        if response.status_code != 207:
            raise DocsError(f"PROPFIND {_clean(path)} answered {response.status_code}")
        entries = []
        own = _clean(path)
        for item in ET.fromstring(response.content).iter(f"{DAV}response"):
            href = item.findtext(f"{DAV}href") or ""
            entry_path = self._path_of(href)
            if entry_path == own:
                continue
            prop = item.find(f"{DAV}propstat/{DAV}prop")
            folder = (
                prop is not None and prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
            )
            size = prop.findtext(f"{DAV}getcontentlength") if prop is not None else None
            entries.append(
                {
                    "path": entry_path,
                    "folder": folder,
                    "size": int(size) if size and not folder else None,
                    "modified": prop.findtext(f"{DAV}getlastmodified")
                    if prop is not None
                    else None,
                    "etag": prop.findtext(f"{DAV}getetag") if prop is not None else None,
                }
            )
        return sorted(entries, key=lambda e: (not e["folder"], e["path"]))

    async def _require_root(self, client: httpx.AsyncClient) -> None:
        """Fail unless the share's root is there: a wrong share URL (or a proxy answering
        404 for everything) must not read as every document deleted."""
        response = await self.request(
            client,
            "PROPFIND",
            "/",
            missing_ok=True,
            content=PROPFIND,
            headers={"Depth": "0", "Content-Type": "application/xml"},
        )
        if response.status_code in GONE:
            raise DocsError(f"the share {self.root} is not there (check its URL)")
        if response.status_code != 207:
            raise DocsError(f"PROPFIND / answered {response.status_code}")

    async def read(self, client: httpx.AsyncClient, path: str) -> dict[str, Any]:
        """The document (``exists: true``, its ``etag`` and ``content``), or
        ``{"path": ..., "exists": false}`` when the share says it is not there."""
        response = await self.request(client, "GET", path, missing_ok=True)
        if response.status_code in GONE:
            await self._require_root(client)
            return {"path": _clean(path), "exists": False}
        if response.status_code != 200:
            raise DocsError(f"GET {_clean(path)} answered {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise DocsError(f"{_clean(path)} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise DocsError(f"{_clean(path)} is not a UTF-8 text document") from None
        return {
            "path": _clean(path),
            "exists": True,
            "url": self.url(path),
            "etag": response.headers.get("etag"),
            "content": text,
        }


def build(settings: DocsSettings | None = None) -> MCPServer:
    cfg = settings or DocsSettings()  # read from the environment
    share = Share(cfg)
    server = MCPServer(
        "meshclaw-docs",
        instructions="Documents on a WebDAV share: list, read, search and write text files.",
        log_level="WARNING",
    )

    @server.tool(description="Documents and folders in a folder.", annotations=READ)
    async def list_documents(path: str = "/") -> dict[str, Any]:
        async with share.client() as client:
            return {"path": _clean(path), "entries": await share.listing(client, path)}

    # The description stays as approved: a changed definition blocks the tool (the rug-pull
    # defence) until an admin re-approves it, and the answer itself says ``exists``.
    @server.tool(description="Read a text document; returns its revision (etag).", annotations=READ)
    async def read_document(path: str) -> dict[str, Any]:
        async with share.client() as client:
            return await share.read(client, path)

    @server.tool(
        description="Find documents whose name or text contains the query.", annotations=READ
    )
    async def search_documents(query: str, path: str = "/", limit: int = 20) -> dict[str, Any]:
        needle = query.lower()
        found: list[dict[str, Any]] = []
        seen = 0
        async with share.client() as client:
            folders = [_clean(path)]
            while folders and len(found) < limit and seen < MAX_SEARCHED:
                for entry in await share.listing(client, folders.pop(0)):
                    seen += 1
                    if entry["folder"]:
                        folders.append(entry["path"])
                        continue
                    name_hit = needle in posixpath.basename(entry["path"]).lower()
                    snippet = None
                    if not name_hit and (entry["size"] or 0) <= MAX_DOCUMENT_BYTES:
                        try:
                            document = await share.read(client, entry["path"])
                        except DocsError:
                            continue
                        if not document["exists"]:
                            continue  # deleted since the listing
                        text = document["content"]
                        at = text.lower().find(needle)
                        if at < 0:
                            continue
                        snippet = text[max(0, at - 60) : at + 60 + len(needle)]
                    found.append({"path": entry["path"], "etag": entry["etag"], "snippet": snippet})
                    if len(found) >= limit:
                        break
        return {"query": query, "documents": found, "searched": seen}

    @server.tool(
        description="Create or replace a text document. Pass expected_etag (from "
        "read_document) to replace only the revision you read.",
        annotations=WRITE,
    )
    async def write_document(
        path: str, content: str, expected_etag: str | None = None
    ) -> dict[str, Any]:
        target = _clean(path)
        if target == "/":
            raise DocsError("a document needs a name")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if expected_etag:
            headers["If-Match"] = expected_etag
        async with share.client() as client:
            response = await share.request(
                client, "PUT", target, content=content.encode(), headers=headers
            )
            if response.status_code == 409:
                raise DocsError(f"the folder of {target} does not exist: create_folder first")
            if response.status_code not in (200, 201, 204):
                raise DocsError(f"PUT {target} answered {response.status_code}")
            head = await share.request(client, "HEAD", target)
        return {
            "evidence": {
                "url": share.url(target),
                "path": target,
                "revision": head.headers.get("etag"),
                "created": response.status_code == 201,
                "bytes": len(content.encode()),
            }
        }

    @server.tool(description="Create a folder.", annotations=WRITE)
    async def create_folder(path: str) -> dict[str, Any]:
        target = _clean(path)
        async with share.client() as client:
            response = await share.request(client, "MKCOL", target)
        if response.status_code == 405:
            return {"evidence": {"url": share.url(target), "path": target, "created": False}}
        if response.status_code != 201:
            raise DocsError(f"MKCOL {target} answered {response.status_code}")
        return {"evidence": {"url": share.url(target), "path": target, "created": True}}

    return server
