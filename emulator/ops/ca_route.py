"""``GET /emulator/ca.pem``: the emulator's CA certificate, for clients to trust (see :mod:`emulator.ops.tls`).

Open to anyone who reaches the port, whatever ``SMARTY_ADMIN`` says, as health is: a CA certificate is public by
nature, and a client container needs it before it can call anything. Only the certificate is served, never the key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from emulator.ops.tls import TlsError
from emulator.runtime import Runtime
from emulator.store.records import StoreError

CA_PATH = "/emulator/ca.pem"


def build_ca_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get(CA_PATH)
    async def ca_pem() -> Response:
        try:
            pem = await run_in_threadpool(runtime.tls.ca_pem, runtime.store)  # off the loop: maybe a database read
        except (StoreError, TlsError) as exc:  # PostgreSQL not reachable (yet), the record unreadable or corrupt
            return PlainTextResponse(f"the CA cannot be read now: {exc}\n", status_code=503)
        return Response(pem, media_type="application/x-pem-file")

    return router
