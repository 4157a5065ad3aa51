"""A real emulator on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from emulator.app import create_app
from emulator.face.engine import FaceEngine
from emulator.launcher import free_port
from emulator.runtime import Runtime
from emulator.settings import Settings
from emulator.store.records import ClientId, SpaceKey

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


class EmulatorServer:
    """Starts ``create_app`` under uvicorn; ``stop()`` shuts it down."""

    def __init__(self, data_dir: Path, engine: FaceEngine | None = None, **overrides: Any) -> None:
        self.port = free_port()
        self.settings = Settings.from_sources({}, {"data_dir": data_dir, "port": self.port, **overrides})
        self.app = create_app(self.settings, engine=engine)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=120)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def start(self, wait_ready: bool = True) -> EmulatorServer:
        """Start serving; with ``wait_ready``, also wait for the background warm-up (store open, models warm)."""
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("emulator did not start")
            time.sleep(0.02)
        if wait_ready and not self.runtime.ready.wait(timeout=max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"emulator did not become ready: {self.runtime.startup_error or 'timeout'}")
        return self

    def stop(self) -> None:
        self.http.close()
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def stored_faces(self, space: int, client: str = "default") -> int:
        """How many faces the store holds in a space (read from the store, whichever backend)."""
        return len(self.runtime.store.load_space(SpaceKey(ClientId(client), space)).face_ids)

    def configure(self, **changes: Any) -> None:
        """Change settings of the running server (as the admin API does)."""
        self.runtime.settings = self.runtime.settings.replace(**changes)

    # --- the persons API ---------------------------------------------------------------

    def call(
        self,
        method: str,
        meta: Mapping[str, Any] | str | None,
        files: Iterable[tuple[str, bytes]] = (),
        token: str = "test-token",
        provider: str = "mcs",
    ) -> httpx.Response:
        parts: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
            (name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files
        ]
        if meta is not None:
            text = meta if isinstance(meta, str) else json.dumps(meta)
            parts.append(("meta", (None, text, "text/plain")))
        if not parts:  # httpx needs one part to send multipart
            parts.append(("", (None, "fake content", "text/plain")))
        return self.http.post(
            f"/api/v1/persons/{method}", params={"oauth_token": token, "oauth_provider": provider}, files=parts
        )

    def ok(self, method: str, meta: Mapping[str, Any], files: Iterable[tuple[str, bytes]] = (), **kw: Any) -> Any:
        response = self.call(method, meta, files, **kw)
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["status"] == 200, payload
        return payload["body"]

    def set(self, space: int, person_id: int, photo: str, **kw: Any) -> dict[str, Any]:
        body = self.ok(
            "set",
            {"space": str(space), "images": [{"name": "f", "person_id": person_id}]},
            [("f", fixture(photo))],
            **kw,
        )
        obj: dict[str, Any] = body["objects"][0]
        return obj

    def recognize(self, space: int, photo: str, token: str = "test-token", **meta: Any) -> dict[str, Any]:
        body = self.ok(
            "recognize", {"space": str(space), "images": [{"name": "f"}], **meta}, [("f", fixture(photo))], token=token
        )
        obj: dict[str, Any] = body["objects"][0]
        return obj

    def tags(self, space: int, photo: str, **meta: Any) -> list[str]:
        return [p["tag"] for p in self.recognize(space, photo, **meta).get("persons", [])]
